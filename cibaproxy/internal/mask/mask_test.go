package mask

import (
	"strings"
	"testing"
)

// The masking of the addresses in logs and errors.

func TestMaskEmail(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"alice@example.com", "a***@e***.com"},
		{"Alice@Example.co.uk", "A***@E***.uk"},
		{"élodie@exämple.fr", "é***@e***.fr"},
		{"bob@localhost", "b***@l***"},
		{"@example.com", "@e***.com"},
		{"not-an-address", "***"},
	} {
		if got := Email(tc.in); got != tc.want {
			t.Errorf("Email(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMaskAddresses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"550 5.1.1 <alice@example.com>: mailbox unavailable, affected recipient(s): Alice@Example.com",
			"550 5.1.1 <a***@e***.com>: mailbox unavailable, affected recipient(s): A***@E***.com"},
		{`from "Bob" <bob@example.org>; to carol.x+tag@sub.example.net`,
			`from "Bob" <b***@e***.org>; to c***@s***.net`},
		{"dial tcp 127.0.0.1:25: connect: connection refused", "dial tcp 127.0.0.1:25: connect: connection refused"},
	} {
		got := Addresses(tc.in)
		if got != tc.want {
			t.Errorf("Addresses(%q)\n = %q\nwant %q", tc.in, got, tc.want)
		}
		if strings.Contains(strings.ToLower(got), "alice@") || strings.Contains(got, "bob@") {
			t.Errorf("an address survived: %q", got)
		}
	}
}

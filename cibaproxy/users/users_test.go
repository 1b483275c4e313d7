package users

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

func TestParseUsers(t *testing.T) {
	const anyError = "\x00any error"
	tests := []struct {
		name    string
		json    string
		wantErr string       // substring of the error (or anyError); "" means success
		want    []store.User // looked up by username, in order
	}{
		{name: "full entry",
			json: `{"users":[{"username":"alice","email":"alice@example.com","subject":"u-123","name":"Alice Example"}]}`,
			want: []store.User{{Username: "alice", Email: "alice@example.com", Subject: "u-123", Name: "Alice Example"}}},
		{name: "subject defaults to username, name optional",
			json: `{"users":[{"username":"bob","email":"bob@example.com"}]}`,
			want: []store.User{{Username: "bob", Email: "bob@example.com", Subject: "bob"}}},
		{name: "several users",
			json: `{"users":[{"username":"alice","email":"alice@example.com"},{"username":"bob","email":"bob@example.org","subject":"b"}]}`,
			want: []store.User{{Username: "alice", Email: "alice@example.com", Subject: "alice"},
				{Username: "bob", Email: "bob@example.org", Subject: "b"}}},
		{name: "username equal to own email",
			json: `{"users":[{"username":"carol@example.com","email":"carol@example.com"}]}`,
			want: []store.User{{Username: "carol@example.com", Email: "carol@example.com", Subject: "carol@example.com"}}},
		{name: "no users", json: `{"users":[]}`},
		{name: "empty document", json: `{}`},

		{name: "duplicate username", wantErr: "already used",
			json: `{"users":[{"username":"alice","email":"a1@example.com"},{"username":"alice","email":"a2@example.com"}]}`},
		{name: "duplicate username in other case", wantErr: "already used",
			json: `{"users":[{"username":"alice","email":"a1@example.com"},{"username":"ALICE","email":"a2@example.com"}]}`},
		{name: "duplicate email in other case", wantErr: "already used",
			json: `{"users":[{"username":"a1","email":"alice@example.com"},{"username":"a2","email":"Alice@Example.COM"}]}`},
		{name: "shared subject", wantErr: "already the subject",
			json: `{"users":[{"username":"a1","email":"a1@example.com","subject":"u1"},{"username":"a2","email":"a2@example.com","subject":"u1"}]}`},
		{name: "subject is another user's default subject", wantErr: "already the subject",
			json: `{"users":[{"username":"alice","email":"a1@example.com"},{"username":"mallory","email":"m@example.com","subject":"alice"}]}`},
		{name: "username is another user's email", wantErr: "already used",
			json: `{"users":[{"username":"alice","email":"shared@example.com"},{"username":"shared@example.com","email":"other@example.com"}]}`},
		{name: "email is another user's username", wantErr: "already used",
			json: `{"users":[{"username":"bob@example.com","email":"b@example.com"},{"username":"alice","email":"BOB@example.com"}]}`},
		{name: "unknown field", wantErr: "unknown field",
			json: `{"users":[{"username":"alice","email":"alice@example.com","role":"admin"}]}`},
		{name: "unknown top-level field", wantErr: "unknown field",
			json: `{"users":[],"groups":[]}`},
		{name: "missing email", wantErr: "email is required",
			json: `{"users":[{"username":"alice"}]}`},
		{name: "empty email", wantErr: "email is required",
			json: `{"users":[{"username":"alice","email":""}]}`},
		{name: "display-name address", wantErr: "not a plain address",
			json: `{"users":[{"username":"alice","email":"Alice <alice@example.com>"}]}`},
		{name: "angle address", wantErr: "not a plain address",
			json: `{"users":[{"username":"alice","email":"<alice@example.com>"}]}`},
		{name: "not an address", wantErr: "not a plain address",
			json: `{"users":[{"username":"alice","email":"alice"}]}`},
		{name: "address with spaces", wantErr: "not a plain address",
			json: `{"users":[{"username":"alice","email":" alice@example.com"}]}`},
		{name: "two addresses", wantErr: "not a plain address",
			json: `{"users":[{"username":"alice","email":"a@example.com, b@example.com"}]}`},
		{name: "missing username", wantErr: "username is required",
			json: `{"users":[{"email":"alice@example.com"}]}`},
		{name: "null user", wantErr: "username is required",
			json: `{"users":[null]}`},
		{name: "username with surrounding space", wantErr: "whitespace",
			json: `{"users":[{"username":" alice","email":"alice@example.com"}]}`},
		{name: "username with newline", wantErr: "whitespace",
			json: `{"users":[{"username":"al\nice","email":"alice@example.com"}]}`},
		{name: "not JSON", wantErr: "decoding", json: `users: [alice]`},
		// A second document or trailing bytes would be dropped silently,
		// and with them users the operator listed.
		{name: "second document", wantErr: anyError,
			json: `{"users":[]} {"users":[{"username":"alice","email":"alice@example.com"}]}`},
		{name: "trailing garbage", wantErr: anyError,
			json: `{"users":[{"username":"alice","email":"alice@example.com"}]} ]`},
		{name: "wrong type", wantErr: "decoding", json: `{"users":{"alice":"alice@example.com"}}`},

		{name: "user_code_hash",
			json: `{"users":[{"username":"alice","email":"alice@example.com","user_code_hash":"` + usersCodeHash4711 + `"}]}`,
			want: []store.User{{Username: "alice", Email: "alice@example.com", Subject: "alice", UserCodeHash: usersCodeHash4711}}},
		{name: "plain user_code", wantErr: "must not be stored in plain text",
			json: `{"users":[{"username":"alice","email":"alice@example.com","user_code":"4711"}]}`},
		{name: "plain user_code beside its hash", wantErr: "must not be stored in plain text",
			json: `{"users":[{"username":"alice","email":"alice@example.com","user_code":"4711","user_code_hash":"` + usersCodeHash4711 + `"}]}`},
		{name: "user_code_hash not bcrypt", wantErr: "not a bcrypt hash",
			json: `{"users":[{"username":"alice","email":"alice@example.com","user_code_hash":"4711"}]}`},
		{name: "user_code_hash sha256", wantErr: "not a bcrypt hash",
			json: `{"users":[{"username":"alice","email":"alice@example.com","user_code_hash":"` + strings.Repeat("ab", 32) + `"}]}`},
		{name: "user_code_hash truncated", wantErr: "not a valid bcrypt hash",
			json: `{"users":[{"username":"alice","email":"alice@example.com","user_code_hash":"` + usersCodeHash4711[:50] + `"}]}`},
		{name: "user_code_hash with a bad cost", wantErr: "not a valid bcrypt hash",
			json: `{"users":[{"username":"alice","email":"alice@example.com","user_code_hash":"$2a$99` + usersCodeHash4711[6:] + `"}]}`},
		{name: "user_code_hash of too high a cost", wantErr: "cost 15 is above the cap of 12",
			json: `{"users":[{"username":"alice","email":"alice@example.com","user_code_hash":"$2a$15` + usersCodeHash4711[6:] + `"}]}`},
		{name: "user_code_hash of a cost just above the cap", wantErr: `user "bob": user_code_hash: bcrypt cost 13 is above the cap of 12`,
			json: `{"users":[{"username":"alice","email":"alice@example.com"},
				{"username":"bob","email":"bob@example.com","user_code_hash":"$2a$13` + usersCodeHash4711[6:] + `"}]}`},
		{name: "user_code_hash at the cap",
			json: `{"users":[{"username":"alice","email":"alice@example.com","user_code_hash":"$2a$12` + usersCodeHash4711[6:] + `"}]}`,
			want: []store.User{{Username: "alice", Email: "alice@example.com", Subject: "alice", UserCodeHash: "$2a$12" + usersCodeHash4711[6:]}}},
		{name: "user_code_hash of the wrong type", wantErr: "decoding",
			json: `{"users":[{"username":"alice","email":"alice@example.com","user_code_hash":4711}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseUsers([]byte(tc.json))
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseUsers succeeded, want an error containing %q", tc.wantErr)
				}
				if tc.wantErr != anyError && !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %q does not contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseUsers: %v", err)
			}
			if d.Len() != len(tc.want) {
				t.Errorf("Len = %d, want %d", d.Len(), len(tc.want))
			}
			for _, w := range tc.want {
				u, err := d.LookupHint(context.Background(), w.Username)
				if err != nil {
					t.Fatalf("LookupHint(%q): %v", w.Username, err)
				}
				if *u != w {
					t.Errorf("LookupHint(%q) = %+v, want %+v", w.Username, *u, w)
				}
			}
		})
	}
}

func TestLookupHint(t *testing.T) {
	d, err := ParseUsers([]byte(`{"users":[
		{"username":"alice","email":"alice@example.com","name":"Alice Example"},
		{"username":"Bob","email":"Bob.Smith@Example.org","subject":"b-1"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		hint        string
		wantSubject string // "" means store.ErrNotFound
	}{
		{hint: "alice", wantSubject: "alice"},
		{hint: "ALICE", wantSubject: "alice"},
		{hint: "alice@example.com", wantSubject: "alice"},
		{hint: "Alice@EXAMPLE.com", wantSubject: "alice"},
		{hint: "bob", wantSubject: "b-1"},
		{hint: "Bob", wantSubject: "b-1"},
		{hint: "bob.smith@example.org", wantSubject: "b-1"},
		{hint: "BOB.SMITH@EXAMPLE.ORG", wantSubject: "b-1"},
		{hint: "carol"},
		{hint: "carol@example.com"},
		{hint: ""},
		{hint: "alice@example"},
		{hint: "Alice Example"},
		{hint: "alic"},
		{hint: "alice@example.com.evil"},
	}
	for _, tc := range tests {
		t.Run(tc.hint, func(t *testing.T) {
			u, err := d.LookupHint(context.Background(), tc.hint)
			if tc.wantSubject == "" {
				if !errors.Is(err, store.ErrNotFound) || u != nil {
					t.Fatalf("LookupHint(%q) = %v, %v; want store.ErrNotFound", tc.hint, u, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LookupHint(%q): %v", tc.hint, err)
			}
			if u.Subject != tc.wantSubject {
				t.Errorf("LookupHint(%q).Subject = %q, want %q", tc.hint, u.Subject, tc.wantSubject)
			}
		})
	}

	t.Run("returns a copy", func(t *testing.T) {
		u, err := d.LookupHint(context.Background(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		u.Subject = "mallory"
		u2, _ := d.LookupHint(context.Background(), "alice@example.com")
		if u2.Subject != "alice" {
			t.Errorf("directory changed through a returned user: %q", u2.Subject)
		}
	})
}

// usersCodeHash4711 is the bcrypt hash (cost 4) of the user_code "4711".
const usersCodeHash4711 = "$2a$04$IhTyoEJGYJkpDRLSEzGCPurBcVnC786U.BmaLSBXuet.Vq2fxz5Ai"

func TestLookupSubjectAndEmail(t *testing.T) {
	d, err := ParseUsers([]byte(`{"users":[
		{"username":"alice","email":"alice@example.com"},
		{"username":"Bob","email":"Bob.Smith@Example.org","subject":"b-1"},
		{"username":"carol@example.net","email":"c@example.net","subject":"C-1"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tests := []struct {
		name   string
		lookup func(context.Context, string) (*store.User, error)
		arg    string
		want   string // username; "" means store.ErrNotFound
	}{
		{name: "subject defaulted from username", lookup: d.LookupSubject, arg: "alice", want: "alice"},
		{name: "subject", lookup: d.LookupSubject, arg: "b-1", want: "Bob"},
		{name: "subject is case-sensitive", lookup: d.LookupSubject, arg: "c-1"},
		{name: "subject exact", lookup: d.LookupSubject, arg: "C-1", want: "carol@example.net"},
		{name: "username is not a subject", lookup: d.LookupSubject, arg: "Bob"},
		{name: "email is not a subject", lookup: d.LookupSubject, arg: "alice@example.com"},
		{name: "empty subject", lookup: d.LookupSubject, arg: ""},
		{name: "email", lookup: d.LookupEmail, arg: "alice@example.com", want: "alice"},
		{name: "email in other case", lookup: d.LookupEmail, arg: "bob.smith@EXAMPLE.org", want: "Bob"},
		{name: "username is not an email", lookup: d.LookupEmail, arg: "alice"},
		{name: "address-like username is not an email", lookup: d.LookupEmail, arg: "carol@example.net"},
		{name: "own email of that user", lookup: d.LookupEmail, arg: "c@example.net", want: "carol@example.net"},
		{name: "empty email", lookup: d.LookupEmail, arg: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := tc.lookup(ctx, tc.arg)
			if tc.want == "" {
				if !errors.Is(err, store.ErrNotFound) || u != nil {
					t.Fatalf("got %v, %v; want store.ErrNotFound", u, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.Username != tc.want {
				t.Errorf("got user %q, want %q", u.Username, tc.want)
			}
			u.Email = "changed@example.com"
			if again, _ := tc.lookup(ctx, tc.arg); again == nil || again.Email == "changed@example.com" {
				t.Error("the directory changed through a returned user")
			}
		})
	}
}

func TestUserDisplayName(t *testing.T) {
	tests := []struct {
		name string
		u    store.User
		want string
	}{
		{name: "name", u: store.User{Username: "alice", Name: "Alice Example"}, want: "Alice Example"},
		{name: "username when no name", u: store.User{Username: "alice"}, want: "alice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.u.DisplayName(); got != tc.want {
				t.Errorf("DisplayName = %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("from users.json", func(t *testing.T) {
		d, err := ParseUsers([]byte(`{"users":[
			{"username":"alice","email":"alice@example.com","name":"Alice Example"},
			{"username":"bob","email":"bob@example.com"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		for hint, want := range map[string]string{"alice": "Alice Example", "bob@example.com": "bob"} {
			u, err := d.LookupHint(context.Background(), hint)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.DisplayName(); got != want {
				t.Errorf("DisplayName of %s = %q, want %q", hint, got, want)
			}
		}
	})
}

func TestLoadUsers(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "users.json")
	if err := os.WriteFile(good, []byte(`{"users":[{"username":"alice","email":"alice@example.com"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"users":[{"username":"alice"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		wantErr string
	}{
		{name: "good", path: good},
		{name: "invalid names the file", path: bad, wantErr: bad},
		{name: "missing", path: filepath.Join(dir, "absent.json"), wantErr: "reading users"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := LoadUsers(tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("LoadUsers error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Len() != 1 {
				t.Errorf("Len = %d", d.Len())
			}
		})
	}
}

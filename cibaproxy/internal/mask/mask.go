// Package mask hides mail addresses in logs and errors.
package mask

import (
	"regexp"
	"strings"
)

// Email shows a mail address only enough to tell addresses apart in an
// incident: a***@e***.com.
func Email(addr string) string {
	local, domain, ok := strings.Cut(addr, "@")
	if !ok {
		return "***"
	}
	maskPart := func(p string) string {
		if p == "" {
			return ""
		}
		r := []rune(p)
		return string(r[0]) + "***"
	}
	tld := ""
	if i := strings.LastIndexByte(domain, '.'); i >= 0 {
		tld = domain[i:]
		domain = domain[:i]
	}
	return maskPart(local) + "@" + maskPart(domain) + tld
}

var addressPattern = regexp.MustCompile(`[^\s<>"'(),;:@]+@[^\s<>"'(),;:]+`)

// Addresses replaces every mail address in s by its masked form.
func Addresses(s string) string {
	return addressPattern.ReplaceAllStringFunc(s, Email)
}

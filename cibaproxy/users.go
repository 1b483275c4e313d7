package cibaproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"strings"
)

// User is a person who can be asked to approve a request.
type User struct {
	// Username is the user's login name; a login_hint may name it.
	Username string `json:"username"`
	// Email is where the approval link is sent; a login_hint may name it.
	Email string `json:"email"`
	// Subject is the user's identifier in the subject token (sub); it
	// defaults to Username.
	Subject string `json:"subject,omitempty"`
	// Name is the display name; the username is used when it is empty.
	Name string `json:"name,omitempty"`
}

// DisplayName returns the name, or the username when there is none.
func (u *User) DisplayName() string {
	if u.Name != "" {
		return u.Name
	}
	return u.Username
}

// Directory resolves login hints to users. A file today; LDAP or an HTTP
// lookup could implement it as well.
type Directory interface {
	// LookupHint returns the user a login_hint names (a username or an
	// e-mail address, case-insensitively), or ErrNotFound.
	LookupHint(ctx context.Context, hint string) (*User, error)
}

// FileDirectory is a Directory read from a users.json file:
//
//	{"users":[{"username":"alice","email":"alice@example.com","subject":"alice","name":"Alice Example"}]}
type FileDirectory struct {
	byHint map[string]*User
	count  int
}

// LoadUsers reads and checks a users.json file.
func LoadUsers(path string) (*FileDirectory, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading users: %w", err)
	}
	d, err := ParseUsers(data)
	if err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	return d, nil
}

// ParseUsers parses the users.json format. Unknown fields, duplicate
// usernames, e-mail addresses or subjects, a username that is also someone's
// e-mail address, and invalid e-mail addresses are errors.
func ParseUsers(data []byte) (*FileDirectory, error) {
	var doc struct {
		Users []User `json:"users"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("decoding: unexpected data after the users object")
	}
	d := &FileDirectory{byHint: make(map[string]*User, 2*len(doc.Users))}
	subjects := make(map[string]string, len(doc.Users))
	for i := range doc.Users {
		u := doc.Users[i]
		if u.Username == "" {
			return nil, fmt.Errorf("user %d: username is required", i+1)
		}
		if strings.TrimSpace(u.Username) != u.Username || strings.ContainsAny(u.Username, "\r\n\t") {
			return nil, fmt.Errorf("user %q: username has surrounding or control whitespace", u.Username)
		}
		if u.Email == "" {
			return nil, fmt.Errorf("user %q: email is required", u.Username)
		}
		addr, err := mail.ParseAddress(u.Email)
		if err != nil || addr.Address != u.Email || addr.Name != "" {
			return nil, fmt.Errorf("user %q: email is not a plain address", u.Username)
		}
		if u.Subject == "" {
			u.Subject = u.Username
		}
		user := &u
		for _, hint := range []string{normalizeHint(u.Username), normalizeHint(u.Email)} {
			if other, dup := d.byHint[hint]; dup && other != user {
				return nil, fmt.Errorf("user %q: username or email %q is already used by user %q", u.Username, hint, other.Username)
			}
			d.byHint[hint] = user
		}
		if other, dup := subjects[u.Subject]; dup {
			return nil, fmt.Errorf("user %q: subject %q is already the subject of user %q", u.Username, u.Subject, other)
		}
		subjects[u.Subject] = u.Username
		d.count++
	}
	return d, nil
}

// Len returns the number of users.
func (d *FileDirectory) Len() int { return d.count }

// LookupHint implements Directory.
func (d *FileDirectory) LookupHint(_ context.Context, hint string) (*User, error) {
	u, ok := d.byHint[normalizeHint(hint)]
	if !ok {
		return nil, ErrNotFound
	}
	c := *u
	return &c, nil
}

func normalizeHint(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

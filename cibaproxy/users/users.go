// Package users resolves login hints to users: the Directory interface,
// its users.json implementation, and the users' user_code hashes.
package users

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

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"golang.org/x/crypto/bcrypt"
)

// Directory resolves hints to users. A file today; LDAP or an HTTP lookup
// could implement it as well. Each method returns a copy the caller may
// change, or store.ErrNotFound.
type Directory interface {
	// LookupHint returns the user a login_hint names (a username or an
	// e-mail address, case-insensitively).
	LookupHint(ctx context.Context, hint string) (*store.User, error)
	// LookupSubject returns the user whose subject is sub, exactly (the
	// sub of an id_token_hint or login_hint_token).
	LookupSubject(ctx context.Context, sub string) (*store.User, error)
	// LookupEmail returns the user whose e-mail address is email,
	// case-insensitively; usernames are not matched (the email claim of an
	// id_token_hint or login_hint_token).
	LookupEmail(ctx context.Context, email string) (*store.User, error)
}

// FileDirectory is a Directory read from a users.json file:
//
//	{"users":[{"username":"alice","email":"alice@example.com","subject":"alice","name":"Alice Example",
//	           "user_code_hash":"$2a$10$..."}]}
//
// user_code_hash, optional, is the bcrypt hash of the user's user_code, as
// `cibaproxy ciba hash-user-code` prints it; the code itself is never
// written in the file.
type FileDirectory struct {
	byHint    map[string]*store.User
	bySubject map[string]*store.User
	byEmail   map[string]*store.User
	count     int
	codeCost  int // highest bcrypt cost of the user_code hashes; 0: none
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

// fileUser is one entry of users.json.
type fileUser struct {
	store.User
	UserCodeHash string `json:"user_code_hash"`
	// UserCode is only read to refuse it: the file keeps hashes only.
	UserCode *string `json:"user_code"`
}

// ParseUsers parses the users.json format. Unknown fields, duplicate
// usernames, e-mail addresses or subjects, a username that is also someone's
// e-mail address, invalid e-mail addresses, a plain user_code and a
// user_code_hash that is not a bcrypt hash are errors.
func ParseUsers(data []byte) (*FileDirectory, error) {
	var doc struct {
		Users []*fileUser `json:"users"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("decoding: unexpected data after the users object")
	}
	d := &FileDirectory{
		byHint:    make(map[string]*store.User, 2*len(doc.Users)),
		bySubject: make(map[string]*store.User, len(doc.Users)),
		byEmail:   make(map[string]*store.User, len(doc.Users)),
	}
	for i, fu := range doc.Users {
		if fu == nil {
			return nil, fmt.Errorf("user %d: username is required", i+1)
		}
		u := fu.User
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
		if fu.UserCode != nil {
			return nil, fmt.Errorf("user %q: user_code must not be stored in plain text; store its bcrypt hash as user_code_hash (cibaproxy ciba hash-user-code prints it)", u.Username)
		}
		if fu.UserCodeHash != "" {
			cost, err := userCodeHashCost(fu.UserCodeHash)
			if err != nil {
				return nil, fmt.Errorf("user %q: user_code_hash: %w", u.Username, err)
			}
			d.codeCost = max(d.codeCost, cost)
			u.UserCodeHash = fu.UserCodeHash
		}
		user := &u
		for _, hint := range []string{NormalizeHint(u.Username), NormalizeHint(u.Email)} {
			if other, dup := d.byHint[hint]; dup && other != user {
				return nil, fmt.Errorf("user %q: username or email %q is already used by user %q", u.Username, hint, other.Username)
			}
			d.byHint[hint] = user
		}
		if other, dup := d.bySubject[u.Subject]; dup {
			return nil, fmt.Errorf("user %q: subject %q is already the subject of user %q", u.Username, u.Subject, other.Username)
		}
		d.bySubject[u.Subject] = user
		d.byEmail[NormalizeHint(u.Email)] = user
		d.count++
	}
	if d.codeCost > 0 {
		// Made now rather than by the first request for a user without a
		// code, which would take twice as long as the others.
		dummyUserCodeHash(d.codeCost)
	}
	return d, nil
}

// Len returns the number of users.
func (d *FileDirectory) Len() int { return d.count }

// LookupHint implements Directory.
func (d *FileDirectory) LookupHint(_ context.Context, hint string) (*store.User, error) {
	return found(d.byHint[NormalizeHint(hint)])
}

// LookupSubject implements Directory.
func (d *FileDirectory) LookupSubject(_ context.Context, sub string) (*store.User, error) {
	return found(d.bySubject[sub])
}

// LookupEmail implements Directory.
func (d *FileDirectory) LookupEmail(_ context.Context, email string) (*store.User, error) {
	return found(d.byEmail[NormalizeHint(email)])
}

// UserCodeCost returns the bcrypt cost of the users' user_code hashes (the
// highest, when they differ), or bcrypt.DefaultCost when nobody has one. A
// request for a user without a code is compared against a dummy hash of
// this cost, so the time taken does not tell who has a code, or exists.
func (d *FileDirectory) UserCodeCost() int {
	if d.codeCost == 0 {
		return bcrypt.DefaultCost
	}
	return d.codeCost
}

// found returns a copy of u, or ErrNotFound when u is nil.
func found(u *store.User) (*store.User, error) {
	if u == nil {
		return nil, store.ErrNotFound
	}
	c := *u
	return &c, nil
}

// userCodeHashCost checks a user_code_hash and returns its bcrypt cost.
func userCodeHashCost(hash string) (int, error) {
	if !strings.HasPrefix(hash, "$2a$") && !strings.HasPrefix(hash, "$2b$") && !strings.HasPrefix(hash, "$2y$") {
		return 0, errors.New("not a bcrypt hash (want $2a$, $2b$ or $2y$…, as cibaproxy ciba hash-user-code prints it)")
	}
	cost, err := bcrypt.Cost([]byte(hash))
	if err != nil {
		return 0, fmt.Errorf("not a valid bcrypt hash: %w", err)
	}
	if cost > MaxUserCodeCost {
		return 0, fmt.Errorf("bcrypt cost %d is above the cap of %d (every request that names the user pays for a comparison); hash the code again with cibaproxy ciba hash-user-code --cost %d or less", cost, MaxUserCodeCost, MaxUserCodeCost)
	}
	// The rest of the hash: 22 characters of salt and 31 of digest.
	if len(hash) != 60 {
		return 0, errors.New("not a valid bcrypt hash: want 60 characters")
	}
	return cost, nil
}

// NormalizeHint is the form in which hints are compared: trimmed and
// lower case.
func NormalizeHint(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

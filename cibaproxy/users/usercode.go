package users

import (
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// MaxUserCodeBytes is the longest user_code that can match: bcrypt reads no
// more than 72 bytes, and HashUserCode refuses longer codes.
const MaxUserCodeBytes = 72

// MaxUserCodeCost is the highest bcrypt cost of a user_code hash: every
// request of a client that requires user_code pays for one comparison, and
// each step doubles it (cost 14 takes about a second).
const MaxUserCodeCost = 14

// HashUserCode returns the bcrypt hash of a user_code for users.json
// (user_code_hash) at cost (bcrypt.DefaultCost when 0).
func HashUserCode(code string, cost int) (string, error) {
	if code == "" {
		return "", errors.New("the user code is empty")
	}
	if len(code) > MaxUserCodeBytes {
		return "", fmt.Errorf("the user code is longer than %d bytes", MaxUserCodeBytes)
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if cost < bcrypt.MinCost || cost > MaxUserCodeCost {
		return "", fmt.Errorf("cost %d must be between %d and %d", cost, bcrypt.MinCost, MaxUserCodeCost)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(code), cost)
	if err != nil {
		return "", err
	}
	return string(h), nil
}

// CodeCost returns the bcrypt cost of the user_code hashes of a directory
// that says it (FileDirectory.UserCodeCost), else bcrypt.DefaultCost.
func CodeCost(d Directory) int {
	if c, ok := d.(interface{ UserCodeCost() int }); ok {
		if n := c.UserCodeCost(); n >= bcrypt.MinCost && n <= MaxUserCodeCost {
			return n
		}
	}
	return bcrypt.DefaultCost
}

// MatchUserCode reports whether code is u's user_code. It compares with
// bcrypt, which takes the same time whatever the code; a user without a
// code is compared against a dummy hash of cost (the directory's), so the
// time taken does not tell whether the user has a code, or exists.
func MatchUserCode(u *store.User, code string, cost int) bool {
	if len(code) > MaxUserCodeBytes {
		return false // decided by the request alone, whoever the user is
	}
	hash := []byte(u.UserCodeHash)
	if len(hash) == 0 {
		hash = dummyUserCodeHash(cost)
	}
	return bcrypt.CompareHashAndPassword(hash, []byte(code)) == nil && u.UserCodeHash != ""
}

// dummyCodeHashes are the dummy user_code hashes by bcrypt cost (at most 11
// entries), of random codes nobody knows.
var dummyCodeHashes sync.Map // int → []byte

// dummyUserCodeHash returns the hash of a random code nobody knows, at
// cost, made once per cost.
func dummyUserCodeHash(cost int) []byte {
	if h, ok := dummyCodeHashes.Load(cost); ok {
		return h.([]byte)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(rand.Text()), cost)
	if err != nil {
		// Only an invalid cost fails, which CodeCost excludes.
		panic(fmt.Sprintf("users: dummy user_code hash: %v", err))
	}
	actual, _ := dummyCodeHashes.LoadOrStore(cost, h)
	return actual.([]byte)
}

package users

import (
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestDummyUserCodeHash: a user without a code is compared against a dummy
// hash of the directory's cost, made once per cost, so the time does not
// tell them apart.
func TestDummyUserCodeHash(t *testing.T) {
	d := dummyUserCodeHash(bcrypt.MinCost + 1)
	if c, err := bcrypt.Cost(d); err != nil || c != bcrypt.MinCost+1 {
		t.Errorf("dummy hash cost %d (%v), want %d", c, err, bcrypt.MinCost+1)
	}
	if again := dummyUserCodeHash(bcrypt.MinCost + 1); string(again) != string(d) {
		t.Error("the dummy hash is not kept")
	}
}

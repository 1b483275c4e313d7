package badgerstore

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// testPKCS8 returns a new signing key as the issuer stores it: PKCS#8.
func testPKCS8(t testing.TB) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// filesHold reports whether any file under dir holds needle.
func filesHold(t testing.TB, dir string, needle []byte) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		found = found || bytes.Contains(b, needle)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// writeSecret opens the store in dir with key (nil: unencrypted), stores
// secret as a setting and a request, and closes it.
func writeSecret(t *testing.T, dir string, key, secret []byte) {
	t.Helper()
	st, err := OpenEncrypted(dir, key, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := st.PutSetting(ctx, "signing_keys", secret); err != nil {
		t.Fatal(err)
	}
	r := testRequest(st.now())
	if err := st.Create(ctx, store.KeyOf("req-1"), r, nil, store.UserLimit{}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestEncryptedStore: a store opened with an encryption key holds its
// settings (a signing key, in PKCS#8) in no file in clear, as an
// unencrypted one does; it reopens with its key, with its data, and refuses
// to open with another key or none, saying so; an unencrypted store
// refuses a key.
func TestEncryptedStore(t *testing.T) {
	plain, sealed := t.TempDir(), t.TempDir()
	key, secret := cibatest.StoreKey(t), testPKCS8(t)
	writeSecret(t, plain, nil, secret)
	writeSecret(t, sealed, key, secret)
	if !filesHold(t, plain, secret) {
		t.Fatal("the unencrypted store's files do not hold the setting: the search finds nothing")
	}
	if filesHold(t, sealed, secret) {
		t.Error("the encrypted store's files hold the signing key in clear")
	}
	if filesHold(t, sealed, []byte("alice@example.com")) {
		t.Error("the encrypted store's files hold the request in clear")
	}

	st, err := OpenEncrypted(sealed, key, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if v, err := st.Setting(ctx, "signing_keys"); err != nil || !bytes.Equal(v, secret) {
		t.Errorf("the setting after a restart: %x %v", v, err)
	}
	if r, err := st.Get(ctx, store.KeyOf("req-1")); err != nil || r.User.Email != "alice@example.com" {
		t.Errorf("the request after a restart: %+v %v", r, err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name, dir string
		key       []byte
		want      string
	}{
		{"another key", sealed, cibatest.StoreKey(t), "the encryption key does not match the store"},
		{"no key", sealed, nil, "the store is encrypted: give its encryption key"},
		{"a key for an unencrypted store", plain, key, "the encryption key does not match the store"},
		{"a key of 20 bytes", t.TempDir(), key[:20], "encryption key: must be 16, 24 or 32 bytes"},
	} {
		st, err := OpenEncrypted(c.dir, c.key, nil, nil)
		if err == nil {
			_ = st.Close()
			t.Errorf("%s: opened", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
		if errors.Is(err, store.ErrClosed) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

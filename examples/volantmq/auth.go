package main

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/VolantMQ/vlapi/vlauth"
)

// authName is the name the provider is registered under with VolantMQ's auth package.
const authName = "s3persist-example"

// userAuth is the broker's auth provider. VolantMQ lets a connection without a user name
// in by itself when anonymous access is on; every other connection must match a user of
// the list. Every connected client may publish and subscribe to every topic: without a
// registered provider whose ACL allows it, VolantMQ refuses every SUBSCRIBE (0x80).
type userAuth struct {
	users map[string][sha256.Size]byte // user name -> SHA-256 of the password
}

var _ vlauth.IFace = (*userAuth)(nil)

// Password allows a user of the list with the right password.
func (a *userAuth) Password(_, user, password string) error {
	want, ok := a.users[user]
	got := sha256.Sum256([]byte(password))
	if ok && subtle.ConstantTimeCompare(want[:], got[:]) == 1 {
		return vlauth.StatusAllow
	}
	return vlauth.StatusDeny
}

// ACL allows everything to a connected client.
func (a *userAuth) ACL(_, _, _ string, _ vlauth.AccessType) error { return vlauth.StatusAllow }

// Shutdown has nothing to release.
func (a *userAuth) Shutdown() error { return nil }

// loadUsers reads a users file: one "user:password" per line; blank lines and lines
// starting with # are skipped. The password is everything after the first colon.
func loadUsers(path string) (*userAuth, error) {
	a := &userAuth{users: map[string][sha256.Size]byte{}}
	if path == "" {
		return a, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-users: %w", err)
	}
	defer f.Close()
	if err := a.read(f, path); err != nil {
		return nil, err
	}
	if len(a.users) == 0 {
		return nil, fmt.Errorf("-users %s: no users in the file", path)
	}
	return a, nil
}

func (a *userAuth) read(r io.Reader, name string) error {
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, password, ok := strings.Cut(line, ":")
		if !ok || user == "" || password == "" {
			return fmt.Errorf("-users %s:%d: want user:password", name, n)
		}
		if _, dup := a.users[user]; dup {
			return fmt.Errorf("-users %s:%d: user %q listed twice", name, n, user)
		}
		a.users[user] = sha256.Sum256([]byte(password))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("-users %s: %w", name, err)
	}
	return nil
}

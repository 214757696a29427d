package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlauth"

	"github.com/s3persist/s3persist"
)

func noEnv(string) string { return "" }

func TestParseFlagsDefaults(t *testing.T) {
	c, err := parseFlags(nil, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:1883" || c.Data != "./data" || c.Store != storeS3persist || c.Durability != s3persist.Async ||
		c.Prefix != "volantmq/" || c.Bucket != "volantmq" || !c.OfflineQoS0 || !c.Anonymous || !c.embedded() ||
		c.ShutdownTimeout != 20*time.Second || c.WhenBehind != s3persist.FailAtOnce {
		t.Fatalf("defaults: %+v", c)
	}
	if c, err := parseFlags([]string{"-when-store-is-behind", "wait"}, noEnv, io.Discard); err != nil || c.WhenBehind != s3persist.WaitForRoom {
		t.Fatalf("-when-store-is-behind wait: %+v, %v", c, err)
	}
	if _, err := parseFlags([]string{"-when-store-is-behind", "drop"}, noEnv, io.Discard); err == nil || !strings.Contains(err.Error(), "want fail or wait") {
		t.Fatalf("-when-store-is-behind drop: %v, want an error naming the choices", err)
	}
}

func TestParseFlagsS3SettingsFromFlagsAndEnvironment(t *testing.T) {
	env := map[string]string{envEndpoint: "http://127.0.0.1:9000", envBucket: "b", envRegion: "eu-west-1"}
	c, err := parseFlags([]string{"-durability", "sync"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.embedded() || c.Endpoint != "127.0.0.1:9000" || c.Secure || c.Bucket != "b" || c.Region != "eu-west-1" || c.Durability != s3persist.Sync {
		t.Fatalf("from the environment: %+v", c)
	}
	c, err = parseFlags([]string{"-s3-endpoint", "s3.example.com", "-s3-bucket", "x"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Endpoint != "s3.example.com" || !c.Secure || c.Bucket != "x" {
		t.Fatalf("flags over the environment, https without a scheme: %+v", c)
	}
}

func TestParseFlagsRejectsBadInputWithTheFlagName(t *testing.T) {
	for _, args := range [][]string{
		{"-listen", "nope"},
		{"-store", "redis"},
		{"-durability", "eventually"},
		{"-prefix", "no-slash"},
		{"-s3-endpoint", "ftp://host"},
		{"-s3-endpoint", "http://host/path"},
		{"-s3-bucket", ""},
		{"-shutdown-timeout", "0s"},
		{"-log-level", "loud"},
		{"-anonymous=false"},
		{"-flush-interval", "-1s"},
		{"stray"},
	} {
		_, err := parseFlags(args, noEnv, io.Discard)
		if err == nil {
			t.Errorf("%q: no error", args)
			continue
		}
		if name := strings.TrimPrefix(strings.SplitN(args[0], "=", 2)[0], "-"); args[0] != "stray" && !strings.Contains(err.Error(), name) {
			t.Errorf("%q: error %q does not name the flag", args, err)
		}
	}
	if _, err := parseFlags([]string{"-h"}, noEnv, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}

func TestUsersFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte("# demo users\nalice:s3cret:with:colons\n\nbob:pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := loadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, password string
		allow          bool
	}{
		{"alice", "s3cret:with:colons", true},
		{"bob", "pw", true},
		{"bob", "PW", false},
		{"carol", "pw", false},
		{"", "", false},
	} {
		if got := a.Password("id", c.user, c.password) == vlauth.StatusAllow; got != c.allow {
			t.Errorf("Password(%q, %q): allowed %v, want %v", c.user, c.password, got, c.allow)
		}
	}
	for _, bad := range []string{"nocolon\n", ":pw\n", "u:\n", "u:a\nu:b\n", "# only a comment\n"} {
		p := filepath.Join(t.TempDir(), "bad")
		if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadUsers(p); err == nil {
			t.Errorf("users file %q: no error", bad)
		}
	}
	if _, err := loadUsers(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing users file: no error")
	}
}

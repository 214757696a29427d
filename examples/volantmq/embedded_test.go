package main

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/s3store"
	"github.com/s3persist/s3persist/s3store/storetest"
)

// newEmbedded starts an embedded S3 server on a new data directory, closed at the end.
func newEmbedded(t *testing.T, dir string) *embeddedS3 {
	t.Helper()
	e, err := startEmbedded(dir, "volantmq", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return e
}

// The embedded server, reached through minio-go as the broker reaches it, passes the
// object-store conformance suite: conditional puts (If-None-Match, If-Match, under
// concurrency), listing order and pagination, multi-object delete, awkward keys.
func TestEmbeddedStoreConformance(t *testing.T) {
	e := newEmbedded(t, t.TempDir())
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) s3store.Store {
		// One prefix per case: the cases expect an empty store.
		st, err := s3store.NewMinio(context.Background(), e.minioConfig("volantmq"))
		if err != nil {
			t.Fatal(err)
		}
		p, err := s3store.WithPrefix(st, fmt.Sprintf("case-%04d/", n.Add(1)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		return p
	}, storetest.PrefixLen(len("case-0000/")),
		storetest.Skip("empty_object_round_trips",
			"gofakes3 answers MissingContentLength to a PUT of 0 bytes; every s3persist object is a non-empty CBOR record"),
		storetest.Skip("create_only_put_fails_when_object_exists_and_changes_nothing",
			"its last create-only put has 0 bytes and gets gofakes3's MissingContentLength (above); its non-empty create-only puts over the object got ErrPreconditionFailed before that"),
		storetest.Skip("weird_but_valid_keys_round_trip",
			"gofakes3 lists keys with control characters garbled (XML 1.0 cannot carry them); s3persist keys are [0-9a-z_~/-] plus the -prefix"))
}

// A second broker on the same data directory fails at once with a clear error instead of
// waiting for bbolt's file lock forever.
func TestEmbeddedStoreRefusesASecondUser(t *testing.T) {
	dir := t.TempDir()
	newEmbedded(t, dir)
	_, err := startEmbedded(dir, "volantmq", 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "another broker") {
		t.Fatalf("second start on %s: %v, want an error naming another broker", dir, err)
	}
}

// State stored through s3persist on the embedded server is there after it restarts on
// the same directory: what the README's first command relies on.
func TestEmbeddedStoreKeepsStateAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	open := func(e *embeddedS3) *s3persist.Persistence {
		p, err := s3persist.New(context.Background(), s3persist.Config{S3: e.minioConfig("volantmq"), Prefix: "volantmq/"})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	e1, err := startEmbedded(dir, "volantmq", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p := open(e1)
	ss, _ := p.Sessions()
	id := []byte("client-1")
	if err := ss.Create(id, &vlpersistence.SessionBase{Timestamp: "2026-01-01T00:00:00Z", Version: 4}); err != nil {
		t.Fatal(err)
	}
	if err := ss.PacketStoreQoS12(id, &vlpersistence.PersistedPacket{Data: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := e1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	p = open(newEmbedded(t, dir))
	defer func() { _ = p.Shutdown() }()
	ss, _ = p.Sessions()
	var got []string
	if err := ss.PacketsForEachQoS12(id, nil, func(_ interface{}, pk *vlpersistence.PersistedPacket) (bool, error) {
		got = append(got, string(pk.Data))
		return false, nil
	}); err != nil {
		t.Fatal(err)
	}
	if !ss.Exists(id) || len(got) != 1 || got[0] != "hello" {
		t.Fatalf("after a restart: exists %v, packets %q; want the session and [hello]", ss.Exists(id), got)
	}
}

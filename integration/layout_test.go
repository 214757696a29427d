package integration

import (
	"context"
	"fmt"
	"testing"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/s3store"
)

// smallPages lists at most 3 objects a request, so that a few hundred objects take many
// listings continued after a marker: where MinIO's order can differ from byte order.
type smallPages struct{ s3store.Store }

func (s smallPages) List(ctx context.Context, prefix, startAfter string, _ int) (s3store.ListPage, error) {
	return s.Store.List(ctx, prefix, startAfter, 3)
}

// similarIDs are ids whose readable key segments extend one another with every byte
// class the encoding has: plain, escaped punctuation below '/', escaped upper case.
func similarIDs() [][]byte {
	var ids [][]byte
	parts := []string{"a", "-", ".", "0", "_", "A", " "}
	var grow func(prefix string, depth int)
	grow = func(prefix string, depth int) {
		if prefix != "" {
			ids = append(ids, []byte(prefix))
		}
		if depth == 3 {
			return
		}
		for _, p := range parts {
			grow(prefix+p, depth+1)
		}
	}
	grow("", 0)
	return ids // 7 + 49 + 343 = 399 ids
}

// Before the client segment was limited to bytes above '/', MinIO lost most of these
// sessions at start-up (see layout.go).
func TestLayoutListsCompletelyInSmallPagesOnMinio(t *testing.T) {
	tgt := srv.NewTarget(t)
	ctx := context.Background()
	m, err := s3store.NewMinio(ctx, minioConfig(tgt.Bucket))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	cfg := s3persist.Config{Store: smallPages{m}, Prefix: tgt.Prefix}
	p, err := s3persist.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := p.Sessions()
	ids := similarIDs()
	for i, id := range ids {
		if err := s.Create(id, &vlpersistence.SessionBase{Version: 4}); err != nil {
			t.Fatalf("Create(%q): %v", id, err)
		}
		if i%2 == 0 {
			if err := s.PacketStoreQoS12(id, &vlpersistence.PersistedPacket{Data: []byte(fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := p.Shutdown(); err != nil {
		t.Fatal(err)
	}
	p, err = s3persist.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown()
	s, _ = p.Sessions()
	if got := s.Count(); got != uint64(len(ids)) {
		t.Errorf("after a restart listing in pages of 3: Count() = %d, want %d", got, len(ids))
	}
	for i, id := range ids {
		if !s.Exists(id) {
			t.Errorf("session %q lost at start-up", id)
			continue
		}
		want := uint64(0)
		if i%2 == 0 {
			want = 1
		}
		if n, err := s.PacketCountQoS12(id); err != nil || n != want {
			t.Errorf("PacketCountQoS12(%q) = %d, %v; want %d", id, n, err, want)
		}
	}
}

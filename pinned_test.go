package s3persist

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/s3persist/s3persist/s3store"
)

// When checkpoints keep failing, the payloads only the journal holds stop growing at
// MaxPinnedBytes: a call that would pass it fails at once with ErrCheckpointsBehind
// (FailAtOnce), or waits for a checkpoint at most CallTimeout (WaitForRoom). Nothing
// accepted is lost, and calls succeed again once a checkpoint moves the payloads out.
func TestPinnedPayloadsStayUnderTheirBoundWhileCheckpointsFail(t *testing.T) {
	for _, mode := range []Backpressure{FailAtOnce, WaitForRoom} {
		t.Run(mode.String(), func(t *testing.T) { pinnedBound(t, mode) })
	}
}

func pinnedBound(t *testing.T, mode Backpressure) {
	const bound = 1 << 20
	mem := s3store.NewMemory()
	var refuse atomic.Bool
	refuse.Store(true)
	store := &hookStore{Store: mem, onPut: func(key string) error {
		if refuse.Load() && (strings.HasPrefix(key, packRoot) || strings.HasPrefix(key, clientsRoot) || strings.HasPrefix(key, deltaRoot)) {
			return errors.New("checkpoint objects refused")
		}
		return nil
	}}
	p, s := openOn(t, store, Config{CheckpointBytes: bound / 2, MaxPinnedBytes: bound, WhenStoreIsBehind: mode,
		CallTimeout: 200 * time.Millisecond, CheckpointInterval: time.Hour})
	t.Cleanup(func() { _ = p.Shutdown() })
	id := []byte("offline")
	if err := s.Create(id, nil); err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("x", 4000)
	stored := 0
	var err error
	for range 1000 { // 4 MB: far beyond the bound
		if err = s.PacketStoreQoS12(id, pkt(payload)); err != nil {
			break
		}
		stored++
		if got := p.Stats().PinnedBytes; got > bound {
			t.Fatalf("pinned %d bytes, above the bound %d", got, bound)
		}
	}
	if !errors.Is(err, ErrCheckpointsBehind) {
		t.Fatalf("after %d packets: %v, want an error wrapping ErrCheckpointsBehind", stored, err)
	}
	if stored == 0 || stored > bound/4000 {
		t.Fatalf("%d packets of 4000 bytes accepted under a bound of %d", stored, bound)
	}
	if n, _ := s.PacketCountQoS12(id); n != uint64(stored) {
		t.Fatalf("%d packets queued, want the %d accepted", n, stored)
	}
	refuse.Store(false)
	if err := p.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := p.Stats().PinnedBytes; got != 0 {
		t.Fatalf("%d bytes pinned after a checkpoint", got)
	}
	if err := s.PacketStoreQoS12(id, pkt(payload)); err != nil {
		t.Fatalf("a store after the checkpoint: %v", err)
	}
	if n, _ := s.PacketCountQoS12(id); n != uint64(stored+1) {
		t.Fatalf("%d packets queued, want %d", n, stored+1)
	}
}

// A caller waiting for room (WaitForRoom) asks for a checkpoint and goes on as soon as
// it has moved the pinned payloads out.
func TestAStoreWaitingForPinnedRoomGoesOnAfterACheckpoint(t *testing.T) {
	const bound = 1 << 20
	gate := make(chan struct{})
	var batches atomic.Int32
	store := &hookStore{Store: s3store.NewMemory(), onPut: func(key string) error {
		if strings.HasPrefix(key, clientsRoot) { // a megabyte of one session: its own batch object
			batches.Add(1)
			<-gate // the checkpoint the waiting call asked for holds here until released
		}
		return nil
	}}
	p, s := openOn(t, store, Config{CheckpointBytes: bound, MaxPinnedBytes: bound, WhenStoreIsBehind: WaitForRoom,
		CallTimeout: time.Minute, CheckpointInterval: time.Hour})
	t.Cleanup(func() { _ = p.Shutdown() })
	id := []byte("offline")
	if err := s.Create(id, nil); err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("x", 4000)
	for p.Stats().PinnedBytes+4048 <= bound { // below CheckpointBytes: no checkpoint yet
		if err := s.PacketStoreQoS12(id, pkt(payload)); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.PacketStoreQoS12(id, pkt(payload)) }()
	if !eventually(func() bool { return batches.Load() > 0 }) {
		t.Fatal("the waiting store asked for no checkpoint")
	}
	select {
	case err := <-done:
		t.Fatalf("a store beyond the bound returned before the checkpoint moved anything: %v", err)
	default:
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatalf("the waiting store after the checkpoint: %v", err)
	}
	if n, _ := s.PacketCountQoS12(id); n != uint64(bound/4048+1) {
		t.Fatalf("%d packets queued, want %d", n, bound/4048+1)
	}
}

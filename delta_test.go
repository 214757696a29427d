package s3persist

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/s3persist/s3persist/s3store"
)

// A delta whose put landed although its checkpoint failed (a lost acknowledgement) names
// a batch that the next delta names again, with fewer live packets and the removed ones
// listed. After the journal that removed them is deleted, recovery must keep each packet
// once and never bring back a removed one.
func TestADeltaThatLandedAfterAFailedCheckpointBringsNothingBack(t *testing.T) {
	f := newFixture(t, Config{})
	f.mustCreate("s")
	f.mustCreate("other")
	f.flush()
	f.checkpoint() // the index names both sessions: the next deltas carry only changes
	for _, d := range []string{"p1", "p2", "p3"} {
		f.mustStore("s", d)
	}
	f.mustStore("other", "o1")
	f.flush()
	restore := f.swapStore(func(s3 s3store.Store) s3store.Store {
		return &lostAckStore{Store: s3, rng: rand.New(rand.NewPCG(1, 1)), percent: 100, only: deltaRoot}
	})
	if err := f.p.Checkpoint(context.Background()); err == nil {
		t.Fatal("a checkpoint whose delta lost its acknowledgement reported no error")
	}
	restore()
	if n := len(f.keys(deltaRoot)); n != 2 {
		t.Fatalf("%d deltas, want 2: the first checkpoint's and the one whose acknowledgement was lost", n)
	}
	// p1 is removed from the batch that delta named. The next checkpoint names the batch
	// again and deletes the journal that holds the removal, but fails to delete the
	// landed delta (its garbage), and the process dies before another checkpoint.
	f.drain("s", f.s.PacketsForEachQoS12, func(d string) bool { return d != "p1" })
	f.flush()
	restore = f.swapStore(func(s s3store.Store) s3store.Store { return keepDeltas{s} })
	_ = f.p.Checkpoint(context.Background())
	restore()
	if k := f.keys(journalRoot); len(k) != 0 {
		t.Fatalf("journal left after the checkpoint: %v", k)
	}
	if n := len(f.keys(deltaRoot)); n != 3 {
		t.Fatalf("%d deltas, want 3: the landed one is still there", n)
	}
	f.crash()
	if got := f.drain("s", f.s.PacketsForEachQoS12, keepAll); strings.Join(got, ",") != "p2,p3" {
		t.Fatalf("queue after recovery: %v, want [p2 p3]", got)
	}
	if got := f.drain("other", f.s.PacketsForEachQoS12, keepAll); strings.Join(got, ",") != "o1" {
		t.Fatalf("queue of the other session after recovery: %v, want [o1]", got)
	}
}

// keepDeltas fails every deletion that includes an index delta.
type keepDeltas struct{ s3store.Store }

func (k keepDeltas) DeleteMany(ctx context.Context, keys []string) error {
	for _, key := range keys {
		if strings.HasPrefix(key, deltaRoot) {
			return &s3store.DeleteManyError{Remaining: keys, Total: len(keys), Err: s3store.ErrInjected}
		}
	}
	return k.Store.DeleteMany(ctx, keys)
}

package s3persist

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// ErrCheckpointsBehind is wrapped by the error of a call refused because MaxPinnedBytes
// of packet payloads wait for a checkpoint to move them out of the journal (checkpoints
// fail, or are slower than the traffic), and Config.WhenStoreIsBehind is FailAtOnce. The
// call changed nothing; everything accepted before it is kept.
var ErrCheckpointsBehind = errors.New("s3persist: checkpoints are behind: MaxPinnedBytes of packets wait for one")

// pinnedBudget counts the payload bytes that only the journal holds (pinned until a
// checkpoint moves them) and bounds those of live calls, which reserve their room before
// they take their session's lock. Replay at New adds without a bound: what the bucket
// holds is loaded whatever its size.
type pinnedBudget struct {
	used    atomic.Int64
	max     int64
	kick    func() // asks for a checkpoint: called when a call finds no room
	waiters atomic.Int32

	mu   sync.Mutex
	room chan struct{} // closed when bytes are released while someone waits; guarded by mu
}

// reserve takes n bytes of room. When the bound would be passed, it fails at once with
// ErrCheckpointsBehind, or with wait waits for room until ctx ends. A call larger than
// the whole bound is admitted when nothing else is pinned, so that it is never refused
// for good.
func (b *pinnedBudget) reserve(ctx context.Context, n int64, wait bool) error {
	for {
		cur := b.used.Load()
		if cur+n <= b.max || cur == 0 {
			if b.used.CompareAndSwap(cur, cur+n) {
				return nil
			}
			continue
		}
		b.kick()
		if !wait {
			return ErrCheckpointsBehind
		}
		b.mu.Lock()
		if b.room == nil {
			b.room = make(chan struct{})
		}
		room := b.room
		b.waiters.Add(1)
		b.mu.Unlock()
		if b.used.Load() != cur {
			b.waiters.Add(-1)
			continue // released (or taken) meanwhile: look again
		}
		select {
		case <-room:
			b.waiters.Add(-1)
		case <-ctx.Done():
			b.waiters.Add(-1)
			return errors.Join(ErrCheckpointsBehind, ctx.Err())
		}
	}
}

// add counts n more bytes (negative: fewer) and returns the new total; released room
// wakes the waiters.
func (b *pinnedBudget) add(n int64) int64 {
	total := b.used.Add(n)
	if n < 0 && b.waiters.Load() > 0 {
		b.mu.Lock()
		if b.room != nil {
			close(b.room)
			b.room = nil
		}
		b.mu.Unlock()
	}
	return total
}

// unpin releases n bytes of payloads that left the pinned memory.
func (p *Persistence) unpin(n int64) {
	if n != 0 {
		p.pinned.add(-n)
	}
}

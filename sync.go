package s3persist

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

const (
	epochBits   = 24
	counterBits = 64 - epochBits
	maxEpoch    = 1<<epochBits - 1
)

var errSequenceExhausted = errors.New("s3persist: sequence numbers of this boot epoch are exhausted; restart the process to take a new epoch")

// sequencer hands out the sequence numbers described in layout.go: the boot epoch in the
// high bits, a counter in the low bits. Safe for concurrent use.
type sequencer struct {
	next  atomic.Uint64
	limit uint64 // first number of the next epoch
}

func newSequencer(epoch uint64) *sequencer {
	s := &sequencer{limit: (epoch + 1) << counterBits}
	s.next.Store(epoch << counterBits)
	return s
}

// take reserves n consecutive numbers and returns the first.
func (s *sequencer) take(n uint64) (uint64, error) {
	end := s.next.Add(n)
	if end > s.limit || end < n {
		return 0, errSequenceExhausted
	}
	return end - n, nil
}

// epoch returns the boot epoch the numbers belong to.
func (s *sequencer) epoch() uint64 { return s.limit>>counterBits - 1 }

// first returns the first number of the epoch: every number of an earlier process is
// below it.
func (s *sequencer) first() uint64 { return (s.limit>>counterBits - 1) << counterBits }

// serialSync makes the newest version of one object durable with at most one upload in
// flight. Uploads of one key therefore never overtake each other (a slow PUT can never
// land after a newer PUT or a DELETE of the same key), and concurrent writers share an
// upload: a writer whose change is covered by an upload already done or by the next one
// does not upload again (group commit). No lock is held during the upload.
//
// Its fields are guarded by the owner's mutex, passed to await.
type serialSync struct {
	version  uint64        // bumped by every change to the object
	durable  uint64        // highest version known to be durable
	inFlight chan struct{} // non-nil while an upload runs; closed when it ends
}

// changed records a change to the object and returns the version that holds it.
func (s *serialSync) changed() uint64 {
	s.version++
	return s.version
}

func (s *serialSync) dirty() bool { return s.durable < s.version }

// await returns once version want is durable, uploading it if no upload is in flight.
// mu must be held on entry and is held on return; it is released while waiting and
// while uploading. snapshot runs with mu held, captures the object's current state and
// returns the upload to run without the lock. An upload's error is returned to the
// writer that ran it; writers waiting on it retry with their own upload.
func (s *serialSync) await(ctx context.Context, mu *sync.Mutex, want uint64, snapshot func() func(context.Context) error) error {
	for s.durable < want {
		if ch := s.inFlight; ch != nil {
			mu.Unlock()
			select {
			case <-ch:
				mu.Lock()
				continue
			case <-ctx.Done():
				mu.Lock()
				return fmt.Errorf("s3persist: waiting for an upload in flight: %w", context.Cause(ctx))
			}
		}
		v := s.version
		upload := snapshot()
		ch := make(chan struct{})
		s.inFlight = ch
		mu.Unlock()
		err := upload(ctx)
		mu.Lock()
		s.inFlight = nil
		close(ch)
		if err != nil {
			return err
		}
		s.durable = max(s.durable, v)
	}
	return nil
}

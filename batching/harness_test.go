package batching_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/s3persist/s3persist/batching"
	"github.com/s3persist/s3persist/batching/batchingtest"
)

// hang bounds every wait of a test on the code under test. It only turns a bug that
// would hang the test into a failure; no test relies on it passing.
const hang = 10 * time.Second

var (
	errTransient = errors.New("transient upload error")
	errPermanent = errors.New("permanent upload error")
)

// retryable is a Config.Retryable that rejects errPermanent.
func retryable(err error) bool { return !errors.Is(err, errPermanent) }

// call is one upload attempt, blocked until the test replies.
type call struct {
	ctx   context.Context
	b     batching.Batch[string, string]
	reply chan error
}

func (c call) ok()            { c.reply <- nil }
func (c call) fail(err error) { c.reply <- err }

// harness is a Batcher of string items (size: their length) under string keys, whose
// uploads block until the test replies to them, on a manual clock.
type harness struct {
	t     *testing.T
	clock *batchingtest.Clock
	calls chan call
	b     *batching.Batcher[string, string]
}

// newHarness starts a Batcher with cfg. A zero cfg.Clock becomes a manual clock;
// FlushInterval defaults to an hour so that only the tests about it see it pass.
func newHarness(t *testing.T, cfg batching.Config) *harness {
	t.Helper()
	h := &harness{t: t, calls: make(chan call)}
	if cfg.Clock == nil {
		h.clock = batchingtest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		cfg.Clock = h.clock
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = time.Hour
	}
	b, err := batching.New(cfg, h.upload)
	if err != nil {
		t.Fatal(err)
	}
	h.b = b
	t.Cleanup(func() {
		// Give up on whatever the test left: uploads return once their context ends.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = b.Close(ctx)
	})
	return h
}

func (h *harness) upload(ctx context.Context, b batching.Batch[string, string]) error {
	c := call{ctx: ctx, b: b, reply: make(chan error, 1)}
	select {
	case h.calls <- c:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ctx returns a context that ends when the test does, or after hang.
func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(h.t.Context(), hang)
	h.t.Cleanup(cancel)
	return ctx
}

func (h *harness) add(key, item string, urgent bool) batching.Ticket {
	h.t.Helper()
	t, err := h.b.Add(h.ctx(), key, item, len(item), urgent)
	if err != nil {
		h.t.Fatalf("Add(%q, %q): %v", key, item, err)
	}
	return t
}

// next returns the next upload attempt.
func (h *harness) next() call {
	h.t.Helper()
	select {
	case c := <-h.calls:
		return c
	case <-time.After(hang):
		h.t.Fatal("no upload came")
		return call{}
	}
}

// nextByKey returns the next n upload attempts, which must be of n different keys.
func (h *harness) nextByKey(n int) map[string]call {
	h.t.Helper()
	m := make(map[string]call)
	for range n {
		c := h.next()
		if _, dup := m[c.b.Key]; dup {
			h.t.Fatalf("two uploads of key %q at once", c.b.Key)
		}
		m[c.b.Key] = c
	}
	return m
}

// expect checks that c uploads batch seq of key with these items.
func (h *harness) expect(c call, key string, seq uint64, items ...string) {
	h.t.Helper()
	bytes := 0
	for _, it := range items {
		bytes += len(it)
	}
	if c.b.Key != key || c.b.Seq != seq || !slices.Equal(c.b.Items, items) || c.b.Bytes != bytes {
		h.t.Fatalf("upload of key %q batch %d items %q (%d bytes); want key %q batch %d items %q (%d bytes)",
			c.b.Key, c.b.Seq, c.b.Items, c.b.Bytes, key, seq, items, bytes)
	}
}

// noCall checks that no upload attempt is waiting to be received now. It is used only
// where nothing could start one, so it cannot fail by timing.
func (h *harness) noCall() {
	h.t.Helper()
	select {
	case c := <-h.calls:
		h.t.Fatalf("unexpected upload of key %q batch %d items %q", c.b.Key, c.b.Seq, c.b.Items)
	default:
	}
}

// timer waits until a timer due within a minute is pending and returns how long until
// it fires. With the harness's FlushInterval of an hour, that is a retry backoff.
func (h *harness) timer() time.Duration {
	h.t.Helper()
	d, err := h.clock.WaitForTimer(h.ctx(), time.Minute)
	if err != nil {
		h.t.Fatalf("no timer: %v", err)
	}
	return d
}

func waitOK(t *testing.T, tk batching.Ticket) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), hang)
	defer cancel()
	if err := tk.Wait(ctx); err != nil {
		t.Fatalf("Ticket.Wait: %v", err)
	}
}

func waitErr(t *testing.T, tk batching.Ticket, target error, contains string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), hang)
	defer cancel()
	err := tk.Wait(ctx)
	if !errors.Is(err, target) || !strings.Contains(fmtErr(err), contains) {
		t.Fatalf("Ticket.Wait = %v; want an error wrapping %v and containing %q", err, target, contains)
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func isDone(tk batching.Ticket) bool {
	select {
	case <-tk.Done():
		return true
	default:
		return false
	}
}

// inBackground runs f in a goroutine and returns a channel that gets its result.
func inBackground(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func receive(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(hang):
		t.Fatal("no result came")
		return nil
	}
}

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// autoAdvance moves clock to each timer as soon as one is pending, so that backoffs
// and flush intervals pass, until the test ends.
func autoAdvance(t *testing.T, clock *batchingtest.Clock) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			d, err := clock.WaitForTimer(ctx, 1000*time.Hour)
			if err != nil {
				return
			}
			clock.Advance(d)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

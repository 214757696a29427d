package batching_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/s3persist/s3persist/batching"
	"github.com/s3persist/s3persist/batching/batchingtest"
)

func TestConfig(t *testing.T) {
	t.Run("the zero Config is valid", func(t *testing.T) {
		if err := (batching.Config{}).Validate(); err != nil {
			t.Fatal(err)
		}
	})
	bad := []struct {
		cfg   batching.Config
		field string
	}{
		{batching.Config{BatchSize: -1}, "BatchSize"},
		{batching.Config{BatchBytes: -1}, "BatchBytes"},
		{batching.Config{FlushInterval: -time.Second}, "FlushInterval"},
		{batching.Config{MaxPendingBytes: -1}, "MaxPendingBytes"},
		{batching.Config{MaxConcurrentUploads: -1}, "MaxConcurrentUploads"},
		{batching.Config{RetryBackoff: -time.Second}, "RetryBackoff"},
		{batching.Config{MaxRetryBackoff: -time.Second}, "MaxRetryBackoff"},
		{batching.Config{UploadTimeout: -time.Second}, "UploadTimeout"},
		{batching.Config{RetryBackoff: 10 * time.Second}, "RetryBackoff"}, // above the default MaxRetryBackoff
		{batching.Config{MaxPendingBytes: 1 << 20}, "MaxPendingBytes"},    // below the default BatchBytes
	}
	for _, c := range bad {
		t.Run("Validate names "+c.field, func(t *testing.T) {
			err := c.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), "Config."+c.field) {
				t.Fatalf("Validate(%+v) = %v; want an error naming Config.%s", c.cfg, err, c.field)
			}
			if _, err := batching.New(c.cfg, func(context.Context, batching.Batch[int, int]) error { return nil }); err == nil {
				t.Fatal("New accepted an invalid Config")
			}
		})
	}
	t.Run("New needs an upload function", func(t *testing.T) {
		if _, err := batching.New[int, int](batching.Config{}, nil); err == nil {
			t.Fatal("New accepted a nil upload")
		}
	})
}

func TestCut(t *testing.T) {
	t.Run("a batch is cut when it holds BatchSize items", func(t *testing.T) {
		h := newHarness(t, batching.Config{BatchSize: 3})
		t1, t2, t3 := h.add("a", "a1", false), h.add("a", "a2", false), h.add("a", "a3", false)
		c := h.next()
		h.expect(c, "a", 0, "a1", "a2", "a3")
		h.add("a", "a4", false)
		c.ok()
		for _, tk := range []batching.Ticket{t1, t2, t3} {
			waitOK(t, tk)
		}
		h.noCall() // a4 waits for its batch to fill or FlushInterval
	})

	t.Run("a batch is cut before an item would take it past BatchBytes, and when it reaches it", func(t *testing.T) {
		h := newHarness(t, batching.Config{BatchBytes: 10})
		h.add("a", "aaaa", false)
		h.add("a", "bbbb", false)
		h.add("a", "ccc", false) // 11 bytes with the others
		c := h.next()
		h.expect(c, "a", 0, "aaaa", "bbbb")
		c.ok()
		h.add("a", "ddddddd", false) // 10 bytes with ccc
		h.expect(h.next(), "a", 1, "ccc", "ddddddd")
	})

	t.Run("an item larger than BatchBytes is a batch on its own", func(t *testing.T) {
		h := newHarness(t, batching.Config{BatchBytes: 10})
		h.add("a", "ab", false)
		big := strings.Repeat("x", 15)
		tk := h.add("a", big, false)
		h.add("a", "cd", false)
		c := h.next()
		h.expect(c, "a", 0, "ab")
		c.ok()
		c = h.next()
		h.expect(c, "a", 1, big)
		c.ok()
		waitOK(t, tk)
		h.noCall() // cd waits
	})

	t.Run("pending items are cut FlushInterval after the first of them was added", func(t *testing.T) {
		h := newHarness(t, batching.Config{FlushInterval: 200 * time.Millisecond})
		h.add("a", "a1", false)
		if d := h.timer(); d != 200*time.Millisecond {
			t.Fatalf("the flush timer is due in %v; want 200ms", d)
		}
		h.clock.Advance(100 * time.Millisecond)
		h.add("a", "a2", false)
		h.clock.Advance(99 * time.Millisecond)
		h.noCall()
		h.clock.Advance(time.Millisecond)
		c := h.next()
		h.expect(c, "a", 0, "a1", "a2")
		c.ok()

		// The next batch counts from its own first item.
		h.add("a", "a3", false)
		if d := h.timer(); d != 200*time.Millisecond {
			t.Fatalf("the flush timer is due in %v; want 200ms", d)
		}
		h.clock.Advance(200 * time.Millisecond)
		h.expect(h.next(), "a", 1, "a3")
	})

	t.Run("while its key is busy, a batch due by FlushInterval stays open and is cut when the key is free", func(t *testing.T) {
		h := newHarness(t, batching.Config{FlushInterval: 100 * time.Millisecond, MaxConcurrentUploads: 2})
		h.add("a", "a1", true)
		c := h.next() // key a is busy until c is answered: an outage, say
		h.add("a", "b1", false)
		h.timer()
		h.clock.Advance(50 * time.Millisecond)
		h.add("z", "z1", false) // its deadline, 50ms after b1's, shows when b1's was handled
		h.clock.Advance(50 * time.Millisecond)
		if d := h.timer(); d != 50*time.Millisecond {
			t.Fatalf("next timer in %v; want z1's, in 50ms", d)
		}
		h.add("a", "b2", false) // joins b1: nothing of key a could upload yet
		h.clock.Advance(50 * time.Millisecond)
		cz := h.next()
		h.expect(cz, "z", 0, "z1")
		cz.ok()
		h.noCall()
		c.ok()
		c = h.next()
		h.expect(c, "a", 1, "b1", "b2")
		c.ok()
		h.noCall()
	})
}

func TestGroupCommit(t *testing.T) {
	t.Run("urgent items added while an upload of their key runs join the next batch, which starts when it ends", func(t *testing.T) {
		h := newHarness(t, batching.Config{})
		t0 := h.add("a", "x0", true)
		c0 := h.next() // at once: the key was idle, FlushInterval is an hour
		h.expect(c0, "a", 0, "x0")

		var tickets []batching.Ticket
		var items []string
		for i := 1; i <= 5; i++ {
			items = append(items, fmt.Sprintf("x%d", i))
			tickets = append(tickets, h.add("a", items[i-1], true))
		}
		h.noCall()
		if s := h.b.Stats(); s.InFlight != 1 || s.PendingItems != 6 {
			t.Fatalf("Stats = %+v; want InFlight 1, PendingItems 6", s)
		}
		for _, tk := range tickets {
			if isDone(tk) {
				t.Fatal("a Ticket is done before its batch was uploaded")
			}
		}

		c0.ok()
		c1 := h.next()
		h.expect(c1, "a", 1, items...)
		waitOK(t, t0)
		for _, tk := range tickets {
			if isDone(tk) {
				t.Fatal("a Ticket is done before its batch was uploaded")
			}
		}
		c1.ok()
		for _, tk := range tickets {
			waitOK(t, tk)
		}
	})

	t.Run("uploads of different keys run concurrently, at most MaxConcurrentUploads at once", func(t *testing.T) {
		h := newHarness(t, batching.Config{MaxConcurrentUploads: 2})
		h.add("a", "a1", true)
		h.add("b", "b1", true)
		h.add("c", "c1", true)
		first := h.nextByKey(2)
		if _, ok := first["c"]; ok {
			t.Fatalf("key c got a slot before a and b")
		}
		h.noCall()
		if s := h.b.Stats(); s.InFlight != 2 {
			t.Fatalf("Stats.InFlight = %d; want 2", s.InFlight)
		}
		first["a"].ok()
		c := h.next()
		h.expect(c, "c", 0, "c1")
		first["b"].ok()
		c.ok()
	})
}

func TestOrder(t *testing.T) {
	t.Run("batches of one key are uploaded in order, one at a time, under concurrency and retries", func(t *testing.T) {
		const (
			adders   = 6
			perAdder = 400
			maxUp    = 3
		)
		keys := []string{"k0", "k1", "k2", "k3", "k4"}
		clock := batchingtest.NewClock(time.Unix(0, 0))

		var (
			mu         sync.Mutex
			running    int
			runningKey = map[string]int{}
			attempts   = map[string]int{}
			got        = map[string][]string{}
			seqs       = map[string][]uint64{}
			problems   []string
		)
		upload := func(ctx context.Context, b batching.Batch[string, string]) error {
			id := fmt.Sprintf("%s/%d", b.Key, b.Seq)
			mu.Lock()
			running++
			runningKey[b.Key]++
			if runningKey[b.Key] > 1 {
				problems = append(problems, "two uploads of key "+b.Key+" at once")
			}
			if running > maxUp {
				problems = append(problems, fmt.Sprintf("%d uploads at once", running))
			}
			attempts[id]++
			n := attempts[id]
			mu.Unlock()

			runtime.Gosched()
			h := fnv.New32a()
			h.Write([]byte(id))
			fail := n <= 2 && h.Sum32()%3 == 0

			mu.Lock()
			defer mu.Unlock()
			running--
			runningKey[b.Key]--
			if fail {
				return errTransient
			}
			got[b.Key] = append(got[b.Key], b.Items...)
			seqs[b.Key] = append(seqs[b.Key], b.Seq)
			return nil
		}
		b, err := batching.New(batching.Config{
			BatchSize:            7,
			FlushInterval:        10 * time.Millisecond,
			MaxConcurrentUploads: maxUp,
			RetryBackoff:         time.Millisecond,
			MaxRetryBackoff:      4 * time.Millisecond,
			Clock:                clock,
		}, upload)
		if err != nil {
			t.Fatal(err)
		}
		autoAdvance(t, clock)

		var wg sync.WaitGroup
		for g := range adders {
			wg.Go(func() {
				for i := range perAdder {
					item := fmt.Sprintf("%d:%d", g, i)
					if _, err := b.Add(context.Background(), keys[(g+i)%len(keys)], item, len(item), i%13 == 0); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		ctx, cancel := context.WithTimeout(t.Context(), hang)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Fatal(err)
		}

		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			t.Error(p)
		}
		total := 0
		for _, key := range keys {
			for i, seq := range seqs[key] {
				if seq != uint64(i) {
					t.Fatalf("key %s: batches uploaded in order %v", key, seqs[key])
				}
			}
			last := map[int]int{}
			for _, item := range got[key] {
				g, i, _ := strings.Cut(item, ":")
				gi, _ := strconv.Atoi(g)
				ii, _ := strconv.Atoi(i)
				if prev, ok := last[gi]; ok && ii <= prev {
					t.Fatalf("key %s: item %s uploaded after %d:%d", key, item, gi, prev)
				}
				last[gi] = ii
			}
			total += len(got[key])
		}
		if total != adders*perAdder {
			t.Fatalf("%d items uploaded; want %d", total, adders*perAdder)
		}
		s := b.Stats()
		if s.Retries == 0 || s.Items != adders*perAdder || s.PendingItems != 0 || s.Failures != 0 {
			t.Fatalf("Stats = %+v; want retries, %d items, none pending or failed", s, adders*perAdder)
		}
	})
}

func TestRetry(t *testing.T) {
	t.Run("a failed upload is retried with growing, capped backoff, and its Tickets resolve once, on success", func(t *testing.T) {
		h := newHarness(t, batching.Config{RetryBackoff: 40 * time.Millisecond, MaxRetryBackoff: 100 * time.Millisecond})
		tk := h.add("a", "a1", true)
		var t2 batching.Ticket
		bounds := [][2]time.Duration{{20, 40}, {40, 80}, {50, 100}} // ms: the upper half of 40, 80, min(160, 100)
		for i, want := range bounds {
			c := h.next()
			h.expect(c, "a", 0, "a1")
			c.fail(errTransient)
			d := h.timer()
			if d < want[0]*time.Millisecond || d > want[1]*time.Millisecond {
				t.Fatalf("backoff %d is %v; want within [%dms, %dms]", i+1, d, want[0], want[1])
			}
			if i == 0 {
				t2 = h.add("a", "a2", true) // joins the next batch: the key is busy
			}
			if isDone(tk) {
				t.Fatal("the Ticket is done while its batch is being retried")
			}
			h.clock.Advance(d)
		}
		c := h.next()
		h.expect(c, "a", 0, "a1")
		c.ok()
		waitOK(t, tk)
		c = h.next()
		h.expect(c, "a", 1, "a2")
		c.ok()
		waitOK(t, t2)
		if s := h.b.Stats(); s.Retries != 3 || s.Batches != 2 || s.Failures != 0 {
			t.Fatalf("Stats = %+v; want 3 retries, 2 batches, no failure", s)
		}
	})

	t.Run("each upload attempt gets its own context, bounded by UploadTimeout, not the caller's", func(t *testing.T) {
		var mu sync.Mutex
		var causes []error
		b, err := batching.New(batching.Config{
			UploadTimeout: time.Millisecond,
			Retryable:     func(err error) bool { return !errors.Is(err, context.DeadlineExceeded) },
			Clock:         batchingtest.NewClock(time.Unix(0, 0)),
		}, func(ctx context.Context, _ batching.Batch[string, string]) error {
			if _, ok := ctx.Deadline(); !ok {
				return errPermanent
			}
			<-ctx.Done()
			mu.Lock()
			causes = append(causes, ctx.Err())
			mu.Unlock()
			return ctx.Err()
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(cancelled()) })
		ctx, cancel := context.WithCancel(t.Context())
		tk, err := b.Add(ctx, "a", "a1", 2, true)
		if err != nil {
			t.Fatal(err)
		}
		cancel() // the caller's context: the upload must not see it
		waitErr(t, tk, context.DeadlineExceeded, "upload of batch 0 of key a")
		mu.Lock()
		defer mu.Unlock()
		if len(causes) != 1 || !errors.Is(causes[0], context.DeadlineExceeded) {
			t.Fatalf("the upload's context ended with %v; want one DeadlineExceeded", causes)
		}
	})
}

func TestFailure(t *testing.T) {
	t.Run("a permanent failure is reported to its batch's Tickets and the key's later ones, and the next Flush uploads them in order", func(t *testing.T) {
		h := newHarness(t, batching.Config{Retryable: retryable})
		t0 := h.add("a", "a0", true)
		c := h.next()
		c.fail(errPermanent)
		waitErr(t, t0, errPermanent, "upload of batch 0 of key a")
		if s := h.b.Stats(); s.Failures != 1 || s.PendingItems != 1 || s.Retries != 0 {
			t.Fatalf("Stats = %+v; want 1 failure, 1 pending item, no retry", s)
		}

		t1 := h.add("a", "a1", true) // cut at once, since nothing of a is in flight, and failed
		waitErr(t, t1, errPermanent, "batch 1 of key a waits behind failed batch 0")
		t2 := h.add("a", "a2", false)

		tb := h.add("b", "b0", true) // other keys go on
		c = h.next()
		h.expect(c, "b", 0, "b0")
		c.ok()
		waitOK(t, tb)
		if isDone(t2) {
			t.Fatal("a2 is resolved before its batch was cut")
		}

		flushed := inBackground(func() error { return h.b.Flush(h.ctx()) })
		for seq, item := range []string{"a0", "a1", "a2"} {
			c := h.next()
			h.expect(c, "a", uint64(seq), item)
			c.ok()
		}
		if err := receive(t, flushed); err != nil {
			t.Fatalf("Flush = %v", err)
		}
		waitOK(t, t2)
		// The Tickets that learned of the failure keep their error.
		waitErr(t, t0, errPermanent, "")
		if s := h.b.Stats(); s.PendingItems != 0 || s.Batches != 4 {
			t.Fatalf("Stats = %+v; want nothing pending, 4 batches", s)
		}
	})

	t.Run("a Flush during which a batch fails permanently waits for the other keys and returns the error, and so does Close", func(t *testing.T) {
		h := newHarness(t, batching.Config{Retryable: retryable})
		h.add("a", "a0", false)
		tb := h.add("b", "b0", false)
		flushed := inBackground(func() error { return h.b.Flush(h.ctx()) })
		calls := h.nextByKey(2)
		calls["a"].fail(errPermanent)
		select {
		case err := <-flushed:
			t.Fatalf("Flush returned %v before key b was durable", err)
		default:
		}
		calls["b"].ok()
		err := receive(t, flushed)
		if !errors.Is(err, errPermanent) || !strings.Contains(err.Error(), "key a") {
			t.Fatalf("Flush = %v; want the permanent failure of key a", err)
		}
		waitOK(t, tb)

		closed := inBackground(func() error { return h.b.Close(h.ctx()) })
		c := h.next()
		h.expect(c, "a", 0, "a0") // Close tries again
		c.fail(errPermanent)
		err = receive(t, closed)
		if !errors.Is(err, errPermanent) || !strings.Contains(err.Error(), "1 item (2 bytes) of 1 key not durable") {
			t.Fatalf("Close = %v; want the failure and what is not durable", err)
		}
		if s := h.b.Stats(); s.Failures != 2 || s.PendingItems != 1 || s.PendingBytes != 2 {
			t.Fatalf("Stats = %+v; want 2 failures, 1 item of 2 bytes pending", s)
		}
	})
}

func TestFlush(t *testing.T) {
	t.Run("Flush waits for the items added before it and not for those added after", func(t *testing.T) {
		h := newHarness(t, batching.Config{})
		t1 := h.add("a", "a1", true)
		c0 := h.next()
		h.expect(c0, "a", 0, "a1")
		t2 := h.add("a", "a2", false)
		h.add("b", "b1", false)

		flushed := inBackground(func() error { return h.b.Flush(h.ctx()) })
		cb := h.next() // b was idle: Flush has cut every key
		h.expect(cb, "b", 0, "b1")
		t3 := h.add("a", "a3", true)

		c0.ok()
		c1 := h.next()
		h.expect(c1, "a", 1, "a2") // cut by Flush: a3 is not in it
		cb.ok()
		c1.ok()
		if err := receive(t, flushed); err != nil {
			t.Fatalf("Flush = %v", err)
		}
		waitOK(t, t1)
		waitOK(t, t2)
		// a3 was cut when the key went idle, and is uploaded, but Flush did not wait.
		c2 := h.next()
		h.expect(c2, "a", 2, "a3")
		if isDone(t3) {
			t.Fatal("a3 is durable before its upload returned")
		}
		c2.ok()
		waitOK(t, t3)
	})

	t.Run("Flush with nothing pending returns nil at once", func(t *testing.T) {
		h := newHarness(t, batching.Config{})
		if err := h.b.Flush(h.ctx()); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Flush whose context ends says how much of what it waits for is not durable yet", func(t *testing.T) {
		h := newHarness(t, batching.Config{})
		h.add("a", "a1", true)
		c0 := h.next()
		h.add("a", "a22", false)
		h.add("b", "b333", false)
		err := h.b.Flush(cancelled())
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "3 items (9 bytes) of 2 keys not durable yet") {
			t.Fatalf("Flush = %v; want context.Canceled and 3 items (9 bytes) of 2 keys", err)
		}
		// The uploads go on.
		c0.ok()
		calls := h.nextByKey(2)
		h.expect(calls["a"], "a", 1, "a22")
		h.expect(calls["b"], "b", 0, "b333")
	})
}

func TestClose(t *testing.T) {
	t.Run("Close uploads everything pending, then stops", func(t *testing.T) {
		h := newHarness(t, batching.Config{})
		var tickets []batching.Ticket
		for _, key := range []string{"a", "b", "c"} {
			tickets = append(tickets, h.add(key, key+"1", false), h.add(key, key+"2", false))
		}
		closed := inBackground(func() error { return h.b.Close(h.ctx()) })
		for key, c := range h.nextByKey(3) {
			h.expect(c, key, 0, key+"1", key+"2")
			c.ok()
		}
		if err := receive(t, closed); err != nil {
			t.Fatalf("Close = %v", err)
		}
		for _, tk := range tickets {
			waitOK(t, tk)
		}
		if s := h.b.Stats(); s.PendingItems != 0 || s.InFlight != 0 || s.Batches != 3 || s.Items != 6 {
			t.Fatalf("Stats = %+v; want 3 batches of 6 items, nothing pending or in flight", s)
		}
	})

	t.Run("Close whose context ends cancels the uploads and says exactly what is not durable", func(t *testing.T) {
		h := newHarness(t, batching.Config{})
		t1 := h.add("a", "a1", true)
		c0 := h.next()
		t2 := h.add("a", "a22", false)
		t3 := h.add("b", "b333", false)
		tc := h.add("c", "c", true)
		h.next().ok()
		waitOK(t, tc)

		err := h.b.Close(cancelled())
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "3 items (9 bytes) of 2 keys not durable") {
			t.Fatalf("Close = %v; want context.Canceled and 3 items (9 bytes) of 2 keys", err)
		}
		if c0.ctx.Err() == nil {
			t.Fatal("the upload in flight was not cancelled")
		}
		for _, tk := range []batching.Ticket{t1, t2, t3} {
			waitErr(t, tk, batching.ErrClosed, "not durable when Close gave up")
		}
		if s := h.b.Stats(); s.PendingItems != 3 || s.PendingBytes != 9 || s.InFlight != 0 || s.Items != 1 {
			t.Fatalf("Stats = %+v; want 3 items (9 bytes) pending, 1 uploaded, none in flight", s)
		}
	})

	t.Run("Add, Flush and a second Close after Close return ErrClosed", func(t *testing.T) {
		h := newHarness(t, batching.Config{})
		if err := h.b.Close(h.ctx()); err != nil {
			t.Fatal(err)
		}
		if _, err := h.b.Add(h.ctx(), "a", "a1", 2, true); !errors.Is(err, batching.ErrClosed) {
			t.Fatalf("Add = %v; want ErrClosed", err)
		}
		if err := h.b.Flush(h.ctx()); !errors.Is(err, batching.ErrClosed) {
			t.Fatalf("Flush = %v; want ErrClosed", err)
		}
		if err := h.b.Close(h.ctx()); !errors.Is(err, batching.ErrClosed) {
			t.Fatalf("second Close = %v; want ErrClosed", err)
		}
	})

	t.Run("the zero Ticket is done and Wait returns an error", func(t *testing.T) {
		var tk batching.Ticket
		if !isDone(tk) || tk.Wait(t.Context()) == nil {
			t.Fatal("the zero Ticket is not done, or Wait returned nil")
		}
	})

	t.Run("Ticket.Wait returns its context's error if it ends first", func(t *testing.T) {
		h := newHarness(t, batching.Config{})
		tk := h.add("a", "a1", false)
		if err := tk.Wait(cancelled()); !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait = %v; want context.Canceled", err)
		}
	})
}

// blocked prepares a Batcher whose pending bytes are at MaxPendingBytes (20): key a
// has 10 bytes in flight, key b 10 bytes in flight. waits receives a value each time
// an Add starts waiting for room.
func blocked(t *testing.T) (h *harness, ca, cb call, waits chan struct{}) {
	h = newHarness(t, batching.Config{BatchBytes: 10, MaxPendingBytes: 20})
	waits = make(chan struct{}, 100)
	batching.SetOnWait(h.b, func() { waits <- struct{}{} })
	h.add("a", "aaaaaaaaaa", false) // full: cut at once
	ca = h.next()
	h.add("b", "bbbbbbbbbb", false)
	cb = h.next()
	return h, ca, cb, waits
}

func receiveWait(t *testing.T, waits <-chan struct{}) {
	t.Helper()
	select {
	case <-waits:
	case <-time.After(hang):
		t.Fatal("Add did not block")
	}
}

func TestBackpressure(t *testing.T) {
	t.Run("Add blocks while its item would take the pending bytes past MaxPendingBytes, and goes on when a batch is durable", func(t *testing.T) {
		h, ca, cb, waits := blocked(t)
		added := inBackground(func() error { _, err := h.b.Add(h.ctx(), "c", "c", 1, true); return err })
		receiveWait(t, waits)
		if s := h.b.Stats(); s.BlockedAdds != 1 || s.PendingBytes != 20 {
			t.Fatalf("Stats = %+v; want 1 blocked Add, 20 pending bytes", s)
		}
		ca.ok()
		if err := receive(t, added); err != nil {
			t.Fatalf("Add = %v", err)
		}
		h.expect(h.next(), "c", 0, "c")
		if s := h.b.Stats(); s.BlockedAdds != 0 || s.PendingBytes != 11 || s.PeakPendingBytes != 20 {
			t.Fatalf("Stats = %+v; want no blocked Add, 11 pending bytes, a peak of 20", s)
		}
		cb.ok()
	})

	t.Run("with FailWhenFull an Add that finds no room fails at once with ErrFull, and one that fits is accepted", func(t *testing.T) {
		h := newHarness(t, batching.Config{BatchBytes: 10, MaxPendingBytes: 20, FailWhenFull: true})
		ta := h.add("a", "aaaaaaaaaa", false) // full: cut at once
		ca := h.next()
		h.add("b", "bbbbbbbbbb", false)
		cb := h.next()
		if _, err := h.b.Add(h.ctx(), "c", "c", 1, true); !errors.Is(err, batching.ErrFull) {
			t.Fatalf("Add = %v; want ErrFull", err)
		}
		if s := h.b.Stats(); s.PendingItems != 2 || s.PendingBytes != 20 || s.Refused != 1 || s.BlockedAdds != 0 {
			t.Fatalf("Stats = %+v; want the 2 items from before, 1 refused Add, none blocked", s)
		}
		ca.ok()
		waitOK(t, ta)
		h.add("c", "c", true)
		h.expect(h.next(), "c", 0, "c")
		cb.ok()
	})

	t.Run("an Add blocked on backpressure returns its context's error and the item is not accepted", func(t *testing.T) {
		h, _, _, waits := blocked(t)
		ctx, cancel := context.WithCancel(h.ctx())
		added := inBackground(func() error { _, err := h.b.Add(ctx, "c", "c", 1, true); return err })
		receiveWait(t, waits)
		cancel()
		if err := receive(t, added); !errors.Is(err, context.Canceled) {
			t.Fatalf("Add = %v; want context.Canceled", err)
		}
		if s := h.b.Stats(); s.PendingItems != 2 || s.BlockedAdds != 0 {
			t.Fatalf("Stats = %+v; want the 2 items from before, no blocked Add", s)
		}
	})

	t.Run("an Add blocked on backpressure returns ErrClosed when Close is called", func(t *testing.T) {
		h, _, _, waits := blocked(t)
		added := inBackground(func() error { _, err := h.b.Add(h.ctx(), "c", "c", 1, true); return err })
		receiveWait(t, waits)
		_ = h.b.Close(cancelled())
		if err := receive(t, added); !errors.Is(err, batching.ErrClosed) {
			t.Fatalf("Add = %v; want ErrClosed", err)
		}
	})

	t.Run("an item larger than MaxPendingBytes is accepted when nothing else is pending", func(t *testing.T) {
		h := newHarness(t, batching.Config{BatchBytes: 10, MaxPendingBytes: 20})
		waits := make(chan struct{}, 100)
		batching.SetOnWait(h.b, func() { waits <- struct{}{} })
		big := strings.Repeat("x", 25)
		tk := h.add("a", big, false)
		c := h.next()
		h.expect(c, "a", 0, big)
		if s := h.b.Stats(); s.PendingBytes != 25 {
			t.Fatalf("Stats.PendingBytes = %d; want 25", s.PendingBytes)
		}
		added := inBackground(func() error { _, err := h.b.Add(h.ctx(), "b", "b", 1, true); return err })
		receiveWait(t, waits)
		c.ok()
		waitOK(t, tk)
		if err := receive(t, added); err != nil {
			t.Fatalf("Add = %v", err)
		}
	})

	t.Run("pending bytes stay within MaxPendingBytes with many concurrent adders and a slow upload", func(t *testing.T) {
		const (
			bound    = 1000
			adders   = 16
			perAdder = 100
			maxItem  = 40
		)
		clock := batchingtest.NewClock(time.Unix(0, 0))
		gate := make(chan struct{})
		var b *batching.Batcher[int, []byte]
		var mu sync.Mutex
		var over []int64
		b, err := batching.New(batching.Config{
			BatchSize:            50,
			BatchBytes:           200,
			MaxPendingBytes:      bound,
			MaxConcurrentUploads: 2,
			FlushInterval:        10 * time.Millisecond,
			Clock:                clock,
		}, func(ctx context.Context, _ batching.Batch[int, []byte]) error {
			if p := b.Stats().PendingBytes; p > bound {
				mu.Lock()
				over = append(over, p)
				mu.Unlock()
			}
			select {
			case <-gate: // shut until enough Adds block
			case <-ctx.Done():
				return ctx.Err()
			}
			runtime.Gosched()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var waits sync.Once
		var nWaits int
		batching.SetOnWait(b, func() {
			mu.Lock()
			nWaits++
			n := nWaits
			mu.Unlock()
			if n >= adders/2 {
				waits.Do(func() { close(gate) })
			}
		})
		autoAdvance(t, clock)

		var wg sync.WaitGroup
		for g := range adders {
			wg.Go(func() {
				for i := range perAdder {
					size := 1 + (g*31+i*7)%maxItem
					if _, err := b.Add(t.Context(), g%5, make([]byte, size), size, i%17 == 0); err != nil {
						t.Error(err)
						return
					}
					if p := b.Stats().PendingBytes; p > bound {
						mu.Lock()
						over = append(over, p)
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		ctx, cancel := context.WithTimeout(t.Context(), hang)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Fatal(err)
		}
		s := b.Stats()
		if len(over) > 0 || s.PeakPendingBytes > bound || s.PeakPendingBytes <= bound-maxItem {
			t.Fatalf("pending bytes seen above %d: %v; peak %d (want within (%d, %d])",
				bound, over, s.PeakPendingBytes, bound-maxItem, bound)
		}
		if s.Items != adders*perAdder || s.PendingBytes != 0 {
			t.Fatalf("Stats = %+v; want %d items uploaded, nothing pending", s, adders*perAdder)
		}
	})
}

func TestStats(t *testing.T) {
	t.Run("Stats count what was uploaded, retried, failed and is pending", func(t *testing.T) {
		h := newHarness(t, batching.Config{Retryable: retryable})
		ta := h.add("a", "x", true)
		h.next().fail(errTransient)
		h.clock.Advance(h.timer())
		h.next().ok()
		waitOK(t, ta)
		tb := h.add("b", "yy", true)
		h.next().fail(errPermanent)
		waitErr(t, tb, errPermanent, "")
		h.add("a", "zzz", false)
		want := batching.Stats{
			Batches: 1, Items: 1, Bytes: 1,
			Retries: 1, Failures: 1,
			PendingItems: 2, PendingBytes: 5, PeakPendingBytes: 5,
		}
		if s := h.b.Stats(); s != want {
			t.Fatalf("Stats = %+v; want %+v", s, want)
		}
	})
}

func TestNoGoroutineLeak(t *testing.T) {
	for _, clean := range []bool{true, false} {
		name := "no goroutine outlives a Close that uploaded everything"
		if !clean {
			name = "no goroutine outlives a Close that gave up, with uploads in flight and in backoff"
		}
		t.Run(name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			h := newHarness(t, batching.Config{MaxConcurrentUploads: 2})
			h.add("a", "a1", true)
			h.add("b", "b1", true)
			h.add("c", "c1", false) // waits for a slot at Close
			calls := h.nextByKey(2)
			calls["a"].fail(errTransient)
			h.timer() // a is in backoff; b in flight
			h.add("a", "a2", false)
			if clean {
				closed := inBackground(func() error { return h.b.Close(h.ctx()) })
				h.clock.Advance(time.Hour)
				calls["b"].ok()
				for range 3 { // a's batch 0 again, then its batch 1 and c's, in some order
					h.next().ok()
				}
				if err := receive(t, closed); err != nil {
					t.Fatalf("Close = %v", err)
				}
			} else if err := h.b.Close(cancelled()); err == nil {
				t.Fatal("Close gave up and returned nil")
			}

			// A goroutine that has returned from its function may take a moment to be
			// gone from the count: poll, yielding, with a bound that only catches leaks.
			deadline := time.Now().Add(hang)
			for runtime.NumGoroutine() > before || batcherGoroutines() != "" {
				if time.Now().After(deadline) {
					t.Fatalf("%d goroutines before New, %d after Close:\n%s",
						before, runtime.NumGoroutine(), batcherGoroutines())
				}
				runtime.Gosched()
			}
		})
	}
}

// batcherGoroutines returns the stacks of the goroutines running code of the Batcher.
func batcherGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "batching.(*Batcher") && !strings.Contains(g, "batcherGoroutines") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

package batching

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// ErrClosed is returned by Add, Flush and a second Close once Close has been called, and
// wrapped in the error of a Ticket whose batch was not durable when Close gave up.
var ErrClosed = errors.New("batching: closed")

// ErrFull is wrapped by the error of an Add that found no room under MaxPendingBytes
// with Config.FailWhenFull set.
var ErrFull = errors.New("batching: pending bytes are at MaxPendingBytes")

// Batch is one upload: items of one key, cut in Add order.
type Batch[K comparable, T any] struct {
	Key K
	// Seq numbers the batches of Key from 0 in cut order, with no gap. It is the same on
	// every attempt to upload this batch, so the upload can name its object after it and
	// be idempotent. Seq restarts at 0 in a new Batcher.
	Seq uint64
	// Items are in the order Add accepted them. The upload may keep the slice after it
	// returns nil but must not modify it: a failed attempt is retried with the same one.
	Items []T
	// Bytes is the sum of the sizes passed to Add for Items.
	Bytes int
}

// UploadFunc makes a batch durable. It returns nil only once the batch is durable; any
// error means it may or may not be, and the batch may be passed again (same Seq, same
// Items). Calls for one key never overlap and come in Seq order; calls for different
// keys run concurrently, so it must be safe for concurrent use. It should return soon
// after ctx is done: Close waits for it.
type UploadFunc[K comparable, T any] func(ctx context.Context, b Batch[K, T]) error

// Stats is a snapshot of a Batcher's counters.
type Stats struct {
	// Batches, Items and Bytes count what was uploaded durably, since New.
	Batches, Items, Bytes int64
	// Retries counts failed upload attempts that were retried.
	Retries int64
	// Failures counts permanent failures: attempts whose error Config.Retryable
	// rejected. A batch that fails again after a Flush counts again.
	Failures int64
	// PendingItems and PendingBytes are accepted by Add and not yet durable.
	PendingItems, PendingBytes int64
	// PeakPendingBytes is the highest PendingBytes since New.
	PeakPendingBytes int64
	// InFlight counts the batches holding an upload slot now: an upload call running, or
	// the backoff before its next attempt. At most Config.MaxConcurrentUploads.
	InFlight int
	// BlockedAdds counts the Add calls waiting for room under MaxPendingBytes now.
	BlockedAdds int
	// Refused counts the Add calls that failed with ErrFull, since New.
	Refused int64
}

// Batcher groups items into batches per key and uploads them behind the callers' backs.
// See the package documentation. All methods are safe for concurrent use.
type Batcher[K comparable, T any] struct {
	cfg    Config
	upload UploadFunc[K, T]

	// runCtx is the parent of every upload attempt's context, cancelled when Close gives
	// up, so that uploads never see a caller's context.
	runCtx    context.Context
	cancelRun context.CancelFunc
	// closedCh is closed by Close: it wakes the Adds blocked on room and stops the
	// scheduler.
	closedCh chan struct{}
	// wake (capacity 1) tells the scheduler that deadlines went from empty to non-empty.
	wake chan struct{}
	// wg owns every goroutine: the scheduler and the upload goroutines. Close waits for it.
	wg sync.WaitGroup
	// onWait, a test hook, is called when an Add starts waiting for room.
	onWait func()

	mu sync.Mutex
	// keys holds the state of every key ever added to, so that Seq never repeats.
	keys map[K]*keyState[K, T]
	// deadlines says when each open batch must be cut, oldest first. Appending keeps it
	// sorted because FlushInterval is constant and Clock does not go back, so a FIFO
	// read by one scheduler goroutine with one timer replaces a timer per key: Add
	// starts no timer and pays one append per batch. An entry outlives an early cut
	// (by size or urgency) and is skipped when due.
	deadlines []deadline[K, T]
	// ready lists the keys whose head batch waits for an upload slot, first come first
	// served. A key is in it at most once, and then no upload of it is running.
	ready []*keyState[K, T]
	// inFlight counts the upload slots taken (≤ cfg.MaxConcurrentUploads). The counter
	// is this mutex's, not an errgroup's or a semaphore.Weighted's: whether a slot is
	// free and whether a batch is ready must be decided together, or a batch made ready
	// while its last holder is leaving would find no goroutine to upload it.
	inFlight int
	closed   bool // Close was called: Add, Flush and Close return ErrClosed
	aborted  bool // Close gave up: no upload starts and none is retried
	// room is closed (and reset to nil) when pending bytes drop; the first Add that has
	// to wait makes it. Waiters all wake and check again: items are small next to
	// MaxPendingBytes, so a herd of a few goroutines is cheaper than a fair queue.
	room                       chan struct{}
	pendingItems, pendingBytes int64
	blockedAdds                int
	stats                      Stats // the cumulative fields only
}

// keyState is the state of one key, guarded by Batcher.mu.
type keyState[K comparable, T any] struct {
	key K

	// The open batch: items accepted and not yet cut. openRes, which their Tickets
	// share, is non-nil exactly when open is non-empty.
	open       []T
	openBytes  int
	openRes    *result
	openUrgent bool   // cut as soon as the key is not busy
	nextSeq    uint64 // Seq the open batch will get
	lastLen    int    // items in the last cut batch: the next one's initial capacity

	// queue holds the cut batches that are not durable, in Seq order. Its head is being
	// uploaded or waits for a slot (busy), or is parked after a permanent failure
	// (failed != nil), or is left where it was when Close gave up (neither).
	queue  []*batch[K, T]
	busy   bool
	failed error // the error that parked queue[0]
}

type batch[K comparable, T any] struct {
	Batch[K, T]
	res *result
}

type deadline[K comparable, T any] struct {
	ks  *keyState[K, T]
	seq uint64 // the open batch it is for: stale once ks.nextSeq differs
	at  time.Time
}

// result is the outcome shared by the Tickets of one batch. resolved and err are
// written under Batcher.mu before done is closed, and err is read only after.
type result struct {
	done     chan struct{}
	err      error
	resolved bool
}

func newResult() *result { return &result{done: make(chan struct{})} }

func (r *result) resolve(err error) {
	if r.resolved {
		return
	}
	r.resolved = true
	r.err = err
	close(r.done)
}

// Ticket follows one item accepted by Add to durability. It is two words; copy it freely.
// The zero Ticket is for no item: Done is closed and Wait returns an error.
type Ticket struct{ r *result }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Done is closed once the item's batch is resolved: durable, failed permanently, or
// abandoned by Close. Wait then says which, without blocking.
func (t Ticket) Done() <-chan struct{} {
	if t.r == nil {
		return closedChan
	}
	return t.r.done
}

// Durable reports, without blocking, whether the item is known to be durable now: its
// batch's upload returned nil. False for the zero Ticket, while the batch is pending,
// and after a failure (the item may still become durable through a later Flush or
// Close, which this Ticket does not learn of).
func (t Ticket) Durable() bool {
	if t.r == nil {
		return false
	}
	select {
	case <-t.r.done:
		return t.r.err == nil
	default:
		return false
	}
}

// Wait returns nil once the item is durable (the upload of its batch returned nil). It
// returns an error if the batch, or an earlier batch of its key, failed permanently
// (wrapping the upload's error), if Close gave up before the batch was durable
// (wrapping ErrClosed), or, wrapped, ctx's error if ctx ends first. After an error other
// than ctx's, the item is still kept and uploaded by the next Flush or Close, but this
// Ticket does not learn of it: the error means "not known to be durable".
func (t Ticket) Wait(ctx context.Context) error {
	if t.r == nil {
		return errors.New("batching: Wait on a zero Ticket")
	}
	select {
	case <-t.r.done:
		return t.r.err
	default:
	}
	select {
	case <-t.r.done:
		return t.r.err
	case <-ctx.Done():
		return fmt.Errorf("batching: waiting for a batch to be durable: %w", ctx.Err())
	}
}

// New validates cfg, applies its defaults and starts the Batcher's scheduler goroutine.
// upload is called from goroutines the Batcher owns; Close stops them all.
func New[K comparable, T any](cfg Config, upload UploadFunc[K, T]) (*Batcher[K, T], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if upload == nil {
		return nil, errors.New("batching: New: upload is nil")
	}
	runCtx, cancel := context.WithCancel(context.Background())
	b := &Batcher[K, T]{
		cfg:       cfg.withDefaults(),
		upload:    upload,
		runCtx:    runCtx,
		cancelRun: cancel,
		closedCh:  make(chan struct{}),
		wake:      make(chan struct{}, 1),
		keys:      make(map[K]*keyState[K, T]),
	}
	b.wg.Go(b.schedule)
	return b, nil
}

// Add accepts item, of size bytes, for key and returns a Ticket for it. Items of one key
// are uploaded in the order Add accepts them.
//
// Durability: a nil error means the item is accepted in memory only. It is not durable
// and is lost if the process dies before its batch is uploaded; Ticket.Wait, Flush and
// Close tell when it is durable.
//
// Without urgent, the item waits in its key's open batch until the batch is full
// (BatchSize, BatchBytes) or FlushInterval has passed since the batch's first item. With
// urgent, the open batch is cut as soon as the key is not busy (no batch of it uploading
// or waiting for an upload slot): at once if it is idle, else the moment its queued
// batches are done, so that items added meanwhile by other callers join it (group
// commit).
//
// Add blocks while accepting the item would take the pending bytes past
// MaxPendingBytes (with Config.FailWhenFull it fails at once instead, with an error
// wrapping ErrFull, and the item is not accepted). If ctx ends first it returns an error
// wrapping ctx's error, and the item is not accepted. After Close it returns ErrClosed, and an Add blocked when Close
// is called returns ErrClosed too. A negative size is an error.
func (b *Batcher[K, T]) Add(ctx context.Context, key K, item T, size int, urgent bool) (Ticket, error) {
	if size < 0 {
		return Ticket{}, fmt.Errorf("batching: Add: size %d is negative", size)
	}
	b.mu.Lock()
	for !b.closed && b.pendingBytes > 0 && b.pendingBytes+int64(size) > b.cfg.MaxPendingBytes {
		if b.cfg.FailWhenFull {
			pending := b.pendingBytes
			b.stats.Refused++
			b.mu.Unlock()
			return Ticket{}, fmt.Errorf("%w: no room for %d bytes (%d of %d pending)", ErrFull, size, pending, b.cfg.MaxPendingBytes)
		}
		if err := b.waitForRoomLocked(ctx, size); err != nil {
			return Ticket{}, err
		}
	}
	if b.closed {
		b.mu.Unlock()
		return Ticket{}, ErrClosed
	}

	ks := b.keys[key]
	if ks == nil {
		ks = &keyState[K, T]{key: key}
		b.keys[key] = ks
	}
	cut := false
	if len(ks.open) > 0 && ks.openBytes+size > b.cfg.BatchBytes {
		b.cutLocked(ks)
		cut = true
	}
	if len(ks.open) == 0 {
		b.openLocked(ks)
	}
	ks.open = append(ks.open, item)
	ks.openBytes += size
	t := Ticket{r: ks.openRes}

	b.pendingItems++
	b.pendingBytes += int64(size)
	b.stats.PeakPendingBytes = max(b.stats.PeakPendingBytes, b.pendingBytes)

	switch {
	case len(ks.open) >= b.cfg.BatchSize, ks.openBytes >= b.cfg.BatchBytes, urgent && !ks.busy:
		b.cutLocked(ks)
		cut = true
	case urgent:
		ks.openUrgent = true
	}
	if cut {
		b.dispatchLocked()
	}
	b.mu.Unlock()
	return t, nil
}

// Idle reports whether key has nothing in flight, queued or open: an urgent Add to it
// now would start an upload at once. Callers free to choose among keys (records that may
// go to any of several streams) use it to spread urgent items over idle keys; the answer
// may be stale by the time they Add.
func (b *Batcher[K, T]) Idle(key K) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	ks := b.keys[key]
	return ks == nil || !ks.busy && len(ks.queue) == 0 && len(ks.open) == 0
}

// waitForRoomLocked waits, without the lock, until pending bytes drop, Close is called
// or ctx ends. It returns with the lock held, except on error.
func (b *Batcher[K, T]) waitForRoomLocked(ctx context.Context, size int) error {
	if b.room == nil {
		b.room = make(chan struct{})
	}
	room := b.room
	pending := b.pendingBytes
	b.blockedAdds++
	b.mu.Unlock()
	if b.onWait != nil {
		b.onWait()
	}
	select {
	case <-room:
	case <-b.closedCh:
	case <-ctx.Done():
		b.mu.Lock()
		b.blockedAdds--
		b.mu.Unlock()
		return fmt.Errorf("batching: Add: no room for %d bytes (%d of MaxPendingBytes %d pending): %w",
			size, pending, b.cfg.MaxPendingBytes, ctx.Err())
	}
	b.mu.Lock()
	b.blockedAdds--
	return nil
}

// openLocked starts the open batch of ks and schedules its cut.
func (b *Batcher[K, T]) openLocked(ks *keyState[K, T]) {
	ks.open = make([]T, 0, min(max(ks.lastLen, 8), b.cfg.BatchSize))
	ks.openRes = newResult()
	b.deadlines = append(b.deadlines, deadline[K, T]{
		ks:  ks,
		seq: ks.nextSeq,
		at:  b.cfg.Clock.Now().Add(b.cfg.FlushInterval),
	})
	if len(b.deadlines) == 1 {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
}

// cutLocked turns the open batch of ks (non-empty) into the next batch of its queue.
// The caller calls dispatchLocked before unlocking.
func (b *Batcher[K, T]) cutLocked(ks *keyState[K, T]) {
	bt := &batch[K, T]{
		Batch: Batch[K, T]{Key: ks.key, Seq: ks.nextSeq, Items: ks.open, Bytes: ks.openBytes},
		res:   ks.openRes,
	}
	ks.nextSeq++
	ks.lastLen = len(ks.open)
	ks.open, ks.openBytes, ks.openRes, ks.openUrgent = nil, 0, nil, false
	ks.queue = append(ks.queue, bt)
	switch {
	case ks.failed != nil:
		bt.res.resolve(blockedError(ks, bt))
	case !ks.busy && !b.aborted:
		ks.busy = true
		b.ready = append(b.ready, ks)
	}
}

// dispatchLocked starts an upload goroutine for each ready key that a free slot allows.
func (b *Batcher[K, T]) dispatchLocked() {
	for !b.aborted && b.inFlight < b.cfg.MaxConcurrentUploads && len(b.ready) > 0 {
		ks := b.popReadyLocked()
		b.inFlight++
		b.wg.Go(func() { b.uploader(ks) })
	}
}

func (b *Batcher[K, T]) popReadyLocked() *keyState[K, T] {
	ks := b.ready[0]
	b.ready[0] = nil
	b.ready = b.ready[1:]
	return ks
}

// uploader holds one upload slot. It uploads the head batch of ks, then, keeping the
// slot, the head batch of the next ready key, until none is ready.
func (b *Batcher[K, T]) uploader(ks *keyState[K, T]) {
	b.mu.Lock()
	for {
		bt := ks.queue[0]
		b.mu.Unlock()
		out, err := b.uploadWithRetries(bt)
		b.mu.Lock()
		b.finishLocked(ks, bt, out, err)
		if b.aborted || len(b.ready) == 0 {
			b.inFlight--
			b.mu.Unlock()
			return
		}
		ks = b.popReadyLocked()
	}
}

type outcome int

const (
	uploaded outcome = iota // durable
	failed                  // permanently: the error is not retryable
	aborted                 // Close gave up
)

// uploadWithRetries calls upload until it succeeds, fails permanently or Close gives up.
func (b *Batcher[K, T]) uploadWithRetries(bt *batch[K, T]) (outcome, error) {
	backoff := b.cfg.RetryBackoff
	for {
		ctx, cancel := context.WithTimeout(b.runCtx, b.cfg.UploadTimeout)
		err := b.upload(ctx, bt.Batch)
		cancel()
		switch {
		case err == nil:
			return uploaded, nil
		case b.runCtx.Err() != nil:
			return aborted, err
		case !b.cfg.Retryable(err):
			return failed, err
		}
		b.mu.Lock()
		b.stats.Retries++
		b.mu.Unlock()
		// The slot is kept during the backoff: when the store pushes back (S3 503
		// SlowDown), fewer requests in flight is the point of backing off.
		t := b.cfg.Clock.NewTimer(backoff/2 + rand.N(backoff-backoff/2+1))
		select {
		case <-t.C():
		case <-b.runCtx.Done():
			t.Stop()
			return aborted, err
		}
		backoff = min(2*backoff, b.cfg.MaxRetryBackoff)
	}
}

// finishLocked records the outcome of the upload of bt, the head of ks's queue, and
// makes the key's next batch ready if there is one.
func (b *Batcher[K, T]) finishLocked(ks *keyState[K, T], bt *batch[K, T], out outcome, err error) {
	switch out {
	case uploaded:
		ks.queue[0] = nil
		ks.queue = ks.queue[1:]
		b.pendingItems -= int64(len(bt.Items))
		b.pendingBytes -= int64(bt.Bytes)
		b.stats.Batches++
		b.stats.Items += int64(len(bt.Items))
		b.stats.Bytes += int64(bt.Bytes)
		if b.room != nil {
			close(b.room)
			b.room = nil
		}
		bt.res.resolve(nil)
		switch {
		case len(ks.queue) > 0:
			b.ready = append(b.ready, ks) // still busy
		case ks.openUrgent:
			ks.busy = false
			b.cutLocked(ks)
		default:
			ks.busy = false
		}
	case failed:
		// Park the key: its later batches must not overtake this one, and dropping it
		// would lose data. The next Flush or Close tries again.
		b.stats.Failures++
		ks.busy = false
		ks.failed = err
		bt.res.resolve(fmt.Errorf("batching: upload of batch %d of key %v: %w", bt.Seq, ks.key, err))
		for _, later := range ks.queue[1:] {
			later.res.resolve(blockedError(ks, later))
		}
		if ks.openUrgent {
			b.cutLocked(ks)
		}
	case aborted:
		ks.busy = false // Close resolves the Tickets once every goroutine has stopped
	}
}

func blockedError[K comparable, T any](ks *keyState[K, T], bt *batch[K, T]) error {
	return fmt.Errorf("batching: batch %d of key %v waits behind failed batch %d: %w",
		bt.Seq, ks.key, ks.queue[0].Seq, ks.failed)
}

// schedule cuts the open batches that are due. It is the only goroutine that waits on
// the clock for FlushInterval, with one timer for the earliest deadline. The timer is
// made again only when that deadline changes, never on a spurious wake-up, so a test
// that waits for the timer and then advances a manual clock past it sees it fire.
func (b *Batcher[K, T]) schedule() {
	var (
		t    Timer
		tAt  time.Time // the deadline t is for
		fire <-chan time.Time
	)
	for {
		b.mu.Lock()
		now := b.cfg.Clock.Now()
		cut := false
		for len(b.deadlines) > 0 && !b.deadlines[0].at.After(now) {
			d := b.deadlines[0]
			b.deadlines[0] = deadline[K, T]{}
			b.deadlines = b.deadlines[1:]
			switch {
			case d.ks.nextSeq != d.seq || len(d.ks.open) == 0:
			case d.ks.busy && d.ks.failed == nil:
				// The key's upload is running or backing off: a batch cut now could
				// not start before it ends anyway. Left open, it keeps growing (up to
				// BatchBytes) and is cut when the key is free, so an outage leaves a
				// few full batches behind, not one per FlushInterval, and recovery
				// costs as few PUTs.
				d.ks.openUrgent = true
			default:
				b.cutLocked(d.ks)
				cut = true
			}
		}
		if cut {
			b.dispatchLocked()
		}
		var next time.Time
		if len(b.deadlines) > 0 {
			next = b.deadlines[0].at
		}
		b.mu.Unlock()

		if t != nil && !next.Equal(tAt) {
			t.Stop()
			t, fire = nil, nil
		}
		if t == nil && !next.IsZero() {
			t, tAt = b.cfg.Clock.NewTimer(next.Sub(now)), next
			fire = t.C()
		}
		select {
		case <-fire:
			t, fire = nil, nil
		case <-b.wake:
		case <-b.closedCh:
			if t != nil {
				t.Stop()
			}
			return // Close cuts whatever is open
		}
	}
}

// target is what a Flush waits for on one key: the result of its last batch at the
// time of the call. Batches of a key resolve in Seq order, so that one resolves last.
type target[K comparable, T any] struct {
	ks  *keyState[K, T]
	seq uint64
	res *result
}

// barrierLocked cuts every open batch, puts every parked key back in line, and returns
// what to wait for.
func (b *Batcher[K, T]) barrierLocked() []target[K, T] {
	var ts []target[K, T]
	for _, ks := range b.keys {
		if ks.failed != nil {
			// Fresh results: the old ones told their Tickets of the failure already.
			ks.failed = nil
			for _, bt := range ks.queue {
				bt.res = newResult()
			}
			ks.busy = true
			b.ready = append(b.ready, ks)
		}
		if len(ks.open) > 0 {
			b.cutLocked(ks)
		}
		if n := len(ks.queue); n > 0 {
			tail := ks.queue[n-1]
			ts = append(ts, target[K, T]{ks: ks, seq: tail.Seq, res: tail.res})
		}
	}
	b.dispatchLocked()
	return ts
}

// awaitTargets waits until every target is resolved or ctx ends. It returns the
// permanent failures among the resolved ones and ctx's error, if it ended first.
func (b *Batcher[K, T]) awaitTargets(ctx context.Context, ts []target[K, T]) (failures, ctxErr error) {
	for _, t := range ts {
		select {
		case <-t.res.done:
		case <-ctx.Done():
			ctxErr = ctx.Err()
		}
		if ctxErr != nil {
			break
		}
	}
	var errs []error
	for _, t := range ts {
		select {
		case <-t.res.done:
			if t.res.err != nil {
				errs = append(errs, t.res.err)
			}
		default:
		}
	}
	return errors.Join(errs...), ctxErr
}

// Flush is a barrier: it cuts the open batch of every key now, and returns nil once
// every item that Add accepted before the call is durable. Items accepted during the
// call may be uploaded with them but are not waited for.
//
// Batches parked by a permanent failure are tried again, in order, before the later
// batches of their key. If one fails permanently again, Flush still waits for the other
// keys, then returns an error that wraps the upload's error (one per failed key, joined).
// If ctx ends first, Flush returns an error that wraps ctx's error and says how many of
// those items, bytes and keys are not durable yet; the uploads go on. After Close it
// returns ErrClosed.
func (b *Batcher[K, T]) Flush(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	ts := b.barrierLocked()
	b.mu.Unlock()

	failures, ctxErr := b.awaitTargets(ctx, ts)
	if ctxErr == nil {
		if failures != nil {
			return fmt.Errorf("batching: Flush: %w", failures)
		}
		return nil
	}
	b.mu.Lock()
	var items, bytes int64
	keys := 0
	for _, t := range ts {
		n := 0
		for _, bt := range t.ks.queue {
			if bt.Seq > t.seq {
				break
			}
			items += int64(len(bt.Items))
			bytes += int64(bt.Bytes)
			n++
		}
		if n > 0 {
			keys++
		}
	}
	b.mu.Unlock()
	return fmt.Errorf("batching: Flush: %s not durable yet: %w",
		amount(items, bytes, keys), errors.Join(ctxErr, failures))
}

// Close stops accepting items, uploads everything accepted (as Flush does, parked
// batches included), and stops every goroutine of the Batcher.
//
// It returns nil if everything accepted is durable. Otherwise, when ctx ends first or a
// batch fails permanently, it gives up: it cancels the uploads in flight, waits for
// them to return, and returns an error that says exactly how many items, bytes and keys
// are not durable, wrapping ctx's error and the upload errors. The Tickets of those
// items report an error wrapping ErrClosed, and Stats keeps counting them as pending.
// Nothing is dropped silently, but nothing is uploaded after Close returns.
//
// Close returns once every goroutine has returned, so it waits for upload calls that
// ignore their context. A second Close returns ErrClosed and does nothing.
func (b *Batcher[K, T]) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.closed = true
	close(b.closedCh)
	ts := b.barrierLocked()
	b.mu.Unlock()

	failures, ctxErr := b.awaitTargets(ctx, ts)

	b.mu.Lock()
	b.aborted = true
	b.mu.Unlock()
	b.cancelRun()
	b.wg.Wait()

	b.mu.Lock()
	defer b.mu.Unlock()
	keys := 0
	for _, ks := range b.keys {
		if len(ks.queue) == 0 {
			continue
		}
		keys++
		for _, bt := range ks.queue {
			bt.res.resolve(fmt.Errorf("batching: batch %d of key %v was not durable when Close gave up: %w",
				bt.Seq, ks.key, ErrClosed))
		}
	}
	if keys == 0 {
		// Everything is durable, even if ctx ended as the last upload returned.
		return nil
	}
	cause := errors.Join(ctxErr, failures)
	if cause == nil {
		cause = errors.New("an upload was cancelled")
	}
	return fmt.Errorf("batching: Close: %s not durable: %w",
		amount(b.pendingItems, b.pendingBytes, keys), cause)
}

// Stats returns a snapshot of the counters.
func (b *Batcher[K, T]) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.PendingItems = b.pendingItems
	s.PendingBytes = b.pendingBytes
	s.InFlight = b.inFlight
	s.BlockedAdds = b.blockedAdds
	return s
}

func amount(items, bytes int64, keys int) string {
	return fmt.Sprintf("%d %s (%d bytes) of %d %s",
		items, plural(items, "item", "items"), bytes, keys, plural(int64(keys), "key", "keys"))
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

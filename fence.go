package s3persist

// # One writer per bucket prefix: ownership, lease and fencing
//
// S3 has no multi-object transactions, so two brokers writing one prefix at once (a
// rolling update, a pod that was presumed dead) would overwrite each other's index. The
// ownership object keyOwner decides who may write. Every write of it is conditional:
// create-only when it is missing, otherwise if-match on the ETag the writer read; so of
// two instances racing for it, exactly one wins.
//
//   - New takes ownership before it reads anything else. If a live owner holds it, New
//     waits until the owner releases it (Shutdown does) or until the object has not
//     changed for the owner's lease (it renews every third of it), then takes over;
//     Config.ForceTakeover skips the wait.
//   - The owner renews its lease in the background with an if-match put. Its writes
//     (the fencingStore below) are allowed only until the end of its lease, counted from
//     the moment its last successful renewal was sent, and each write's context ends
//     there: an owner that cannot renew stops writing before a waiter may take over;
//     its writes wait for the next successful renewal instead.
//   - A renewal that fails its condition means another instance took over, unless the
//     object still names this instance (an earlier renewal that landed although its
//     response was lost): then the renewal is adopted, not mistaken for a lost race.
//     Otherwise the instance is fenced: every later write fails with ErrFenced, calls
//     that change state fail with it, and Fenced() is closed.
//   - Before each step of a checkpoint that makes earlier objects obsolete (session
//     records, index shards, deletions), and before each retained-set write and each
//     garbage collection, the owner confirms its ownership with a renewal. A fenced
//     instance therefore never deletes what a new owner may still need, and never
//     overwrites shared objects after it learnt it lost.
//   - Journal segments are named by epoch. When a new owner has loaded, it records in
//     the ownership object the segments of earlier epochs it replayed (Sealed) and its
//     own epoch (Floor): a segment of an earlier epoch that is not sealed was uploaded
//     late by a fenced owner, is never replayed, and is deleted as garbage.
//
// What fencing cannot do on S3: a request that a fenced owner sent before it learnt (or
// before its lease ended) may still be applied by the server afterwards. The renewals
// around every step bound that window to one request of one step; ForceTakeover is for
// an owner known to be gone, which makes the window empty.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/s3persist/s3persist/s3store"
)

// ErrFenced is returned (wrapped) by every call that changes state after another
// instance took over the bucket prefix. The instance never writes again; the host should
// stop it (see Persistence.Fenced).
var ErrFenced = errors.New("s3persist: fenced: another instance took over the bucket prefix")

// ErrLeaseExpired is returned (wrapped) by a write whose deadline passed while the
// instance could not renew its ownership (the store is unreachable, say): writes wait for
// a renewal until then. It is temporary: writes resume when a renewal succeeds, unless
// another instance took over meanwhile (then ErrFenced).
var ErrLeaseExpired = errors.New("s3persist: ownership lease expired; writes wait for a renewal")

// ErrNoConditionalWrites is returned by New when the store ignores the conditions of a
// put (If-None-Match, If-Match): without them neither the epoch nor the ownership of the
// prefix can be protected, and two instances could corrupt each other's state.
var ErrNoConditionalWrites = errors.New("s3persist: the object store does not honour conditional writes (If-None-Match / If-Match)")

// takeoverGraceDivisor: a waiter adds a lease divided by it (a tenth) to the lease while
// waiting for it to expire, for clocks that run at slightly different rates.
const takeoverGraceDivisor = 10

// lease is this instance's ownership of the bucket prefix.
type lease struct {
	store    s3store.Store // prefixed, not fenced: the ownership object is written directly
	instance string
	host     string
	ttl      time.Duration
	log      *slog.Logger

	// renewSlot serialises renewals: each puts if-match on the ETag of the previous one.
	// A channel, not a mutex, so that a caller's context can end the wait.
	renewSlot chan struct{}

	mu sync.Mutex
	// Guarded by mu.
	rec      ownerRecord // as last written by this instance
	etag     string
	deadline time.Time     // writes must end by then
	renewed  chan struct{} // closed (and replaced) whenever the lease is extended
	fencedBy string        // set once fenced: what was found
	fenced   chan struct{}
	sealed   func() []string // the journal segments of earlier epochs still needed
}

func newLease(store s3store.Store, ttl time.Duration, log *slog.Logger) (*lease, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("s3persist: instance id: %w", err)
	}
	host, _ := os.Hostname()
	return &lease{store: store, instance: hex.EncodeToString(b[:]), host: host, ttl: ttl, log: log,
		renewSlot: make(chan struct{}, 1), fenced: make(chan struct{}), renewed: make(chan struct{})}, nil
}

// checkConditionalWrites fails with ErrNoConditionalWrites unless the store refuses a
// create-only put over an existing object and an if-match put with a wrong ETag. It
// writes and deletes one probe object of this instance.
func (l *lease) checkConditionalWrites(ctx context.Context) error {
	key := probeRoot + l.instance
	info, err := l.store.Put(ctx, key, []byte("probe"), s3store.PutOptions{IfNoneMatch: true})
	if err != nil {
		return fmt.Errorf("s3persist: check conditional writes: %w", err)
	}
	defer func() { _ = l.store.Delete(context.WithoutCancel(ctx), key) }()
	_, err = l.store.Put(ctx, key, []byte("probe 2"), s3store.PutOptions{IfNoneMatch: true})
	switch {
	case err == nil:
		return fmt.Errorf("%w: a create-only put replaced an existing object", ErrNoConditionalWrites)
	case !errors.Is(err, s3store.ErrPreconditionFailed):
		return fmt.Errorf("s3persist: check conditional writes: %w", err)
	}
	wrong := "0" + info.ETag
	_, err = l.store.Put(ctx, key, []byte("probe 3"), s3store.PutOptions{IfMatch: wrong})
	switch {
	case err == nil:
		return fmt.Errorf("%w: a put with a wrong If-Match ETag succeeded", ErrNoConditionalWrites)
	case !errors.Is(err, s3store.ErrPreconditionFailed):
		return fmt.Errorf("s3persist: check conditional writes: %w", err)
	}
	return nil
}

// acquire takes ownership of the prefix (see the top of this file) and returns the
// record of the previous owner (zero if there was none), whose Floor and Sealed say
// which journal segments are valid.
func (l *lease) acquire(ctx context.Context, force bool) (ownerRecord, error) {
	poll := min(l.ttl/4, time.Second)
	var (
		watched   string    // ETag of a live owner's record being watched
		watchedAt time.Time // when it was first seen
	)
	for {
		data, info, err := l.store.Get(ctx, keyOwner)
		switch {
		case errors.Is(err, s3store.ErrNotFound):
			if err := l.put(ctx, ownerRecord{}, s3store.PutOptions{IfNoneMatch: true}); err == nil {
				return ownerRecord{}, nil
			} else if !errors.Is(err, s3store.ErrPreconditionFailed) {
				return ownerRecord{}, err
			}
			continue // another instance created it first
		case err != nil:
			return ownerRecord{}, fmt.Errorf("s3persist: read the ownership record: %w", err)
		}
		prev, derr := decodeOwner(keyOwner, data)
		if derr != nil && !force {
			return ownerRecord{}, fmt.Errorf("s3persist: the ownership record cannot be read; repair it, or set ForceTakeover if no other instance runs: %w", derr)
		}
		takeOver := force || prev.Released
		if !takeOver {
			if info.ETag != watched {
				watched, watchedAt = info.ETag, time.Now()
				l.log.Info("s3persist: the bucket prefix is owned by another instance; waiting for it to release it or for its lease to expire",
					"owner", prev.Instance, "owner_host", prev.Host, "lease", time.Duration(prev.LeaseMS)*time.Millisecond)
			}
			wait := max(l.ttl, time.Duration(prev.LeaseMS)*time.Millisecond)
			takeOver = time.Since(watchedAt) >= wait+wait/takeoverGraceDivisor
		}
		if takeOver {
			carried := ownerRecord{}
			if derr == nil {
				carried = ownerRecord{Floor: prev.Floor, Sealed: prev.Sealed}
			}
			err := l.put(ctx, carried, s3store.PutOptions{IfMatch: info.ETag})
			if err == nil {
				if !prev.Released && derr == nil {
					l.log.Warn("s3persist: took over the bucket prefix from an instance that did not release it",
						"previous_owner", prev.Instance, "previous_host", prev.Host, "forced", force)
				}
				return prev, nil
			}
			if !errors.Is(err, s3store.ErrPreconditionFailed) {
				return ownerRecord{}, err
			}
			continue // it renewed, or a third instance won: look again
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ownerRecord{}, fmt.Errorf("s3persist: the bucket prefix is owned by instance %s (host %q), which keeps renewing its lease; stop it, wait, or set ForceTakeover if it is gone: %w",
				prev.Instance, prev.Host, ctx.Err())
		case <-t.C:
		}
	}
}

// put writes the ownership record: base's Floor and Sealed (and Epoch, Released) with
// this instance's identity and the next renewal number. On success it extends the lease
// from the moment the request was sent.
func (l *lease) put(ctx context.Context, base ownerRecord, opts s3store.PutOptions) error {
	l.mu.Lock()
	rec := base
	rec.Format, rec.Instance, rec.Host = formatVersion, l.instance, l.host
	rec.LeaseMS = l.ttl.Milliseconds()
	rec.Renewal = l.rec.Renewal + 1
	l.mu.Unlock()
	data, err := encode(rec)
	if err != nil {
		return err
	}
	sent := time.Now()
	info, err := l.store.Put(ctx, keyOwner, data, opts)
	if err != nil {
		return fmt.Errorf("s3persist: write the ownership record: %w", err)
	}
	l.mu.Lock()
	l.rec, l.etag, l.deadline = rec, info.ETag, sent.Add(l.ttl)
	close(l.renewed)
	l.renewed = make(chan struct{})
	l.mu.Unlock()
	return nil
}

// renew extends the lease with an if-match put of the ownership record, carrying the
// current epoch and sealed segments. It returns ErrFenced (wrapped) if another instance
// owns the prefix; any other error leaves the lease as it was.
func (l *lease) renew(ctx context.Context) error {
	return l.update(ctx, func(r *ownerRecord) {})
}

// update renews the lease with the record changed by change.
func (l *lease) update(ctx context.Context, change func(*ownerRecord)) error {
	select {
	case l.renewSlot <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("s3persist: renew the ownership lease: %w", ctx.Err())
	}
	defer func() { <-l.renewSlot }()
	if err := l.fencedErr(); err != nil {
		return err
	}
	l.mu.Lock()
	next, etag := l.rec, l.etag
	if l.sealed != nil {
		next.Sealed = l.sealed()
	}
	l.mu.Unlock()
	change(&next)
	err := l.put(ctx, next, s3store.PutOptions{IfMatch: etag})
	if !errors.Is(err, s3store.ErrPreconditionFailed) {
		return err
	}
	// Someone else wrote it, or an earlier renewal of ours landed although its
	// response was lost: only the record can tell.
	data, info, gerr := l.store.Get(ctx, keyOwner)
	if gerr != nil && !errors.Is(gerr, s3store.ErrNotFound) {
		return fmt.Errorf("s3persist: read the ownership record after a failed renewal: %w", gerr)
	}
	var found ownerRecord
	if gerr == nil {
		if found, gerr = decodeOwner(keyOwner, data); gerr == nil && found.Instance == l.instance {
			l.mu.Lock()
			l.rec, l.etag = found, info.ETag
			l.mu.Unlock()
			return l.put(ctx, next, s3store.PutOptions{IfMatch: info.ETag})
		}
	}
	by := "the ownership record was deleted"
	if gerr == nil {
		by = fmt.Sprintf("instance %s (host %q) owns it now", found.Instance, found.Host)
	} else if !errors.Is(gerr, s3store.ErrNotFound) {
		by = fmt.Sprintf("the ownership record was replaced by one that cannot be read (%v)", gerr)
	}
	l.fence(by)
	return l.fencedErr()
}

// fence marks the instance fenced, once.
func (l *lease) fence(by string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fencedBy != "" {
		return
	}
	l.fencedBy = by
	close(l.fenced)
	l.log.Error("s3persist: fenced: another instance took over the bucket prefix; this instance writes nothing more", "found", by)
}

// fencedErr returns ErrFenced (wrapped with what was found) once fenced, else nil.
// Every call that changes state asks, so the common answer takes no lock: fence sets
// fencedBy before it closes the channel.
func (l *lease) fencedErr() error {
	select {
	case <-l.fenced:
	default:
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Errorf("%w (%s)", ErrFenced, l.fencedBy)
}

// writable returns the deadline by which a write must end. While the lease is expired it
// waits for a renewal, until ctx ends (ErrLeaseExpired); once fenced it returns ErrFenced.
func (l *lease) writable(ctx context.Context) (time.Time, error) {
	for {
		l.mu.Lock()
		fencedBy, deadline, renewed := l.fencedBy, l.deadline, l.renewed
		l.mu.Unlock()
		switch {
		case fencedBy != "":
			return time.Time{}, fmt.Errorf("%w (%s)", ErrFenced, fencedBy)
		case time.Now().Before(deadline):
			return deadline, nil
		}
		select {
		case <-renewed:
		case <-l.fenced:
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%w (it ended %v ago): %w", ErrLeaseExpired, time.Since(deadline).Round(time.Millisecond), ctx.Err())
		}
	}
}

// run renews the lease every third of its length; after a failed
// renewal it retries sooner. It runs until ctx ends or the instance is fenced.
func (l *lease) run(ctx context.Context) {
	every := l.ttl / 3
	wait := every
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-l.fenced:
			t.Stop()
			return
		case <-t.C:
		}
		// A renewal that takes longer than the lease extends nothing: it would end
		// after the lease it sets.
		rctx, cancel := context.WithTimeout(ctx, l.ttl)
		err := l.renew(rctx)
		cancel()
		switch {
		case err == nil:
			wait = every
		case errors.Is(err, ErrFenced):
			return
		default:
			wait = max(l.ttl/10, time.Millisecond)
			if ctx.Err() == nil {
				l.log.Warn("s3persist: could not renew the ownership lease; retrying", "err", err, "lease_ends_in", l.remaining())
			}
		}
	}
}

func (l *lease) remaining() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Until(l.deadline).Round(time.Millisecond)
}

// release marks the record released, so that the next instance need not wait.
func (l *lease) release(ctx context.Context) error {
	return l.update(ctx, func(r *ownerRecord) { r.Released = true })
}

// fencingStore is the Store every write of the instance goes through: a write starts
// only while the lease holds, and its context ends with the lease.
type fencingStore struct {
	s3store.Store
	l *lease
}

func (f *fencingStore) admit(ctx context.Context) (context.Context, context.CancelFunc, error) {
	deadline, err := f.l.writable(ctx)
	if err != nil {
		return ctx, func() {}, err
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	return ctx, cancel, nil
}

// Put implements s3store.Store.
func (f *fencingStore) Put(ctx context.Context, key string, data []byte, opts s3store.PutOptions) (s3store.ObjectInfo, error) {
	ctx, cancel, err := f.admit(ctx)
	defer cancel()
	if err != nil {
		return s3store.ObjectInfo{}, fmt.Errorf("s3persist: put %q: %w", key, err)
	}
	return f.Store.Put(ctx, key, data, opts)
}

// Delete implements s3store.Store.
func (f *fencingStore) Delete(ctx context.Context, key string) error {
	ctx, cancel, err := f.admit(ctx)
	defer cancel()
	if err != nil {
		return fmt.Errorf("s3persist: delete %q: %w", key, err)
	}
	return f.Store.Delete(ctx, key)
}

// DeleteMany implements s3store.Store.
func (f *fencingStore) DeleteMany(ctx context.Context, keys []string) error {
	ctx, cancel, err := f.admit(ctx)
	defer cancel()
	if err != nil {
		return &s3store.DeleteManyError{Remaining: keys, Total: len(keys), Err: fmt.Errorf("s3persist: delete many: %w", err)}
	}
	return f.Store.DeleteMany(ctx, keys)
}

// Close implements s3store.Store; the wrapped store belongs to Persistence.
func (f *fencingStore) Close() error { return nil }

// takeOwnership takes ownership of the prefix, checks that the store honours conditional
// writes, and starts the renewals. It returns the previous owner's record.
//
// The check runs once the prefix is owned, so that only an owner writes probe objects and
// its garbage collection can delete those a crash left behind. On a store without
// conditional writes no instance ever passes the check, so none ever runs as the owner
// whose record the acquisition could have overwritten.
func (p *Persistence) takeOwnership(ctx context.Context, store s3store.Store) (ownerRecord, error) {
	l, err := newLease(store, p.cfg.LeaseTTL, p.log)
	if err != nil {
		return ownerRecord{}, err
	}
	prev, err := l.acquire(ctx, p.cfg.ForceTakeover)
	if err != nil {
		return ownerRecord{}, err
	}
	if err := l.checkConditionalWrites(ctx); err != nil {
		if rerr := l.release(ctx); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return ownerRecord{}, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	p.lease, p.leaseCancel, p.leaseDone = l, cancel, make(chan struct{})
	go func() { // owned: stopLease ends it
		defer close(p.leaseDone)
		l.run(runCtx)
	}()
	return prev, nil
}

// seal records in the ownership record this instance's epoch as the journal floor and
// the journal segments of earlier epochs it loaded: a segment of an earlier epoch that
// is not listed was uploaded late by a fenced owner and must never be replayed. The
// renewals keep the list current as checkpoints delete segments.
func (p *Persistence) seal(ctx context.Context) error {
	epoch := p.seq.epoch()
	broken := p.brokenSegments
	p.lease.mu.Lock()
	p.lease.sealed = func() []string {
		var keys []string
		for _, k := range p.journal.durable() {
			if _, e, _, err := parseSegmentKey(k); err == nil && e < epoch {
				keys = append(keys, k)
			}
		}
		return append(keys, broken...)
	}
	p.lease.mu.Unlock()
	if err := p.lease.update(ctx, func(r *ownerRecord) { r.Epoch, r.Floor = epoch, epoch }); err != nil {
		return fmt.Errorf("s3persist: seal the journal: %w", err)
	}
	return nil
}

// stopLease stops the renewals and, if release is set and the instance was not fenced,
// marks the prefix released so that the next instance starts at once. The release is
// the last renewal: when it succeeds, everything this instance uploaded before belongs to
// the prefix's state. It returns ErrFenced (wrapped) if the instance is fenced; a release
// that fails otherwise is only logged.
func (p *Persistence) stopLease(ctx context.Context, release bool) error {
	p.leaseCancel()
	<-p.leaseDone
	if err := p.lease.fencedErr(); err != nil || !release {
		return err
	}
	err := p.lease.release(ctx)
	if errors.Is(err, ErrFenced) {
		return err
	}
	if err != nil {
		p.log.Warn("s3persist: could not release the bucket prefix; the next instance waits for the lease to expire", "err", err, "lease", p.cfg.LeaseTTL)
	}
	return nil
}

// Fenced returns a channel that is closed when another instance took over the bucket
// prefix. From then on this instance writes nothing and every call that changes state
// fails with ErrFenced; the host should stop the broker.
func (p *Persistence) Fenced() <-chan struct{} { return p.lease.fenced }

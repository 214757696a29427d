// Package s3persist keeps the persistent state of a VolantMQ MQTT broker (sessions, queued
// packets, retained messages) in an S3-compatible object store, so that a broker on a
// machine with no durable disk can be replaced and the new process finds every session.
//
// # Use
//
//	p, err := s3persist.New(ctx, s3persist.Config{
//		S3: s3store.MinioConfig{Endpoint: "s3.amazonaws.com", Region: "eu-west-1", Bucket: "broker-state"},
//		Prefix: "volantmq/",
//	})
//	...
//	srv, err := server.NewServer(server.Config{Persistence: p, ...})
//	...
//	defer p.Shutdown() // VolantMQ never calls it: the host program must.
//
// *Persistence implements vlpersistence.IFace. Every method follows the contract the
// broker relies on (docs in the shared volantmq-contract.md, tested by package
// persistencetest).
//
// # Durability
//
// This release writes through: a write method returns nil only after the object store
// has acknowledged every request the change needs, so a nil return means the change
// survives a crash of the process. A returned error means the change is not known to be
// durable: the store may or may not have applied it. A change that was applied in memory
// but could not be uploaded is uploaded again by the next write of the same object, by
// Flush and by Shutdown.
//
// # Memory
//
// The index of sessions (ids, state, and the names and sizes of their packet batches) is
// held in memory, so Exists, Count, PacketCount*, LoadForEach and reads of an empty queue
// make no request. Packet payloads are not: PacketsForEach* reads them from the store.
//
// # One writer
//
// The in-memory index is the truth for this process. Two processes writing the same
// bucket and prefix at once will overwrite each other's session records; run one broker
// per prefix.
package s3persist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"
	"golang.org/x/sync/errgroup"

	"github.com/s3persist/s3persist/s3store"
)

var _ vlpersistence.IFace = (*Persistence)(nil)

// maxIDLen is the longest client id MQTT allows (a two-byte length prefix).
const maxIDLen = 65535

// Config configures New. Exactly one of S3 and Store is set.
type Config struct {
	// S3 is the connection to an S3-compatible object store (endpoint, region, bucket,
	// credentials or the standard credential chain, TLS, whether to create the bucket).
	// New opens it and Shutdown closes it. Unused when Store is set.
	S3 s3store.MinioConfig

	// Store is an already built object store (the in-memory one, or any wrapper). When
	// set, S3 must be left zero; the caller owns the store and closes it after Shutdown.
	Store s3store.Store

	// Prefix is prepended to every key, so several brokers (or other data) can share a
	// bucket. Empty, or ending in "/". Default: "" (the whole bucket).
	Prefix string

	// CallTimeout bounds the storage work of one API call, retries of the S3 client
	// included. Default: 30s.
	CallTimeout time.Duration

	// LoadConcurrency is the number of requests New keeps in flight while it reads the
	// sessions, and Flush and Shutdown while they upload. Default: 32.
	LoadConcurrency int

	// ShutdownTimeout bounds Shutdown's final flush. Default: 20s (a Kubernetes pod gets
	// 30s between SIGTERM and SIGKILL).
	ShutdownTimeout time.Duration

	// Logger receives start-up, garbage-collection and error reports. Default: none.
	Logger *slog.Logger
}

// Defaults, applied by withDefaults.
const (
	DefaultCallTimeout     = 30 * time.Second
	DefaultLoadConcurrency = 32
	DefaultShutdownTimeout = 20 * time.Second
)

// Validate reports the first invalid field of c, by name. Zero durations and counts are
// valid: they mean the default.
func (c Config) Validate() error {
	// Not a struct comparison: S3.Transport may hold an incomparable RoundTripper.
	s3Set := c.S3.Endpoint != "" || c.S3.Bucket != ""
	switch {
	case c.Store == nil && !s3Set:
		return errors.New("s3persist: Config: set S3 (an S3 connection) or Store")
	case c.Store != nil && s3Set:
		return errors.New("s3persist: Config: S3 and Store are both set; set one")
	case c.Prefix != "" && !strings.HasSuffix(c.Prefix, "/"):
		return fmt.Errorf("s3persist: Config.Prefix %q must be empty or end in \"/\"", c.Prefix)
	case c.Prefix != "" && s3store.ValidateKey(c.Prefix+"x") != nil:
		return fmt.Errorf("s3persist: Config.Prefix %q: %v", c.Prefix, s3store.ValidateKey(c.Prefix+"x"))
	case len(c.Prefix) > 512:
		return fmt.Errorf("s3persist: Config.Prefix is %d bytes; at most 512 leave room for the layout's keys", len(c.Prefix))
	case c.CallTimeout < 0:
		return fmt.Errorf("s3persist: Config.CallTimeout %v is negative", c.CallTimeout)
	case c.LoadConcurrency < 0:
		return fmt.Errorf("s3persist: Config.LoadConcurrency %d is negative", c.LoadConcurrency)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("s3persist: Config.ShutdownTimeout %v is negative", c.ShutdownTimeout)
	}
	if s3Set {
		if err := c.S3.Validate(); err != nil {
			return fmt.Errorf("s3persist: Config.S3: %w", err)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.LoadConcurrency == 0 {
		c.LoadConcurrency = DefaultLoadConcurrency
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Persistence is a vlpersistence.IFace backed by an object store. Create it with New; it
// is safe for concurrent use.
type Persistence struct {
	cfg       Config
	store     s3store.Store // with Config.Prefix applied
	ownsStore s3store.Store // closed by Shutdown; nil when the caller owns the store
	log       *slog.Logger
	seq       *sequencer
	sys       vlpersistence.SystemState
	closed    atomic.Bool

	tableMu sync.RWMutex
	// table holds an entry per id that exists or has a change in flight (a deleted id's
	// entry stays until its deletion is durable, so that a new incarnation's uploads
	// queue behind the old one's). Guarded by tableMu.
	table map[string]*entry
	live  atomic.Int64 // entries with exists set: Count()

	retained retainedState

	handles struct {
		sessions sessions
		retained retained
		system   system
	}
}

// New opens the store, checks or initialises its layout, and loads the index of every
// session into memory. It fails with a clear error for wrong credentials, a missing
// bucket (unless Config.S3.CreateBucket), an unreachable endpoint, or a bucket written
// with a layout this release does not read. Corrupt session or batch objects do not make
// it fail: they are reported through LoadForEach and the log.
func New(ctx context.Context, cfg Config) (*Persistence, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	p := &Persistence{cfg: cfg, log: cfg.Logger, table: make(map[string]*entry)}
	store := cfg.Store
	if store == nil {
		m, err := s3store.NewMinio(ctx, cfg.S3)
		if err != nil {
			return nil, fmt.Errorf("s3persist: open bucket: %w", err)
		}
		store, p.ownsStore = m, m
	}
	p.store = store
	if cfg.Prefix != "" {
		prefixed, err := s3store.WithPrefix(store, cfg.Prefix)
		if err != nil {
			p.closeOwnedStore()
			return nil, fmt.Errorf("s3persist: %w", err)
		}
		p.store = prefixed
	}
	p.retained.p = p
	p.handles.sessions.p = p
	p.handles.retained.p = p
	p.handles.system.p = p
	if err := p.load(ctx); err != nil {
		p.closeOwnedStore()
		return nil, err
	}
	return p, nil
}

func (p *Persistence) closeOwnedStore() {
	if p.ownsStore != nil {
		_ = p.ownsStore.Close()
	}
}

// callContext bounds the storage work of one API call.
func (p *Persistence) callContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), p.cfg.CallTimeout)
}

// Sessions returns the sessions handle (I1). It fails only after Shutdown.
func (p *Persistence) Sessions() (vlpersistence.Sessions, error) {
	if p.closed.Load() {
		return nil, vlpersistence.ErrNotOpen
	}
	return &p.handles.sessions, nil
}

// Retained returns the retained-messages handle (I2). It fails only after Shutdown.
func (p *Persistence) Retained() (vlpersistence.Retained, error) {
	if p.closed.Load() {
		return nil, vlpersistence.ErrNotOpen
	}
	return &p.handles.retained, nil
}

// System returns the system handle (I3). It fails only after Shutdown.
func (p *Persistence) System() (vlpersistence.System, error) {
	if p.closed.Load() {
		return nil, vlpersistence.ErrNotOpen
	}
	return &p.handles.system, nil
}

// Flush makes every change accepted before it durable: when it returns nil, a crash
// loses nothing that any call before Flush returned nil for, nor any change that was
// applied in memory but failed to upload. Its error names what is not durable.
func (p *Persistence) Flush(ctx context.Context) error {
	if p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	return p.flush(ctx)
}

func (p *Persistence) flush(ctx context.Context) error {
	p.tableMu.RLock()
	var dirty []*entry
	for _, e := range p.table {
		e.mu.Lock()
		if e.record.dirty() || len(e.pendingDel) > 0 || e.record.inFlight != nil {
			dirty = append(dirty, e)
		}
		e.mu.Unlock()
	}
	p.tableMu.RUnlock()

	var (
		failMu sync.Mutex
		failed []string
		first  error
	)
	fail := func(what string, err error) {
		failMu.Lock()
		defer failMu.Unlock()
		failed = append(failed, what)
		if first == nil {
			first = err
		}
	}
	g := new(errgroup.Group)
	g.SetLimit(p.cfg.LoadConcurrency)
	g.Go(func() error {
		if err := p.retained.flush(ctx); err != nil {
			fail("the retained set", err)
		}
		return nil
	})
	for _, e := range dirty {
		g.Go(func() error {
			if err := e.flush(ctx, p); err != nil {
				fail(fmt.Sprintf("session %q", e.id), err)
			}
			return nil
		})
	}
	_ = g.Wait()
	if first != nil {
		slices.Sort(failed)
		const shown = 10
		names := strings.Join(failed[:min(len(failed), shown)], ", ")
		if len(failed) > shown {
			names += fmt.Sprintf(" and %d more", len(failed)-shown)
		}
		return fmt.Errorf("s3persist: flush: %d objects not durable (%s): %w", len(failed), names, first)
	}
	return nil
}

// Shutdown makes everything accepted durable within Config.ShutdownTimeout, releases the
// store, and returns nil (I4). If something could not be made durable in time it returns
// an error naming it. Afterwards every method returns vlpersistence.ErrNotOpen, a second
// Shutdown included (G9). Calls still running during Shutdown may fail.
func (p *Persistence) Shutdown() error {
	if !p.closed.CompareAndSwap(false, true) {
		return vlpersistence.ErrNotOpen
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout)
	defer cancel()
	start := time.Now()
	err := p.flush(ctx)
	p.closeOwnedStore()
	if err != nil {
		p.log.Error("s3persist: shutdown left changes that are not durable", "err", err)
		return fmt.Errorf("s3persist: shutdown: %w", err)
	}
	p.log.Info("s3persist: shut down", "sessions", p.live.Load(), "took", time.Since(start))
	return nil
}

// system is the System handle.
type system struct{ p *Persistence }

// GetInfo returns the layout version and the time the bucket prefix was initialised
// (Y1), both stable across restarts.
func (s *system) GetInfo() (*vlpersistence.SystemState, error) {
	if s.p.closed.Load() {
		return nil, vlpersistence.ErrNotOpen
	}
	info := s.p.sys
	return &info, nil
}

// retainedState is the retained set: held in memory, stored as one object.
type retainedState struct {
	p  *Persistence
	mu sync.Mutex
	// packets is the current set (copies, no nil elements); loadErr is set when the
	// object could not be read at New and nothing was stored since. Guarded by mu.
	packets []packetRecord
	loadErr error
	sync    serialSync
}

func (r *retainedState) upload(ctx context.Context, want uint64) error {
	return r.sync.await(ctx, &r.mu, want, func() func(context.Context) error {
		rec := retainedRecord{Format: formatVersion, Packets: r.packets}
		data, err := encode(rec)
		return func(ctx context.Context) error {
			if err != nil {
				return err
			}
			if _, err := r.p.store.Put(ctx, keyRetained, data, s3store.PutOptions{}); err != nil {
				return fmt.Errorf("s3persist: store retained set: %w", err)
			}
			return nil
		}
	})
}

func (r *retainedState) flush(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.sync.dirty() && r.sync.inFlight == nil {
		return nil
	}
	return r.upload(ctx, r.sync.version)
}

// retained is the Retained handle.
type retained struct{ p *Persistence }

// Store replaces the whole retained set with one object put (R1: readers see the old or
// the new set, never a mix). Nil elements are skipped; order and duplicates are kept.
// Durable when it returns nil.
func (r *retained) Store(list []*vlpersistence.PersistedPacket) error {
	if r.p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	packets := make([]packetRecord, 0, len(list))
	for _, pk := range list {
		if pk != nil {
			packets = append(packets, packetRecord{ExpireAt: []byte(pk.ExpireAt), Data: clone(pk.Data)})
		}
	}
	return r.replace(packets)
}

// Wipe empties the retained set (R3). Idempotent; durable when it returns nil.
func (r *retained) Wipe() error {
	if r.p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	return r.replace(nil)
}

func (r *retained) replace(packets []packetRecord) error {
	st := &r.p.retained
	ctx, cancel := r.p.callContext()
	defer cancel()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.packets, st.loadErr = packets, nil
	return st.upload(ctx, st.sync.changed())
}

// Load returns the last stored set in order, as fresh copies (R2). Nothing stored gives
// an empty set. If the object could not be read or decoded at New (and nothing was
// stored since), that error is returned: the broker then refuses to start rather than
// start without its retained messages; delete or repair the object named in the error.
func (r *retained) Load() ([]*vlpersistence.PersistedPacket, error) {
	if r.p.closed.Load() {
		return nil, vlpersistence.ErrNotOpen
	}
	st := &r.p.retained
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.loadErr != nil {
		return nil, st.loadErr
	}
	out := make([]*vlpersistence.PersistedPacket, 0, len(st.packets))
	for _, pr := range st.packets {
		out = append(out, &vlpersistence.PersistedPacket{ExpireAt: string(pr.ExpireAt), Data: clone(pr.Data)})
	}
	return out, nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

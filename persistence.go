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
// Config.Durability chooses between two modes. In Async (the default) a call that
// changes state returns once the change is applied in memory and appended to the
// journal; it is durable within Config.FlushInterval plus the upload time, and a crash
// loses at most the changes of that window. In Sync a call returns only when its change
// is durable; concurrent callers share uploads (group commit). In both modes Flush and
// Shutdown make everything accepted durable, and Retained().Store writes through.
//
// # Cost
//
// Changes of many sessions travel together in journal segments, so the number of
// requests does not grow with the number of sessions. A background checkpoint moves the
// packets still queued into packs shared by many sessions (or, for a session with many,
// an object of its own), writes what changed into one index delta (merging the deltas
// into the base shards every few checkpoints), and deletes the journal segments it
// covered: its cost follows the bytes and the sessions that changed. The index of
// sessions, their state and the payloads not yet checkpointed are held in memory;
// checkpointed payloads are held in a byte-bounded cache and read back from their
// batches when it misses.
//
// # One writer
//
// The in-memory index is the truth for this process, so one instance at a time may write
// a bucket prefix. New takes ownership of the prefix with conditional writes: while
// another instance holds it, New waits until that instance shuts down (Shutdown releases
// it) or its lease (Config.LeaseTTL) expires, unless Config.ForceTakeover is set. An
// instance that lost ownership is fenced: it writes nothing more, every call that
// changes state fails with ErrFenced, and Fenced is closed (fence.go has the details).
package s3persist

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist/batching"
	"github.com/s3persist/s3persist/cache"
	"github.com/s3persist/s3persist/s3store"
)

var _ vlpersistence.IFace = (*Persistence)(nil)

// maxIDLen is the longest client id MQTT allows (a two-byte length prefix).
const maxIDLen = 65535

// Config configures New. Exactly one of S3 and Store is set.
type Config struct {
	// S3 is the connection to an S3-compatible object store (endpoint, region, bucket,
	// credentials or the standard credential chain, TLS, server-side encryption, whether
	// to create the bucket). New opens it, with S3.CheckPrefix set to Prefix unless set,
	// and Shutdown closes it. Unused when Store is set.
	S3 s3store.MinioConfig

	// Store is an already built object store (the in-memory one, or any wrapper). When
	// set, S3 must be left zero; the caller owns the store and closes it after Shutdown.
	Store s3store.Store

	// Prefix is prepended to every key, so several brokers (or other data) can share a
	// bucket. Empty, or ending in "/". Default: "" (the whole bucket).
	Prefix string

	// Durability is Async (the default) or Sync; see the package documentation.
	Durability Durability

	// FlushInterval is the longest a change waits in memory before its journal segment
	// starts uploading, in Async mode: with the upload time, the window a crash can
	// lose. Each journal stream uploads at most once per interval when traffic is light,
	// so it also sets the request floor: JournalStreams/FlushInterval PUTs a second.
	// Default: 1s.
	FlushInterval time.Duration

	// BatchBytes is the largest journal segment, in bytes of records. Default: 8 MiB.
	BatchBytes int

	// MaxPendingBytes bounds the journal records accepted but not yet durable; what a
	// call that would go past it does is WhenStoreIsBehind's choice. Default: 64 MiB.
	MaxPendingBytes int64

	// WhenStoreIsBehind is what a call that changes a session does when MaxPendingBytes
	// of changes already wait for the store (it is down, or slower than the traffic).
	// FailAtOnce fails the call at once with an error wrapping ErrStoreBehind: the
	// broker stays responsive and the change is not accepted. WaitForRoom waits until
	// the store catches up, at most CallTimeout, holding the session's lock: VolantMQ
	// routes every message through two goroutines, so an outage then stalls the whole
	// broker. Either way nothing already accepted is lost. Default: FailAtOnce.
	WhenStoreIsBehind Backpressure

	// JournalStreams is the number of journal streams: uploads of different streams run
	// side by side, those of one stream one at a time, in order. In Async mode each
	// stream with traffic uploads about once per FlushInterval, so more streams cost
	// requests; in Sync mode every call starts an upload of its own stream when it is
	// idle, and more streams let concurrent callers share fewer waits (64 streams serve
	// 64 callers in about one round trip each; 16 make about 0.6 of the requests at 0.65
	// of the throughput). Default: 4 in Async, 64 in Sync.
	JournalStreams int

	// CheckpointBytes starts a checkpoint when the payloads held only by the journal, or
	// the durable journal segments that no checkpoint has covered yet, reach it. Default:
	// 32 MiB.
	CheckpointBytes int64

	// CheckpointSegments starts a checkpoint when this many durable journal segments are
	// not covered by one yet. A start-up reads and replays every such segment, so this
	// bounds it in every mode: Sync calls make a segment each (or a few calls share one)
	// and may carry no payload for CheckpointBytes to count. A checkpoint costs a few
	// PUTs (an index delta, a pack per 8 MiB of payloads, an object per session with
	// 64 KiB of them) and, once the deltas have grown (IndexMergeDeltas), a merge of up
	// to 256 index shards, so a low value costs requests. Default: 500.
	CheckpointSegments int

	// CheckpointInterval starts a checkpoint this long after the last one when anything
	// changed, bounding how much journal a restart replays when traffic is light. Each
	// checkpoint costs a few PUTs (see CheckpointSegments), so short intervals cost
	// requests. Default: 5m.
	CheckpointInterval time.Duration

	// IndexMergeDeltas is how many index deltas may be live before a checkpoint merges
	// them into the base index shards (it also merges when the deltas weigh as much as
	// the base shards). Fewer make start-ups read and decode less and checkpoints write
	// more: a merge rewrites up to 256 shards holding every session (docs/layout.md,
	// "Cost"). Default: 8.
	IndexMergeDeltas int

	// MaxPinnedBytes bounds the payloads of stored packets that only the journal holds,
	// until a checkpoint moves them out (normally at CheckpointBytes). When checkpoints
	// fail or lag, a call that would go past it does what WhenStoreIsBehind says:
	// FailAtOnce fails it with an error wrapping ErrCheckpointsBehind, WaitForRoom waits
	// for a checkpoint, at most CallTimeout. At least CheckpointBytes. Default: 256 MiB.
	MaxPinnedBytes int64

	// CheckpointTimeout bounds one checkpoint. Default: 2m.
	CheckpointTimeout time.Duration

	// CacheBytes bounds the payloads of checkpointed packets held in memory; beyond it,
	// the least recently used are read back from their batch objects. Default: 64 MiB.
	CacheBytes int64

	// CallTimeout bounds the storage work of one API call: in Sync mode the wait for
	// durability, in both modes the wait for room in the journal (WaitForRoom) and the
	// reads of packets. Default: 30s.
	CallTimeout time.Duration

	// LoadConcurrency is the number of requests New keeps in flight while it reads the
	// index, and a checkpoint while it writes. New reads journal segments four times as
	// many at once (they are small and, in Sync mode, numerous), with at most 64 MiB of
	// them in flight. Default: 32.
	LoadConcurrency int

	// ShutdownTimeout bounds Shutdown's final flush. Default: 20s (a Kubernetes pod gets
	// 30s between SIGTERM and SIGKILL).
	ShutdownTimeout time.Duration

	// LeaseTTL is the ownership lease (see "One writer" in the package documentation):
	// the instance renews it every third of it, and stops writing when it could not renew
	// for this long. A new instance whose predecessor did not shut down waits this long
	// (plus a tenth) after the predecessor's last renewal before it takes over. Longer
	// leases survive longer store hiccups; shorter ones let a replacement start sooner
	// after a crash. Default: 15s; at least 50ms.
	LeaseTTL time.Duration

	// ForceTakeover makes New take the bucket prefix at once, without waiting for the
	// current owner to release it or for its lease to expire. Use it only when that
	// owner is known to be gone (its machine was destroyed): if it still runs, it is
	// fenced at its next renewal (within LeaseTTL/3), and the changes it accepted until
	// then, Sync calls that returned included, are not part of the new owner's state.
	// Default: false.
	ForceTakeover bool

	// Logger receives start-up, checkpoint, garbage-collection and error reports.
	// Default: none.
	Logger *slog.Logger
}

// Durability says when a call that changes state returns; see the package
// documentation.
type Durability int

const (
	// Async: a call returns once its change is in memory and journaled; durable within
	// FlushInterval plus upload time.
	Async Durability = iota
	// Sync: a call returns once its change is durable.
	Sync
)

func (d Durability) String() string {
	switch d {
	case Async:
		return "Async"
	case Sync:
		return "Sync"
	}
	return fmt.Sprintf("Durability(%d)", int(d))
}

// Backpressure is what a call does when the journal is full; see
// Config.WhenStoreIsBehind.
type Backpressure int

const (
	// FailAtOnce: the call fails at once with an error wrapping ErrStoreBehind.
	FailAtOnce Backpressure = iota
	// WaitForRoom: the call waits for room, at most CallTimeout.
	WaitForRoom
)

func (b Backpressure) String() string {
	switch b {
	case FailAtOnce:
		return "FailAtOnce"
	case WaitForRoom:
		return "WaitForRoom"
	}
	return fmt.Sprintf("Backpressure(%d)", int(b))
}

// ErrStoreBehind is wrapped by the error of a call refused because MaxPendingBytes of
// changes already wait for the store (Config.WhenStoreIsBehind is FailAtOnce). The call
// changed nothing; everything accepted before it is kept and uploaded when the store
// answers again.
var ErrStoreBehind = errors.New("s3persist: the object store is behind: MaxPendingBytes of changes wait for it")

// Defaults, applied by withDefaults.
const (
	DefaultFlushInterval      = time.Second
	DefaultBatchBytes         = 8 << 20
	DefaultMaxPendingBytes    = 64 << 20
	DefaultJournalStreams     = 4  // Async
	DefaultSyncJournalStreams = 64 // Sync
	DefaultCheckpointBytes    = 32 << 20
	DefaultCheckpointInterval = 5 * time.Minute
	DefaultCheckpointSegments = 500
	DefaultMaxPinnedBytes     = 256 << 20
	DefaultIndexMergeDeltas   = 8
	DefaultCheckpointTimeout  = 2 * time.Minute
	DefaultCacheBytes         = 64 << 20
	DefaultCallTimeout        = 30 * time.Second
	DefaultLoadConcurrency    = 32
	DefaultShutdownTimeout    = 20 * time.Second
	DefaultLeaseTTL           = 15 * time.Second
	MinLeaseTTL               = 50 * time.Millisecond
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
	case c.Durability != Async && c.Durability != Sync:
		return fmt.Errorf("s3persist: Config.Durability %v is neither Async nor Sync", c.Durability)
	case c.WhenStoreIsBehind != FailAtOnce && c.WhenStoreIsBehind != WaitForRoom:
		return fmt.Errorf("s3persist: Config.WhenStoreIsBehind %v is neither FailAtOnce nor WaitForRoom", c.WhenStoreIsBehind)
	case c.FlushInterval < 0:
		return fmt.Errorf("s3persist: Config.FlushInterval %v is negative", c.FlushInterval)
	case c.BatchBytes < 0:
		return fmt.Errorf("s3persist: Config.BatchBytes %d is negative", c.BatchBytes)
	case c.MaxPendingBytes < 0:
		return fmt.Errorf("s3persist: Config.MaxPendingBytes %d is negative", c.MaxPendingBytes)
	case c.MaxPendingBytes != 0 && c.MaxPendingBytes < int64(cmp.Or(c.BatchBytes, DefaultBatchBytes)):
		return fmt.Errorf("s3persist: Config.MaxPendingBytes %d is below BatchBytes (%d): no segment could fill", c.MaxPendingBytes, cmp.Or(c.BatchBytes, DefaultBatchBytes))
	case c.JournalStreams < 0 || c.JournalStreams > numShards:
		return fmt.Errorf("s3persist: Config.JournalStreams %d is outside 0..%d", c.JournalStreams, numShards)
	case c.CheckpointBytes < 0:
		return fmt.Errorf("s3persist: Config.CheckpointBytes %d is negative", c.CheckpointBytes)
	case c.IndexMergeDeltas < 0:
		return fmt.Errorf("s3persist: Config.IndexMergeDeltas %d is negative", c.IndexMergeDeltas)
	case c.MaxPinnedBytes < 0:
		return fmt.Errorf("s3persist: Config.MaxPinnedBytes %d is negative", c.MaxPinnedBytes)
	case c.MaxPinnedBytes != 0 && c.MaxPinnedBytes < cmp.Or(c.CheckpointBytes, DefaultCheckpointBytes):
		return fmt.Errorf("s3persist: Config.MaxPinnedBytes %d is below CheckpointBytes (%d): no checkpoint would start before calls are refused", c.MaxPinnedBytes, cmp.Or(c.CheckpointBytes, DefaultCheckpointBytes))
	case c.CheckpointSegments < 0:
		return fmt.Errorf("s3persist: Config.CheckpointSegments %d is negative", c.CheckpointSegments)
	case c.CheckpointInterval < 0:
		return fmt.Errorf("s3persist: Config.CheckpointInterval %v is negative", c.CheckpointInterval)
	case c.CheckpointTimeout < 0:
		return fmt.Errorf("s3persist: Config.CheckpointTimeout %v is negative", c.CheckpointTimeout)
	case c.CacheBytes < 0:
		return fmt.Errorf("s3persist: Config.CacheBytes %d is negative", c.CacheBytes)
	case c.CallTimeout < 0:
		return fmt.Errorf("s3persist: Config.CallTimeout %v is negative", c.CallTimeout)
	case c.LoadConcurrency < 0:
		return fmt.Errorf("s3persist: Config.LoadConcurrency %d is negative", c.LoadConcurrency)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("s3persist: Config.ShutdownTimeout %v is negative", c.ShutdownTimeout)
	case c.LeaseTTL != 0 && c.LeaseTTL < MinLeaseTTL:
		return fmt.Errorf("s3persist: Config.LeaseTTL %v is below %v", c.LeaseTTL, MinLeaseTTL)
	}
	if s3Set {
		if err := c.S3.Validate(); err != nil {
			return fmt.Errorf("s3persist: Config.S3: %w", err)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = DefaultBatchBytes
	}
	if c.MaxPendingBytes == 0 {
		c.MaxPendingBytes = max(DefaultMaxPendingBytes, int64(c.BatchBytes))
	}
	if c.JournalStreams == 0 {
		c.JournalStreams = DefaultJournalStreams
		if c.Durability == Sync {
			c.JournalStreams = DefaultSyncJournalStreams
		}
	}
	if c.CheckpointBytes == 0 {
		c.CheckpointBytes = DefaultCheckpointBytes
	}
	if c.CheckpointSegments == 0 {
		c.CheckpointSegments = DefaultCheckpointSegments
	}
	if c.IndexMergeDeltas == 0 {
		c.IndexMergeDeltas = DefaultIndexMergeDeltas
	}
	if c.MaxPinnedBytes == 0 {
		c.MaxPinnedBytes = max(DefaultMaxPinnedBytes, c.CheckpointBytes)
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.CheckpointTimeout == 0 {
		c.CheckpointTimeout = DefaultCheckpointTimeout
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = DefaultCacheBytes
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.LoadConcurrency == 0 {
		c.LoadConcurrency = DefaultLoadConcurrency
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
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
	// shuttingDown is set by BeginShutdown: Sync calls stop waiting for their records.
	shuttingDown atomic.Bool
	journal      *journal
	records      recordJournal                     // the journal, as commit appends to it
	cache        *cache.LRU[uint64, *queuedPacket] // payloads of checkpointed packets, by number
	lease        *lease
	leaseCancel  context.CancelFunc // stops the renewals (after Shutdown's last write)
	leaseDone    chan struct{}      // closed when the renewals stopped

	// brokenSegments are journal segments that could not be decoded at New: they stay
	// sealed (valid, left for an operator). Set before New returns.
	brokenSegments []string
	// keepSessionRecords is set when New rebuilt a shard of a layout-2 bucket from
	// session records: the garbage collection leaves them for the next start.
	keepSessionRecords bool

	tableMu sync.RWMutex
	// table holds an entry per id that exists. Guarded by tableMu.
	table map[string]*entry
	live  atomic.Int64 // entries with exists set: Count()

	pinned     pinnedBudget         // payload bytes only the journal holds
	dirtyLists [numShards]dirtyList // sessions the next checkpoint writes to the index
	index      indexState           // the index objects in the bucket; guarded by ckptMu
	ckptMu     sync.Mutex           // one checkpoint (or garbage collection) at a time
	ckptKick   chan struct{}        // asks the checkpointer for a checkpoint
	gcDone     chan struct{}        // closed when the garbage collection after start ends

	garbageMu sync.Mutex
	// Objects to delete once the index no longer names them. Guarded by garbageMu.
	garbage []string
	unsure  []unsureBatch // batch objects whose put had an unknown outcome

	// stopping is closed when Shutdown begins: background work stops starting new steps.
	// bgCtx ends when Shutdown's deadline passes (or at once after the background work
	// stopped), cancelling requests still in flight; bg counts the goroutines to wait for.
	stopping chan struct{}
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	stats struct{ checkpoints, checkpointFailures, merges atomic.Int64 }

	retained retainedState

	handles struct {
		sessions sessions
		retained retained
		system   system
	}
}

// New opens the store, checks or initialises its layout, loads the index of every
// session and replays the journal. It fails with a clear error for wrong credentials, a
// missing bucket (unless Config.S3.CreateBucket), an unreachable endpoint, a bucket
// written with a layout this release neither reads nor converts (it converts layout 2),
// or an index object that cannot be decoded: the error names it and wraps
// vlpersistence.ErrBrokenEntry, and nothing is changed (docs/layout.md, "Recovery").
// Other corrupt objects do not make it fail: the reads that need them report them, and so
// does the log.
func New(ctx context.Context, cfg Config) (*Persistence, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	p := &Persistence{cfg: cfg, log: cfg.Logger, table: make(map[string]*entry), ckptKick: make(chan struct{}, 1), gcDone: make(chan struct{}), stopping: make(chan struct{})}
	p.pinned.max, p.pinned.kick = cfg.MaxPinnedBytes, p.kickCheckpoint
	var err error
	if p.cache, err = cache.New[uint64, *queuedPacket](cache.Config{MaxBytes: cfg.CacheBytes}); err != nil {
		return nil, fmt.Errorf("s3persist: %w", err)
	}
	store := cfg.Store
	if store == nil {
		s3cfg := cfg.S3
		if s3cfg.CheckPrefix == "" {
			// The bucket check then needs only what a policy scoped to Prefix allows.
			s3cfg.CheckPrefix = cfg.Prefix
		}
		m, err := s3store.NewMinio(ctx, s3cfg)
		if err != nil {
			return nil, fmt.Errorf("s3persist: open bucket: %w", err)
		}
		store, p.ownsStore = m, m
	}
	prefixed := store
	if cfg.Prefix != "" {
		if prefixed, err = s3store.WithPrefix(store, cfg.Prefix); err != nil {
			p.closeOwnedStore()
			return nil, fmt.Errorf("s3persist: %w", err)
		}
	}
	p.retained.p = p
	p.handles.sessions.p = p
	p.handles.retained.p = p
	p.handles.system.p = p
	prev, err := p.takeOwnership(ctx, prefixed)
	if err != nil {
		p.closeOwnedStore()
		return nil, err
	}
	p.store = &fencingStore{Store: prefixed, l: p.lease}
	segments, err := p.load(ctx, prev)
	if err == nil {
		p.journal, err = newJournal(p.store, p.seq.epoch(), cfg, segments)
		p.records = p.journal
	}
	if err == nil {
		err = p.seal(ctx)
	}
	if err != nil {
		if p.journal != nil {
			// Nothing was journaled yet: Close only stops the batcher's goroutines.
			_ = p.journal.b.Close(ctx)
		}
		_ = p.stopLease(ctx, true)
		p.closeOwnedStore()
		return nil, err
	}
	p.bgCtx, p.bgCancel = context.WithCancel(context.Background())
	p.bg.Add(2)
	go p.runCheckpointer()
	go p.collectGarbage()
	if len(segments) > 0 {
		p.kickCheckpoint() // the replayed journal pins its payloads until checkpointed
	}
	return p, nil
}

func (p *Persistence) closeOwnedStore() {
	if p.ownsStore != nil {
		_ = p.ownsStore.Close()
	}
}

// writeContext bounds a call that only journals a change. Such a call can wait only in
// Sync mode (for durability) or with WaitForRoom (for room in the journal); otherwise
// nothing in it can block, and it goes without a timer: the hot path of Async mode.
func (p *Persistence) writeContext() (context.Context, context.CancelFunc) {
	if !p.syncing() && p.cfg.WhenStoreIsBehind == FailAtOnce {
		return context.Background(), func() {}
	}
	return p.callContext()
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
// loses nothing that any call before Flush returned nil for. It ends with a renewal of
// the ownership lease, so that nil also means that no other instance took the prefix
// over before these changes landed (fence.go). Its error says how much is
// not durable. It does not wait for a checkpoint: the journal is durable state.
func (p *Persistence) Flush(ctx context.Context) error {
	if p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	if err := errors.Join(p.journal.b.Flush(ctx), p.retained.flush(ctx)); err != nil {
		return fmt.Errorf("s3persist: flush: %w", err)
	}
	// Everything is uploaded; it counts only if this instance still owns the prefix: an
	// instance that took over after these uploads landed has them, one that took over
	// before may not (fence.go). A renewal after the uploads settles it.
	if err := p.lease.renew(ctx); err != nil {
		return fmt.Errorf("s3persist: flush: ownership not confirmed after the uploads: %w", err)
	}
	return nil
}

// Checkpoint runs a checkpoint now (see the package documentation) and returns when it
// is done. The background checkpointer does this by itself; tools and tests call it to
// bound the journal at a known moment.
func (p *Persistence) Checkpoint(ctx context.Context) error {
	if p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	return p.checkpoint(ctx)
}

// BeginShutdown tells a Sync instance that the broker is stopping. From then on its
// calls no longer wait for their changes to be durable: they return as in Async mode,
// and Shutdown makes all of them durable together, in a few segments, instead of one
// round trip each. Call it just before the broker's own shutdown (VolantMQ stores every
// session while it stops: 10,000 sessions cost 10,000 round trips in Sync mode, far more
// than a pod's grace period).
//
// What it costs: a crash between BeginShutdown and the end of Shutdown loses the changes
// made in that window that were not durable yet, as in Async mode (at most what the
// journal holds, FlushInterval's worth unless the store is slow). A change made before
// BeginShutdown keeps its guarantee: a Sync call that returned nil before it is durable.
// Calls waiting for durability when BeginShutdown is called keep waiting. Calling it in
// Async mode, or more than once, does nothing more. It never fails.
func (p *Persistence) BeginShutdown() {
	if p.cfg.Durability == Sync && p.shuttingDown.CompareAndSwap(false, true) {
		p.log.Info("s3persist: shutdown begun: Sync calls now return before their changes are durable; Shutdown makes them durable")
	}
}

// Shutdown makes everything accepted durable within Config.ShutdownTimeout, stops the
// background work, releases the store, and returns nil (I4). If something could not be
// made durable in time it returns an error saying how much. Afterwards every method
// returns vlpersistence.ErrNotOpen, a second Shutdown included (G9). It never hangs
// beyond the timeout plus the end of requests in flight.
func (p *Persistence) Shutdown() error {
	if !p.closed.CompareAndSwap(false, true) {
		return vlpersistence.ErrNotOpen
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout)
	defer cancel()
	start := time.Now()
	// A checkpoint in flight starts no more requests and fails (see stopRequested); the
	// requests it has in flight finish, within the deadline, since a cut PUT could still
	// land after Shutdown returned. The journal is flushed at the same time: it holds
	// every change, and the next start replays what the checkpoint did not cover.
	close(p.stopping)
	journalClosed := make(chan error, 1)
	go func() { journalClosed <- p.journal.b.Close(ctx) }() // owned: awaited below
	stopped := make(chan struct{})
	go func() { p.bg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		p.bgCancel()
		<-stopped
	}
	p.bgCancel()
	err := <-journalClosed
	if err != nil {
		st := p.journal.b.Stats()
		err = fmt.Errorf("%d journaled changes (%d bytes) of sessions are not durable and are lost with this process: %w",
			st.PendingItems, st.PendingBytes, err)
	}
	err = errors.Join(err, p.retained.flush(ctx))
	if ferr := p.stopLease(ctx, true); ferr != nil {
		err = errors.Join(err, fmt.Errorf("what this instance wrote may be void for the new owner: %w", ferr))
	}
	p.closeOwnedStore()
	if err != nil {
		p.log.Error("s3persist: shutdown left changes that are not durable", "err", err)
		return fmt.Errorf("s3persist: shutdown: %w", err)
	}
	p.log.Info("s3persist: shut down", "sessions", p.live.Load(), "took", time.Since(start))
	return nil
}

// Stats are counters of a Persistence, for monitoring and benchmarks.
type Stats struct {
	Sessions    int64
	PinnedBytes int64 // payloads only the journal holds (not checkpointed yet)
	// UncoveredSegments and UncoveredBytes are the durable journal segments no
	// checkpoint has covered yet, and their size: what a restart would read and replay.
	UncoveredSegments  int
	UncoveredBytes     int64
	Journal            batching.Stats
	Cache              cache.Stats
	Checkpoints        int64
	CheckpointFailures int64
	// IndexMerges counts the checkpoints that rewrote base index shards instead of
	// writing a delta (docs/layout.md).
	IndexMerges int64
}

// Stats returns the counters.
func (p *Persistence) Stats() Stats {
	segments, bytes := p.journal.uncovered()
	return Stats{
		Sessions:           p.live.Load(),
		PinnedBytes:        p.pinned.used.Load(),
		UncoveredSegments:  segments,
		UncoveredBytes:     bytes,
		Journal:            p.journal.b.Stats(),
		Cache:              p.cache.Stats(),
		Checkpoints:        p.stats.checkpoints.Load(),
		CheckpointFailures: p.stats.checkpointFailures.Load(),
		IndexMerges:        p.stats.merges.Load(),
	}
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
			// The set replaces the whole object: confirm first that no other instance
			// owns the prefix, whose set this would overwrite.
			if err := r.p.lease.renew(ctx); err != nil {
				return fmt.Errorf("s3persist: store retained set: %w", err)
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

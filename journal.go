package s3persist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/s3persist/s3persist/batching"
	"github.com/s3persist/s3persist/s3store"
)

// journal writes journal records as segment objects through a write-behind batcher: one
// stream per batcher key, whose segments land in order, while streams upload side by side
// (see add for how a session's records keep their order across streams).
type journal struct {
	store     s3store.Store
	epoch     uint64
	streams   int
	b         *batching.Batcher[int, []byte]
	uploadLog *rateLimitedLog // failed uploads: every attempt is retried, the log says why

	// checkpointDue is set while the durable segments no checkpoint has covered yet
	// reach CheckpointSegments in number or CheckpointBytes in size: they are what the
	// next New must read and replay. commit starts a checkpoint while it is set, so a
	// start-up's reads stay bounded whatever the mode. (The journal does not start one
	// itself when an upload ends: the background checkpointer starts only from calls,
	// its interval and New, which the simulation relies on.)
	checkpointDue atomic.Bool
	maxSegments   int
	maxBytes      int64

	mu sync.Mutex
	// segments are the durable segments no checkpoint has covered yet, in the order they
	// became durable; bytes is the sum of their sizes. Guarded by mu.
	segments []durableSegment
	bytes    int64
}

// durableSegment is a segment no checkpoint has covered yet. size is 0 for a segment
// replayed at New: the checkpoint New starts covers it.
type durableSegment struct {
	key  string
	size int64
}

// newJournal returns the journal of an instance. segments are the keys of the durable
// segments New replayed.
func newJournal(store s3store.Store, epoch uint64, cfg Config, segments []string) (*journal, error) {
	j := &journal{store: store, epoch: epoch, streams: cfg.JournalStreams,
		maxSegments: cfg.CheckpointSegments, maxBytes: cfg.CheckpointBytes,
		uploadLog: &rateLimitedLog{log: cfg.Logger, every: uploadErrorLogInterval}}
	for _, k := range segments {
		j.segments = append(j.segments, durableSegment{key: k})
	}
	b, err := batching.New(batching.Config{
		BatchBytes:           cfg.BatchBytes,
		FlushInterval:        cfg.FlushInterval,
		MaxPendingBytes:      cfg.MaxPendingBytes,
		FailWhenFull:         cfg.WhenStoreIsBehind == FailAtOnce,
		MaxConcurrentUploads: cfg.JournalStreams,
		UploadTimeout:        cfg.CallTimeout,
		// A fenced instance never writes again: retrying would only delay the error.
		Retryable: func(err error) bool { return !errors.Is(err, ErrFenced) },
	}, j.upload)
	if err != nil {
		return nil, fmt.Errorf("s3persist: journal: %w", err)
	}
	j.b = b
	return j, nil
}

// add appends an encoded record of a session to a stream and returns its ticket and the
// stream. prev and prevStream are the ticket and stream of the session's previous record
// in this process (the zero ticket if none). The stream is that of the session's previous
// record while that record is not durable; otherwise, for an urgent (Sync) record, the
// first idle stream from hh's on (else hh's), so that concurrent callers of different
// sessions start uploads at once instead of queueing behind one another, and for any
// other record the stream of shard hh. An urgent record's batch starts uploading as soon
// as its stream is idle (group commit).
//
// Either way, a session's records become durable in the order they were made: the
// segments of one stream land in order, and a record moves to another stream only once
// every earlier record of its session is durable. So a Sync call that returned nil
// never depends on an earlier record of its session that a crash could still lose
// (docs/layout.md, "Recovery"); and after BeginShutdown, when Sync records stop being
// urgent, a session whose last record went to an idle stream keeps to it until it lands.
func (j *journal) add(ctx context.Context, hh int, prev batching.Ticket, prevStream int, rec []byte, urgent bool) (batching.Ticket, int, error) {
	stream := hh % j.streams
	switch {
	case prev != (batching.Ticket{}) && !prev.Durable():
		stream = prevStream
	case !urgent:
	default:
		for i := range j.streams {
			if k := (stream + i) % j.streams; j.b.Idle(k) {
				stream = k
				break
			}
		}
	}
	t, err := j.b.Add(ctx, stream, rec, len(rec), urgent)
	if errors.Is(err, batching.ErrFull) {
		err = fmt.Errorf("%w (%v)", ErrStoreBehind, err)
	}
	return t, stream, err
}

// upload writes one segment. A retry of the same batch writes the same key, so an upload
// whose first attempt did land is harmless.
func (j *journal) upload(ctx context.Context, b batching.Batch[int, []byte]) error {
	data := encodeSegment(b.Items)
	key := segmentKey(b.Key, j.epoch, b.Seq)
	if _, err := j.store.Put(ctx, key, data, s3store.PutOptions{}); err != nil {
		if !errors.Is(err, ErrFenced) {
			j.uploadLog.error("s3persist: a journal segment could not be uploaded; it is retried until it is, and the changes it holds are not durable until then",
				slog.String("key", key), slog.Int("records", len(b.Items)), slog.Any("err", err))
		}
		return fmt.Errorf("s3persist: write journal segment: %w", err)
	}
	uploadBuffers.put(data)
	j.mu.Lock()
	j.segments = append(j.segments, durableSegment{key: key, size: int64(len(data))})
	j.bytes += int64(len(data))
	j.checkpointDue.Store(j.overBound())
	j.mu.Unlock()
	return nil
}

// durable returns the keys of the durable segments not covered yet.
func (j *journal) durable() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	keys := make([]string, len(j.segments))
	for i, s := range j.segments {
		keys[i] = s.key
	}
	return keys
}

// uncovered returns the number and size of the durable segments not covered yet.
func (j *journal) uncovered() (int, int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.segments), j.bytes
}

// covered forgets segments that a checkpoint covered and deleted.
func (j *journal) covered(keys []string) {
	gone := make(map[string]bool, len(keys))
	for _, k := range keys {
		gone[k] = true
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	kept := j.segments[:0]
	for _, s := range j.segments {
		if gone[s.key] {
			j.bytes -= s.size
		} else {
			kept = append(kept, s)
		}
	}
	j.segments = kept
	j.checkpointDue.Store(j.overBound())
}

// overBound reports whether the segments not covered yet are too many or too big. j.mu
// is held.
func (j *journal) overBound() bool {
	return len(j.segments) >= j.maxSegments || j.bytes >= j.maxBytes
}

// uploadErrorLogInterval is the most often a failing journal upload is logged: an outage
// fails every attempt of every stream, and the log must say so without drowning.
const uploadErrorLogInterval = 10 * time.Second

// rateLimitedLog logs one kind of failure at most once per interval and says how many
// it left out since the last line. Safe for concurrent use.
type rateLimitedLog struct {
	log   *slog.Logger
	every time.Duration

	mu sync.Mutex
	// last is when a line was written; omitted counts the failures since that were not.
	// Guarded by mu.
	last    time.Time
	omitted int
}

func (r *rateLimitedLog) error(msg string, attrs ...slog.Attr) {
	r.mu.Lock()
	now := time.Now()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.omitted++
		r.mu.Unlock()
		return
	}
	omitted := r.omitted
	r.last, r.omitted = now, 0
	r.mu.Unlock()
	r.log.LogAttrs(context.Background(), slog.LevelError, msg, append(attrs, slog.Int("not_logged_since_last", omitted))...)
}

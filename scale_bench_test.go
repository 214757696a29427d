package s3persist_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/s3store"
)

// BenchmarkScale measures cost, memory and start-up against the number of offline
// sessions (docs/layout.md, "Cost"; BENCHMARKS.md, "Scale"), on the in-memory store with
// counted requests and 20 ms per request. For each size it:
//
//  1. creates the sessions (realistic state: a distinct timestamp, a 64-byte
//     subscription blob, expiry set) and lets a checkpoint settle them: creates-req/1ksess;
//  2. fans out 3 rounds (S3PERSIST_SCALE_ROUNDS) of one 256-byte message to every
//     session, a checkpoint after each: req/1kmsg, the bytes uploaded per message against the journal's (x-journal),
//     the longest checkpoint (ckpt-s) and the most payload pinned (pinned-MiB);
//  3. starts a new instance on the bucket (New + Count + LoadForEach): cold-s and
//     cold-objects (GETs).
//
// BenchmarkIdleSessionMemory measures the heap per idle session.
//
// 1,000,000 sessions run only with S3PERSIST_SCALE_1M=1 (minutes and gigabytes):
//
//	go test -run '^$' -bench Scale -benchtime 1x -count 3 -timeout 60m .
//
// With S3PERSIST_SCALE_MINIO=host:port (and S3PERSIST_SCALE_MINIO_KEYS=access:secret),
// the bucket is a fresh one on that S3 server (a local MinIO, say), without injected
// latency; each run deletes what it wrote.
func BenchmarkScale(b *testing.B) {
	sizes := []int{1_000, 10_000, 100_000}
	if os.Getenv("S3PERSIST_SCALE_1M") == "1" {
		sizes = append(sizes, 1_000_000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("sessions=%s", sizeName(n)), func(b *testing.B) {
			for b.Loop() {
				scaleRun(b, n)
			}
		})
	}
}

// scaleRounds is the number of fan-out rounds: 3, or S3PERSIST_SCALE_ROUNDS.
func scaleRounds(b *testing.B) int {
	v := os.Getenv("S3PERSIST_SCALE_ROUNDS")
	if v == "" {
		return 3
	}
	var n int
	if _, err := fmt.Sscan(v, &n); err != nil || n < 1 {
		b.Fatalf("S3PERSIST_SCALE_ROUNDS=%q is not a positive number", v)
	}
	return n
}

func sizeName(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1_000 && n%1_000 == 0:
		return fmt.Sprintf("%dk", n/1_000)
	}
	return fmt.Sprint(n)
}

// byPrefix counts the bytes put under each top-level key prefix.
type byPrefix struct {
	s3store.Store
	mu    sync.Mutex
	bytes map[string]int64
}

func (c *byPrefix) Put(ctx context.Context, key string, data []byte, opts s3store.PutOptions) (s3store.ObjectInfo, error) {
	root, _, _ := strings.Cut(key, "/")
	c.mu.Lock()
	c.bytes[root] += int64(len(data))
	c.mu.Unlock()
	return c.Store.Put(ctx, key, data, opts)
}

func (c *byPrefix) reset() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.bytes
	c.bytes = map[string]int64{}
	return b
}

// scaleStore is the store of one BenchmarkScale run: the memory store with 20 ms per
// request, or a fresh bucket of the S3 server S3PERSIST_SCALE_MINIO names.
func scaleStore(b *testing.B) s3store.Store {
	endpoint := os.Getenv("S3PERSIST_SCALE_MINIO")
	if endpoint == "" {
		return s3store.NewDelayed(s3store.NewMemory(), injectedLatency)
	}
	access, secret, _ := strings.Cut(os.Getenv("S3PERSIST_SCALE_MINIO_KEYS"), ":")
	bucket := fmt.Sprintf("scale-%d", time.Now().UnixNano())
	m, err := s3store.NewMinio(context.Background(), s3store.MinioConfig{Endpoint: endpoint, Bucket: bucket,
		AccessKey: access, SecretKey: secret, CreateBucket: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		var keys []string
		_ = s3store.ListAll(context.Background(), m, "", func(o s3store.ObjectInfo) error {
			keys = append(keys, o.Key)
			return nil
		})
		_ = m.DeleteMany(context.Background(), keys)
		_ = m.Close()
	})
	return m
}

func scaleRun(b *testing.B, n int) {
	ctx := context.Background()
	bp := &byPrefix{Store: scaleStore(b), bytes: map[string]int64{}}
	count := s3store.NewCounting(bp)
	cfg := s3persist.Config{Store: count, CheckpointInterval: time.Hour, CheckpointBytes: 1 << 40, MaxPinnedBytes: 1 << 40,
		CheckpointSegments: 1 << 30}
	p, err := s3persist.New(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	s, _ := p.Sessions()
	subs := []byte(strings.Repeat("s", 64))
	ids := make([][]byte, n)
	count.Reset()
	for i := range n {
		ids[i] = fmt.Appendf(nil, "client-%07d", i)
		ts := time.Date(2026, 12, 1, 0, 0, 0, i, time.UTC).Format(time.RFC3339Nano)
		if err := s.Create(ids[i], &vlpersistence.SessionBase{Timestamp: ts, Version: 5}); err != nil {
			b.Fatal(err)
		}
		if err := s.SubscriptionsStore(ids[i], subs); err != nil {
			b.Fatal(err)
		}
		if err := s.ExpiryStore(ids[i], &vlpersistence.SessionDelays{Since: ts, ExpireIn: "3600"}); err != nil {
			b.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	if err := p.Checkpoint(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(count.Stats().Requests())*1000/float64(n), "creates-req/1ksess")

	// Fan-out: 3 rounds, a checkpoint after each.
	count.Reset()
	bp.reset()
	payload := []byte(strings.Repeat("m", 256))
	var longest time.Duration
	var peakPinned int64
	msgs := 0
	rounds := scaleRounds(b)
	for r := 0; r < rounds; r++ {
		for _, id := range ids {
			if err := s.PacketStoreQoS12(id, &vlpersistence.PersistedPacket{Data: payload}); err != nil {
				b.Fatal(err)
			}
			msgs++
		}
		peakPinned = max(peakPinned, p.Stats().PinnedBytes)
		if err := p.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := p.Checkpoint(ctx); err != nil {
			b.Fatal(err)
		}
		longest = max(longest, time.Since(start))
	}
	put := bp.reset()
	var total int64
	for _, v := range put {
		total += v
	}
	b.ReportMetric(float64(count.Stats().Requests())*1000/float64(msgs), "req/1kmsg")
	b.ReportMetric(float64(total)/float64(put["j"]), "x-journal")
	b.ReportMetric(float64(put["j"])/float64(msgs), "journal-B/msg")
	b.ReportMetric(longest.Seconds(), "ckpt-s")
	b.ReportMetric(float64(peakPinned)/(1<<20), "pinned-MiB")
	if err := p.Shutdown(); err != nil {
		b.Fatal(err)
	}

	// Cold start.
	count.Reset()
	start := time.Now()
	p2, err := s3persist.New(ctx, s3persist.Config{Store: count, CheckpointInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	s2, _ := p2.Sessions()
	if got := s2.Count(); got != uint64(n) {
		b.Fatalf("Count after a cold start: %d, want %d", got, n)
	}
	loaded := 0
	if err := s2.LoadForEach(loadCounter{&loaded}, nil); err != nil || loaded != n {
		b.Fatalf("LoadForEach: %v, %d sessions", err, loaded)
	}
	b.ReportMetric(time.Since(start).Seconds(), "cold-s")
	b.ReportMetric(float64(count.Stats().Gets), "cold-objects")
	_ = p2.Shutdown()
}

type loadCounter struct{ n *int }

func (l loadCounter) LoadSession(_ interface{}, _ []byte, _ *vlpersistence.SessionState) error {
	*l.n++
	return nil
}

// BenchmarkPinnedWhileCheckpointsFail stores messages for 10,000 offline sessions as fast
// as it can for 60 s while every checkpoint fails (its packs, batch objects and index
// objects are refused), then lets one succeed. It reports the most payload pinned
// (sampled after every call) against MaxPinnedBytes (the default, 256 MiB), the calls
// refused with ErrCheckpointsBehind, and checks that every accepted packet is queued.
// S3PERSIST_PINNED_SECONDS shortens the 60 s.
//
//	go test -run '^$' -bench PinnedWhileCheckpointsFail -benchtime 1x -count 3 .
func BenchmarkPinnedWhileCheckpointsFail(b *testing.B) {
	seconds := 60
	if v := os.Getenv("S3PERSIST_PINNED_SECONDS"); v != "" {
		if _, err := fmt.Sscan(v, &seconds); err != nil || seconds < 1 {
			b.Fatalf("S3PERSIST_PINNED_SECONDS=%q", v)
		}
	}
	for b.Loop() {
		pinnedRun(b, seconds)
	}
}

// pinnedRun is one run of BenchmarkPinnedWhileCheckpointsFail. (Inlined in the b.Loop
// body, this code made go1.26.8's escape analysis panic.)
func pinnedRun(b *testing.B, seconds int) {
	ctx := context.Background()
	var failing atomic.Bool
	failing.Store(true)
	store := refusingCheckpoints{Store: s3store.NewDelayed(s3store.NewMemory(), injectedLatency), failing: &failing}
	p, err := s3persist.New(ctx, s3persist.Config{Store: store, CheckpointInterval: time.Second, CheckpointTimeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	s, _ := p.Sessions()
	const n = 10_000
	ids := make([][]byte, n)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "client-%05d", i)
		if err := s.Create(ids[i], nil); err != nil {
			b.Fatal(err)
		}
	}
	payload := []byte(strings.Repeat("m", 256))
	accepted := make([]int, n)
	refused, peak := 0, int64(0)
	deadline := time.Now().Add(time.Duration(seconds) * time.Second)
	for i := 0; i < 1<<30; i++ {
		if !time.Now().Before(deadline) {
			break
		}
		err := s.PacketStoreQoS12(ids[i%n], &vlpersistence.PersistedPacket{Data: payload})
		switch {
		case err == nil:
			accepted[i%n]++
		case errors.Is(err, s3persist.ErrCheckpointsBehind):
			refused++
		default:
			b.Fatal(err)
		}
		if pinned := p.Stats().PinnedBytes; pinned > peak {
			peak = pinned
		}
	}
	st := p.Stats()
	failing.Store(false)
	if err := p.Checkpoint(ctx); err != nil {
		b.Fatal(err)
	}
	for i, id := range ids {
		if got, _ := s.PacketCountQoS12(id); got != uint64(accepted[i]) {
			b.Fatalf("%s: %d packets queued, %d accepted", id, got, accepted[i])
		}
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-pinned-MiB")
	b.ReportMetric(float64(s3persist.DefaultMaxPinnedBytes)/(1<<20), "bound-MiB")
	b.ReportMetric(float64(refused), "refused-calls")
	b.ReportMetric(float64(st.CheckpointFailures), "failed-checkpoints")
	_ = p.Shutdown()
}

// refusingCheckpoints refuses the puts of packs, batch objects and index objects while
// failing is set: every checkpoint fails, the journal goes on.
type refusingCheckpoints struct {
	s3store.Store
	failing *atomic.Bool
}

func (r refusingCheckpoints) Put(ctx context.Context, key string, data []byte, opts s3store.PutOptions) (s3store.ObjectInfo, error) {
	if r.failing.Load() && !strings.HasPrefix(key, "j/") && !opts.IfNoneMatch && opts.IfMatch == "" && key != "retained" {
		return s3store.ObjectInfo{}, fmt.Errorf("put %q: %w", key, s3store.ErrInjected)
	}
	return r.Store.Put(ctx, key, data, opts)
}

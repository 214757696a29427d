package s3persist_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/internal/workload"
	"github.com/s3persist/s3persist/s3store"
)

// The benchmarks run the workloads of docs and BENCHMARKS.md on the in-memory store,
// behind a Store-level latency (the integration module runs them on MinIO with the
// latency at the HTTP transport). Run them one at a time:
//
//	go test -run '^$' -bench . -benchtime 1x .

const injectedLatency = 20 * time.Millisecond

// open returns an instance over a counting, delayed in-memory store.
func open(b *testing.B, mem *s3store.Memory, delay time.Duration, cfg s3persist.Config) (*s3persist.Persistence, *s3store.Counting) {
	b.Helper()
	count := s3store.NewCounting(s3store.NewDelayed(mem, delay))
	cfg.Store = count
	p, err := s3persist.New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Shutdown() })
	return p, count
}

// Fan-out: 1,000 offline sessions, one message each per simulated second, until the
// checkpoint that CheckpointBytes (32 MiB) starts has finished.
func BenchmarkFanOutAsync(b *testing.B) {
	p, count := open(b, s3store.NewMemory(), injectedLatency, s3persist.Config{})
	ids, err := workload.CreateSessions(p, 1000)
	if err != nil {
		b.Fatal(err)
	}
	workload.Bench(b, func() (workload.Result, error) { return workload.FanOut(p, count, ids, 1000) })
}

// Burst: 100 offline sessions receiving 1,000 messages each as fast as they come.
func BenchmarkBurstAsync(b *testing.B) {
	p, count := open(b, s3store.NewMemory(), injectedLatency, s3persist.Config{})
	ids, err := workload.CreateSessions(p, 100)
	if err != nil {
		b.Fatal(err)
	}
	workload.Bench(b, func() (workload.Result, error) { return workload.Burst(p, count, ids, 1000, true) })
}

// Sync with 64 concurrent callers: group commit.
func BenchmarkSync64Callers(b *testing.B) {
	p, count := open(b, s3store.NewMemory(), injectedLatency, s3persist.Config{Durability: s3persist.Sync})
	ids, err := workload.CreateSessions(p, 1000)
	if err != nil {
		b.Fatal(err)
	}
	workload.Bench(b, func() (workload.Result, error) { return workload.Concurrent(p, count, ids, 64, 200) })
}

// Sync fan-out (one simulated second) and burst with the broker's two publishers: each
// call waits for its upload, so two callers make at most two calls per latency. Too slow
// to reach a checkpoint: their request counts are the journal's alone.
func BenchmarkFanOutSync(b *testing.B) {
	p, count := open(b, s3store.NewMemory(), injectedLatency, s3persist.Config{Durability: s3persist.Sync})
	ids, err := workload.CreateSessions(p, 1000)
	if err != nil {
		b.Fatal(err)
	}
	workload.Bench(b, func() (workload.Result, error) { return workload.Burst(p, count, ids, 1, false) })
}

func BenchmarkBurstSync(b *testing.B) {
	p, count := open(b, s3store.NewMemory(), injectedLatency, s3persist.Config{Durability: s3persist.Sync})
	ids, err := workload.CreateSessions(p, 100)
	if err != nil {
		b.Fatal(err)
	}
	workload.Bench(b, func() (workload.Result, error) { return workload.Burst(p, count, ids, 10, false) })
}

// Shutdown of 10,000 sessions, each with state and 10 packets accepted in Async mode.
func BenchmarkShutdown10kSessions(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		mem := s3store.NewMemory()
		p, err := s3persist.New(context.Background(), s3persist.Config{Store: s3store.NewDelayed(mem, injectedLatency)})
		if err != nil {
			b.Fatal(err)
		}
		if err := workload.Fill(p, 10000, 10); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := p.Shutdown(); err != nil {
			b.Fatal(err)
		}
	}
}

// Cold start of 100,000 sessions: New plus a LoadForEach visiting all, after a
// checkpoint (the steady state), with the store's latency.
func BenchmarkColdStart100kSessions(b *testing.B) {
	mem := s3store.NewMemory()
	p, err := s3persist.New(context.Background(), s3persist.Config{Store: mem})
	if err != nil {
		b.Fatal(err)
	}
	if err := workload.Fill(p, 100000, 0); err != nil {
		b.Fatal(err)
	}
	if err := p.Checkpoint(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := p.Shutdown(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		p, err := s3persist.New(context.Background(), s3persist.Config{Store: s3store.NewDelayed(mem, injectedLatency)})
		if err != nil {
			b.Fatal(err)
		}
		s, _ := p.Sessions()
		n := 0
		if err := s.LoadForEach(loader(func() { n++ }), nil); err != nil || n != 100000 {
			b.Fatalf("LoadForEach: %v, %d sessions", err, n)
		}
		b.StopTimer()
		_ = p.Shutdown()
		b.StartTimer()
	}
}

type loader func()

func (l loader) LoadSession(interface{}, []byte, *vlpersistence.SessionState) error {
	l()
	return nil
}

// Memory per idle session: the heap an instance holds per session with realistic state
// and no packets, beyond its id and its blobs (timestamp, 64-byte subscriptions, expiry),
// after a checkpoint. Each session's strings are its own, as a broker makes them per
// connect (a shared literal would hide their cost).
func BenchmarkIdleSessionMemory(b *testing.B) {
	const n = 100000
	for b.Loop() {
		p, err := s3persist.New(context.Background(), s3persist.Config{Store: discard{s3store.NewMemory()}})
		if err != nil {
			b.Fatal(err)
		}
		s, _ := p.Sessions()
		if err := p.Checkpoint(context.Background()); err != nil {
			b.Fatal(err)
		}
		before := heap()
		blobBytes := 0
		subs := []byte(strings.Repeat("s", 64))
		for i := range n {
			// Realistic state: a distinct timestamp, a 64-byte subscription blob, expiry set.
			id := fmt.Appendf(nil, "client-%06d", i)
			ts := time.Date(2026, 12, 1, 0, 0, 0, i, time.UTC).Format(time.RFC3339Nano)
			if err := s.Create(id, &vlpersistence.SessionBase{Timestamp: ts, Version: 4}); err != nil {
				b.Fatal(err)
			}
			if err := s.SubscriptionsStore(id, subs); err != nil {
				b.Fatal(err)
			}
			if err := s.ExpiryStore(id, &vlpersistence.SessionDelays{Since: ts, ExpireIn: "3600"}); err != nil {
				b.Fatal(err)
			}
			blobBytes += len(id) + len(ts) + len(subs) + len(ts) + len("3600")
		}
		if err := p.Checkpoint(context.Background()); err != nil {
			b.Fatal(err)
		}
		after := heap()
		b.ReportMetric(float64(after-before-uint64(blobBytes))/n, "bytes/session")
		runtime.KeepAlive(p)
		_ = p.Shutdown()
	}
}

// discard is a store that accepts every put of session data and keeps nothing, so that
// the heap measured is the instance's own and not the in-memory store's copy of the
// objects. Conditional puts (the system record, ownership, New's self-test) go to the
// wrapped store, which honours their conditions.
type discard struct{ s3store.Store }

func (d discard) Put(ctx context.Context, key string, data []byte, opts s3store.PutOptions) (s3store.ObjectInfo, error) {
	if opts.IfNoneMatch || opts.IfMatch != "" {
		return d.Store.Put(ctx, key, data, opts)
	}
	return s3store.ObjectInfo{Key: key, Size: int64(len(data)), ETag: "discarded"}, nil
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// The hot path alone: one PacketStoreQoS12 of a 256-byte packet per iteration, to one of
// 100 sessions, from GOMAXPROCS goroutines, in Async mode on the in-memory store. The
// journal uploads in the background; no checkpoint runs (CheckpointBytes is out of
// reach), so ns/op, B/op and allocs/op are the call's own (with its share of the
// segment uploads). Run with -benchmem:
//
//	go test -run '^$' -bench PacketStoreQoS12 -benchmem -count 3 .
func BenchmarkPacketStoreQoS12(b *testing.B) {
	p, _ := open(b, s3store.NewMemory(), 0, s3persist.Config{CheckpointBytes: 1 << 40, CheckpointSegments: 1 << 30})
	ids, err := workload.CreateSessions(p, 100)
	if err != nil {
		b.Fatal(err)
	}
	s, _ := p.Sessions()
	payload := make([]byte, 256)
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := ids[next.Add(1)%int64(len(ids))]
			if err := s.PacketStoreQoS12(id, &vlpersistence.PersistedPacket{Data: payload}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

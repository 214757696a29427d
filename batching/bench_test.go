package batching_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/s3persist/s3persist/batching"
)

// BenchmarkAddAsync measures Add from many goroutines, each adding 200-byte records to
// its own key, with the default Config and an upload that does nothing: the cost of
// the hot path and its lock. Target: at least 1,000,000 adds/s on 2 cores.
func BenchmarkAddAsync(b *testing.B) {
	bt, err := batching.New(batching.Config{}, func(context.Context, batching.Batch[int, []byte]) error { return nil })
	if err != nil {
		b.Fatal(err)
	}
	rec := make([]byte, 200)
	var ids atomic.Int64
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(8) // 8 goroutines per core
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		key := int(ids.Add(1)) % 16
		for pb.Next() {
			if _, err := bt.Add(ctx, key, rec, len(rec), false); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if err := bt.Close(ctx); err != nil {
		b.Fatal(err)
	}
	s := bt.Stats()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "adds/s")
	b.ReportMetric(float64(s.Items)/float64(max(s.Batches, 1)), "items/batch")
}

// BenchmarkAddSyncGroupCommit measures synchronous writers (urgent Add, then Wait)
// against an upload that takes 1ms, as a fast object store would: group commit should
// put many writers' records into each batch.
func BenchmarkAddSyncGroupCommit(b *testing.B) {
	bt, err := batching.New(batching.Config{}, func(ctx context.Context, _ batching.Batch[int, []byte]) error {
		t := time.NewTimer(time.Millisecond) // simulated latency, not synchronisation
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	rec := make([]byte, 200)
	var ids atomic.Int64
	ctx := context.Background()
	b.SetParallelism(64)
	b.RunParallel(func(pb *testing.PB) {
		key := int(ids.Add(1)) % 4
		for pb.Next() {
			t, err := bt.Add(ctx, key, rec, len(rec), true)
			if err == nil {
				err = t.Wait(ctx)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if err := bt.Close(ctx); err != nil {
		b.Fatal(err)
	}
	s := bt.Stats()
	b.ReportMetric(float64(s.Items)/float64(max(s.Batches, 1)), "items/batch")
}

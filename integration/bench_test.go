package integration

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/internal/workload"
	"github.com/s3persist/s3persist/s3store"
)

// The benchmarks of BENCHMARKS.md against a real MinIO, with the latency injected at the
// HTTP transport under minio-go, so that the whole client path is measured:
//
//	S3PERSIST_MINIO_BIN=$(bash scripts/install-minio.sh) \
//	  go test -run '^$' -bench . -benchtime 1x ./integration/

const injectedLatency = 20 * time.Millisecond

// openMinio returns an instance over a fresh bucket, through a counting store over
// MinIO with delay per request.
func openMinio(b *testing.B, delay time.Duration, cfg s3persist.Config) (*s3persist.Persistence, *s3store.Counting, s3store.Store) {
	b.Helper()
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = 128
	b.Cleanup(base.CloseIdleConnections)
	mcfg := minioConfig(srv.NewTarget(b).Bucket)
	mcfg.Transport = &s3store.LatencyTransport{Base: base, Delay: delay}
	m, err := s3store.NewMinio(context.Background(), mcfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close() })
	count := s3store.NewCounting(m)
	cfg.Store = count
	p, err := s3persist.New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Shutdown() })
	return p, count, m
}

func BenchmarkMinioFanOutAsync(b *testing.B) {
	p, count, _ := openMinio(b, injectedLatency, s3persist.Config{})
	ids, err := workload.CreateSessions(p, 1000)
	if err != nil {
		b.Fatal(err)
	}
	workload.Bench(b, func() (workload.Result, error) { return workload.FanOut(p, count, ids, 1000) })
}

func BenchmarkMinioBurstAsync(b *testing.B) {
	p, count, _ := openMinio(b, injectedLatency, s3persist.Config{})
	ids, err := workload.CreateSessions(p, 100)
	if err != nil {
		b.Fatal(err)
	}
	workload.Bench(b, func() (workload.Result, error) { return workload.Burst(p, count, ids, 1000, true) })
}

func BenchmarkMinioSync64Callers(b *testing.B) {
	p, count, _ := openMinio(b, injectedLatency, s3persist.Config{Durability: s3persist.Sync})
	ids, err := workload.CreateSessions(p, 1000)
	if err != nil {
		b.Fatal(err)
	}
	workload.Bench(b, func() (workload.Result, error) { return workload.Concurrent(p, count, ids, 64, 200) })
}

// One simulated second of fan-out in Sync mode with the broker's two publishers: every
// call waits for its upload.
func BenchmarkMinioFanOutSync(b *testing.B) {
	p, count, _ := openMinio(b, injectedLatency, s3persist.Config{Durability: s3persist.Sync})
	ids, err := workload.CreateSessions(p, 1000)
	if err != nil {
		b.Fatal(err)
	}
	workload.Bench(b, func() (workload.Result, error) { return workload.Burst(p, count, ids, 1, false) })
}

func BenchmarkMinioBurstSync(b *testing.B) {
	p, count, _ := openMinio(b, injectedLatency, s3persist.Config{Durability: s3persist.Sync})
	ids, err := workload.CreateSessions(p, 100)
	if err != nil {
		b.Fatal(err)
	}
	workload.Bench(b, func() (workload.Result, error) { return workload.Burst(p, count, ids, 5, false) })
}

// Shutdown of 10,000 sessions with state and 10 packets each, against the local MinIO.
func BenchmarkMinioShutdown10kSessions(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		p, _, _ := openMinio(b, 0, s3persist.Config{})
		if err := workload.Fill(p, 10000, 10); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := p.Shutdown(); err != nil {
			b.Fatal(err)
		}
	}
}

// Cold start of 100,000 sessions against the local MinIO: New plus LoadForEach over all,
// after a checkpoint (the steady state).
func BenchmarkMinioColdStart100kSessions(b *testing.B) {
	p, _, m := openMinio(b, 0, s3persist.Config{})
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
		count := s3store.NewCounting(m)
		p, err := s3persist.New(context.Background(), s3persist.Config{Store: count})
		if err != nil {
			b.Fatal(err)
		}
		s, _ := p.Sessions()
		n := 0
		if err := s.LoadForEach(loadSessionFunc(func([]byte, *vlpersistence.SessionState) error { n++; return nil }), nil); err != nil || n != 100000 {
			b.Fatalf("LoadForEach: %v, %d sessions", err, n)
		}
		b.ReportMetric(float64(count.Stats().Requests()), "requests")
		b.StopTimer()
		_ = p.Shutdown()
		b.StartTimer()
	}
}

package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/integration/miniotest"
)

// outageLength is how long the MinIO server stays down.
const outageLength = 10 * time.Second

// The MinIO server (its process, or its container with docker kill) is killed
// mid-workload and started again 10 s later on the same port and data, while the instance
// keeps running: nothing is lost, the journal's pending memory stays within
// MaxPendingBytes, and the instance recovers by itself. Once the journal is full, calls
// fail at once with ErrStoreBehind (FailAtOnce, the default) or wait and fail after
// CallTimeout (WaitForRoom); the slowest call of each run is logged.
func TestAnOutageOfTheStoreLosesNothingAndTheInstanceRecoversByItself(t *testing.T) {
	if srv.Kind == miniotest.KindExternal {
		t.Skipf("needs a MinIO server to stop (the %s server cannot be paused)", srv.Kind)
	}
	for _, mode := range []s3persist.Durability{s3persist.Async, s3persist.Sync} {
		for _, full := range []s3persist.Backpressure{s3persist.FailAtOnce, s3persist.WaitForRoom} {
			t.Run(mode.String()+"/"+full.String(), func(t *testing.T) { outage(t, mode, full) })
		}
	}
}

func outage(t *testing.T, mode s3persist.Durability, full s3persist.Backpressure) {
	const bound = 256 << 10
	tgt := outageTarget(t)
	s3cfg := minioConfig(tgt.Bucket)
	s3cfg.RequestTimeout = 10 * time.Second
	cfg := s3persist.Config{S3: s3cfg, Prefix: tgt.Prefix, Durability: mode,
		FlushInterval: 50 * time.Millisecond, BatchBytes: 64 << 10, MaxPendingBytes: bound,
		CheckpointInterval: 500 * time.Millisecond, CheckpointTimeout: 20 * time.Second,
		CallTimeout: 2 * time.Second, ShutdownTimeout: 10 * time.Second, WhenStoreIsBehind: full}
	p, err := s3persist.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := newFaultModel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		// About 400 stores a second of 1 KiB each in all: the bound fills within a
		// second of the outage.
		wg.Go(func() {
			runSessionWorkload(t, p, m, fmt.Sprintf("client-%d", i), 1<<20, 10*time.Millisecond, 1<<10, stop)
		})
	}
	var maxPending int64
	samples := 0
	sampled := make(chan struct{})
	go func() { // owned: ends when stop is closed
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				maxPending = max(maxPending, p.Stats().Journal.PendingBytes)
				samples++
			}
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
		<-sampled
	}()

	time.Sleep(time.Second)
	if err := srv.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	time.Sleep(outageLength)
	if err := srv.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	// Recovered: a Flush succeeds, with the workload still running.
	var recovered time.Duration
	for deadline := up.Add(30 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := p.Flush(ctx)
		cancel()
		if err == nil {
			recovered = time.Since(up)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Flush succeeded within 30 s of the store's return: %v", err)
		}
	}
	// A checkpoint works again too (those of the outage failed and were retried).
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	err = p.Checkpoint(ctx)
	cancel()
	if err != nil {
		t.Errorf("Checkpoint after the outage: %v", err)
	}
	time.Sleep(time.Second) // the workload runs on, on a healthy store
	close(stop)
	wg.Wait()
	<-sampled
	if err := p.Flush(context.Background()); err != nil {
		t.Fatalf("Flush after the outage: %v", err)
	}
	st := p.Stats()
	if err := p.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	m.mu.Lock()
	stored := 0
	for _, q := range m.queues {
		stored += len(q)
	}
	t.Logf("%s/%s: outage %v; %d packets queued at the end; pending bytes: max sampled %d (%d samples), peak %d, bound %d; "+
		"slowest call %v; recovered (first successful Flush) %v after the store came back; journal retries %d, refused calls %d, checkpoints %d, failed %d; failed calls %v; first errors %q",
		mode, full, up.Sub(down).Round(time.Millisecond), stored, maxPending, samples, st.Journal.PeakPendingBytes, int64(bound),
		m.slowest.Round(time.Millisecond), recovered.Round(time.Millisecond), st.Journal.Retries, st.Journal.Refused, st.Checkpoints, st.CheckpointFailures, m.failures, m.samples)
	m.mu.Unlock()
	if st.Journal.PeakPendingBytes > bound {
		t.Errorf("pending bytes peaked at %d, above MaxPendingBytes %d", st.Journal.PeakPendingBytes, bound)
	}
	if len(m.failures) == 0 {
		t.Errorf("no call failed during a %v outage with a CallTimeout of %v", outageLength, cfg.CallTimeout)
	}
	refused := "no room under MaxPendingBytes (change refused)" // after CallTimeout
	if full == s3persist.FailAtOnce {
		refused = "store behind (change refused at once)"
	}
	for kind := range m.failures {
		if !(kind == "store: "+refused || kind == "drain: "+refused ||
			mode == s3persist.Sync && (kind == "store: not known to be durable (change kept)" || kind == "drain: not known to be durable (change kept)")) {
			t.Errorf("a call failed with an unexpected kind of error: %s", kind)
		}
	}
	m.check(t, cfg)
}

// outageTarget is a fresh bucket removed with everything in it when t ends. A write
// that the killed MinIO had in flight can leave parts that no listing shows but that
// keep the bucket from being removed, so the cleanup of NewTarget would fail.
func outageTarget(t *testing.T) miniotest.Target {
	t.Helper()
	client, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	tgt := miniotest.Target{Bucket: fmt.Sprintf("s3p-outage-%d", time.Now().UnixNano())}
	ctx := context.Background()
	if err := client.MakeBucket(ctx, tgt.Bucket, minio.MakeBucketOptions{Region: srv.Region}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := client.RemoveBucketWithOptions(ctx, tgt.Bucket, minio.RemoveBucketOptions{ForceDelete: true}); err != nil {
			t.Errorf("remove bucket %q: %v", tgt.Bucket, err)
		}
	})
	return tgt
}

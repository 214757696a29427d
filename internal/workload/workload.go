// Package workload drives the broker workloads that the benchmarks measure against a
// Persistence: fan-out (many offline sessions, one message each per simulated second),
// burst (few sessions, many messages as fast as they come) and concurrent callers. It
// measures what the issue that asked for them cares about: calls per second, call
// latency, object-store requests and bytes per packet, and peak pending memory.
package workload

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/s3store"
)

// Result is what one run measured.
type Result struct {
	Calls    int           // PacketStoreQoS12 calls
	CallTime time.Duration // time spent in the store phases (the simulated clock's ticks excluded)
	P50, P99 time.Duration // call latency
	Packets  int
	Requests int64 // object-store requests from the first store to the end of the final checkpoint
	BytesPut int64
	// PeakPending is the journal's peak of bytes accepted but not durable.
	PeakPending int64
	Checkpoints int64
}

// Report adds the run's figures to b.
func (r Result) Report(b *testing.B) {
	b.ReportMetric(float64(r.Calls)/r.CallTime.Seconds(), "calls/s")
	b.ReportMetric(float64(r.P50.Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(r.P99.Nanoseconds())/1e3, "p99-µs")
	b.ReportMetric(float64(r.Requests)*1000/float64(r.Packets), "req/1000pkt")
	b.ReportMetric(float64(r.BytesPut)/float64(r.Packets), "bytes-up/pkt")
	b.ReportMetric(float64(r.PeakPending)/(1<<20), "peak-pending-MiB")
	b.ReportMetric(float64(r.Checkpoints), "checkpoints")
}

// Bench runs the workload f once per iteration of b and reports the last run's figures.
func Bench(b *testing.B, f func() (Result, error)) {
	b.Helper()
	var res Result
	for b.Loop() {
		var err error
		if res, err = f(); err != nil {
			b.Fatal(err)
		}
	}
	res.Report(b)
	b.Log(res)
}

func (r Result) String() string {
	return fmt.Sprintf("%d calls, %.0f calls/s, p50 %v p99 %v, %.2f req/1000 packets, %.0f bytes up/packet, peak pending %.1f MiB, %d checkpoints",
		r.Calls, float64(r.Calls)/r.CallTime.Seconds(), r.P50, r.P99, float64(r.Requests)*1000/float64(r.Packets),
		float64(r.BytesPut)/float64(r.Packets), float64(r.PeakPending)/(1<<20), r.Checkpoints)
}

// Payload is the Data of every packet: 200 bytes, a typical small MQTT message.
var Payload = make([]byte, 200)

// CreateSessions creates n sessions named s000000..., makes them durable and checkpoints
// them, so that their creation is not counted in the runs that follow.
func CreateSessions(p *s3persist.Persistence, n int) ([][]byte, error) {
	s, err := p.Sessions()
	if err != nil {
		return nil, err
	}
	ids := make([][]byte, n)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "s%06d", i)
		if err := s.Create(ids[i], &vlpersistence.SessionBase{Timestamp: "2026-12-01T00:00:00Z", Version: 4}); err != nil {
			return nil, err
		}
	}
	if err := p.Flush(context.Background()); err != nil {
		return nil, err
	}
	return ids, p.Checkpoint(context.Background())
}

// Fill creates n sessions named client-000000... with a base, subscriptions and perID
// packets each (accepted in memory in Async mode): the state a broker holds at shutdown.
func Fill(p *s3persist.Persistence, n, perID int) error {
	s, err := p.Sessions()
	if err != nil {
		return err
	}
	for i := range n {
		id := fmt.Appendf(nil, "client-%06d", i)
		if err := s.Create(id, &vlpersistence.SessionBase{Timestamp: "2026-12-01T00:00:00Z", Version: 4}); err != nil {
			return err
		}
		if err := s.SubscriptionsStore(id, []byte("sensors/+/temperature:1")); err != nil {
			return err
		}
		for range perID {
			if err := s.PacketStoreQoS12(id, &vlpersistence.PersistedPacket{Data: Payload}); err != nil {
				return err
			}
		}
	}
	return nil
}

// recorder collects call latencies from two publisher goroutines.
type recorder struct {
	mu  sync.Mutex
	lat []time.Duration
}

func (r *recorder) add(l []time.Duration) {
	r.mu.Lock()
	r.lat = append(r.lat, l...)
	r.mu.Unlock()
}

func (r *recorder) percentiles() (p50, p99 time.Duration) {
	slices.Sort(r.lat)
	if len(r.lat) == 0 {
		return 0, 0
	}
	return r.lat[len(r.lat)/2], r.lat[len(r.lat)*99/100]
}

// publish stores one message for each id, split between two goroutines as VolantMQ's
// two topic publishers do, and records each call's latency.
func publish(s vlpersistence.Sessions, ids [][]byte, perID int, rec *recorder) error {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for w := range 2 {
		wg.Go(func() {
			lat := make([]time.Duration, 0, len(ids)*perID/2+1)
			for i := w; i < len(ids); i += 2 {
				for range perID {
					start := time.Now()
					if err := s.PacketStoreQoS12(ids[i], &vlpersistence.PersistedPacket{Data: Payload}); err != nil {
						errs[w] = err
						return
					}
					lat = append(lat, time.Since(start))
				}
			}
			rec.add(lat)
		})
	}
	wg.Wait()
	return errorsJoin(errs)
}

func errorsJoin(errs []error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// finish makes everything durable, runs a final checkpoint if checkpoint is set (so
// that its cost is counted) and fills in the counters.
func finish(p *s3persist.Persistence, count *s3store.Counting, res *Result, rec *recorder, before s3persist.Stats, checkpoint bool) error {
	ctx := context.Background()
	if err := p.Flush(ctx); err != nil {
		return err
	}
	if checkpoint {
		if err := p.Checkpoint(ctx); err != nil {
			return err
		}
	}
	st := count.Stats()
	after := p.Stats()
	res.Requests, res.BytesPut = st.Requests(), st.BytesPut
	res.PeakPending = after.Journal.PeakPendingBytes
	res.Checkpoints = after.Checkpoints - before.Checkpoints
	res.P50, res.P99 = rec.percentiles()
	return nil
}

// FanOut stores one message to every session per round. Each round stands for one
// second of the fan-out workload (every session receives about one message a second):
// after it, Flush does what the FlushInterval timer does once a second. Rounds go on
// until the background checkpoint that CheckpointBytes starts has finished (at most
// maxRounds), so the counts cover one whole cycle of the steady state: journal segments,
// then a checkpoint moving the queued packets into per-session batches. CallTime counts
// the store phases only. count must wrap the store p writes to; its counters are reset.
func FanOut(p *s3persist.Persistence, count *s3store.Counting, ids [][]byte, maxRounds int) (Result, error) {
	s, err := p.Sessions()
	if err != nil {
		return Result{}, err
	}
	before := p.Stats()
	count.Reset()
	var rec recorder
	res := Result{}
	for round := 0; round < maxRounds && p.Stats().Checkpoints == before.Checkpoints; round++ {
		start := time.Now()
		if err := publish(s, ids, 1, &rec); err != nil {
			return res, err
		}
		res.CallTime += time.Since(start)
		res.Calls += len(ids)
		if err := p.Flush(context.Background()); err != nil {
			return res, err
		}
	}
	if p.Stats().Checkpoints == before.Checkpoints {
		return res, fmt.Errorf("workload: no checkpoint within %d rounds", maxRounds)
	}
	res.Packets = res.Calls
	return res, finish(p, count, &res, &rec, before, false)
}

// Burst stores perID messages to every session as fast as two publishers can, then
// makes everything durable and, with checkpoint, checkpoints (counted).
func Burst(p *s3persist.Persistence, count *s3store.Counting, ids [][]byte, perID int, checkpoint bool) (Result, error) {
	s, err := p.Sessions()
	if err != nil {
		return Result{}, err
	}
	before := p.Stats()
	count.Reset()
	var rec recorder
	start := time.Now()
	if err := publish(s, ids, perID, &rec); err != nil {
		return Result{}, err
	}
	res := Result{CallTime: time.Since(start), Calls: len(ids) * perID, Packets: len(ids) * perID}
	return res, finish(p, count, &res, &rec, before, checkpoint)
}

// Concurrent runs callers goroutines, each storing perCaller messages round-robin over
// ids: the Sync mode's group-commit workload.
func Concurrent(p *s3persist.Persistence, count *s3store.Counting, ids [][]byte, callers, perCaller int) (Result, error) {
	s, err := p.Sessions()
	if err != nil {
		return Result{}, err
	}
	before := p.Stats()
	count.Reset()
	var rec recorder
	var wg sync.WaitGroup
	errs := make([]error, callers)
	start := time.Now()
	for c := range callers {
		wg.Go(func() {
			lat := make([]time.Duration, 0, perCaller)
			for i := range perCaller {
				id := ids[(c*perCaller+i)%len(ids)]
				t := time.Now()
				if err := s.PacketStoreQoS12(id, &vlpersistence.PersistedPacket{Data: Payload}); err != nil {
					errs[c] = err
					return
				}
				lat = append(lat, time.Since(t))
			}
			rec.add(lat)
		})
	}
	wg.Wait()
	if err := errorsJoin(errs); err != nil {
		return Result{}, err
	}
	res := Result{CallTime: time.Since(start), Calls: callers * perCaller, Packets: callers * perCaller}
	return res, finish(p, count, &res, &rec, before, true)
}

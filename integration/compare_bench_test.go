package integration

// Side-by-side benchmarks of s3persist and VolantMQ's reference persistence plugins
// (mem, bbolt) on the same workloads, in one run, each workload followed by a table of
// every backend relative to mem. Run them from the repository root:
//
//	S3PERSIST_MINIO_BIN="$(bash scripts/install-minio.sh)" \
//	  go test -C integration -run '^$' -bench Compare -benchtime 1x -count 3 -timeout 60m .
//
// -benchtime 1x is the intended setting: each sub-benchmark opens its backend, prepares
// it untimed, and runs its workload once per b.Loop iteration. The tables go to stdout
// after each BenchmarkCompare* (benchstat ignores them). The backends:
//
//	mem                    the reference in-memory plugin
//	bbolt                  the reference bbolt plugin, on a file in b.TempDir (fsync per call)
//	s3persist/memory       s3persist over the in-memory store, no latency
//	s3persist/memory-20ms  s3persist over the in-memory store, 20 ms per request
//	s3persist/minio-20ms   s3persist over MinIO, 20 ms per request at the HTTP transport
//
// bbolt fsyncs every call (about 1-2k calls/s), so it makes fewer calls in the Async
// workloads (cmpBboltCalls): its calls/s is still comparable, its run just shorter.

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	persistenceBbolt "gitlab.com/VolantMQ/vlplugin/persistence/bbolt"
	persistenceMem "gitlab.com/VolantMQ/vlplugin/persistence/mem"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/internal/workload"
	"github.com/s3persist/s3persist/s3store"
)

const (
	// cmpLimit bounds one workload run (its calls; s3persist's CallTimeout bounds each).
	cmpLimit = 5 * time.Minute
	// cmpBboltCalls is bbolt's number of calls in the Async burst and fan-out workloads.
	cmpBboltCalls = 5000
)

// cmpPayload is the Data of every packet: not zeros, in case something on the way
// compresses.
var cmpPayload = func() []byte {
	p := make([]byte, 256)
	for i := range p {
		p[i] = byte(i*131 + 7)
	}
	return p
}()

func cmpPacket() *vlpersistence.PersistedPacket {
	return &vlpersistence.PersistedPacket{Data: cmpPayload}
}

// cmpInstance is one open backend.
type cmpInstance struct {
	p     vlpersistence.IFace
	s     vlpersistence.Sessions
	s3    *s3persist.Persistence // nil for the reference plugins
	count *s3store.Counting      // nil for the reference plugins
}

// flush makes everything accepted durable. The reference plugins have nothing to flush:
// bbolt is durable when a call returns, mem never.
func (in cmpInstance) flush() error {
	if in.s3 == nil {
		return nil
	}
	return in.s3.Flush(context.Background())
}

// createSessions creates n sessions named s000000... from callers goroutines and makes
// them durable, untimed work before a workload.
func (in cmpInstance) createSessions(b *testing.B, n, callers int) [][]byte {
	b.Helper()
	ids, err := workload.CreateAll(in.s, "s", n, callers, cmpLimit)
	if err == nil {
		err = in.flush()
	}
	if err != nil {
		b.Fatal(err)
	}
	return ids
}

// resetCount resets the request counters, if any.
func (in cmpInstance) resetCount() {
	if in.count != nil {
		in.count.Reset()
	}
}

// reportRequests reports the requests per 1,000 calls since resetCount, if counted.
func (in cmpInstance) reportRequests(b *testing.B, calls int) {
	if in.count != nil {
		b.ReportMetric(float64(in.count.Stats().Requests())*1000/float64(calls), "req/1000calls")
	}
}

// cmpBackend opens one backend, shut down when b ends.
type cmpBackend struct {
	name string
	open func(b *testing.B) cmpInstance
}

func cmpMem() cmpBackend {
	return cmpBackend{"mem", func(b *testing.B) cmpInstance {
		p, err := persistenceMem.Load(nil, sysParams(b))
		if err != nil {
			b.Fatalf("mem.Load: %v", err)
		}
		return cmpWrap(b, p, nil, nil)
	}}
}

func cmpBbolt() cmpBackend {
	return cmpBackend{"bbolt", func(b *testing.B) cmpInstance {
		file := filepath.Join(b.TempDir(), "persistence.db")
		p, err := persistenceBbolt.Load(&persistenceBbolt.Config{File: file}, sysParams(b))
		if err != nil {
			b.Fatalf("bbolt.Load(%s): %v", file, err)
		}
		return cmpWrap(b, p, nil, nil)
	}}
}

// cmpS3 is s3persist with cfg (Store unset) over the in-memory store with delay per
// request ("s3persist/memory", "s3persist/memory-20ms").
func cmpS3(name string, delay time.Duration, cfg s3persist.Config) cmpBackend {
	return cmpBackend{name, func(b *testing.B) cmpInstance {
		var store s3store.Store = s3store.NewMemory()
		if delay > 0 {
			store = s3store.NewDelayed(store, delay)
		}
		count := s3store.NewCounting(store)
		cfg.Store = count
		p, err := s3persist.New(context.Background(), cfg)
		if err != nil {
			b.Fatalf("s3persist.New: %v", err)
		}
		return cmpWrap(b, p, p, count)
	}}
}

// cmpMinio is s3persist with cfg over MinIO, injectedLatency per request.
func cmpMinio(cfg s3persist.Config) cmpBackend {
	return cmpBackend{"s3persist/minio-20ms", func(b *testing.B) cmpInstance {
		p, count, _ := openMinio(b, injectedLatency, cfg)
		return cmpWrap(b, p, p, count)
	}}
}

func cmpWrap(b *testing.B, p vlpersistence.IFace, s3 *s3persist.Persistence, count *s3store.Counting) cmpInstance {
	b.Cleanup(func() { _ = p.Shutdown() }) // ErrNotOpen if the workload shut it down
	s, err := p.Sessions()
	if err != nil {
		b.Fatalf("Sessions: %v", err)
	}
	return cmpInstance{p: p, s: s, s3: s3, count: count}
}

// cmpAll is every backend, s3persist with cfg.
func cmpAll(cfg s3persist.Config) []cmpBackend {
	return []cmpBackend{
		cmpMem(),
		cmpBbolt(),
		cmpS3("s3persist/memory", 0, cfg),
		cmpS3("s3persist/memory-20ms", injectedLatency, cfg),
		cmpMinio(cfg),
	}
}

// cmpTable collects one figure per backend from the sub-benchmarks of one run of a
// BenchmarkCompare*, and prints each relative to mem's.
type cmpTable struct {
	title, unit string
	names       []string
	vals        map[string]float64
	notes       map[string]string
}

func newCmpTable(title, unit string) *cmpTable {
	return &cmpTable{title: title, unit: unit, vals: map[string]float64{}, notes: map[string]string{}}
}

func (t *cmpTable) add(name string, v float64, note string) {
	if _, ok := t.vals[name]; !ok {
		t.names = append(t.names, name)
	}
	t.vals[name] = v
	t.notes[name] = note
}

// print writes the table to stdout: the benchmark log of a parent benchmark is shown
// only with -v, and lines that are not "key: value" stay out of benchstat's way.
func (t *cmpTable) print() {
	what, format := "calls/s divided by mem's (below 1: slower than mem)", "%12.0f"
	if t.unit == "s" {
		what, format = "seconds divided by mem's (above 1: slower than mem)", "%12.3f"
	}
	fmt.Printf("\n%s: %s, same run\n", t.title, what)
	mem, haveMem := t.vals["mem"]
	for _, name := range t.names {
		v := t.vals[name]
		ratio := "    (no mem)"
		if haveMem && mem > 0 {
			ratio = fmt.Sprintf("%8.3gx mem", v/mem)
		}
		fmt.Printf("    %-40s %s  "+format+" %s%s\n", name, ratio, v, t.unit, t.notes[name])
	}
	fmt.Println()
}

// Async burst: 100 sessions, 64 goroutines, 200,000 calls round-robin over the sessions
// (bbolt: cmpBboltCalls). calls/s counts the calls and, for s3persist, a final Flush:
// it is the rate at which the calls become durable, not only accepted.
func BenchmarkCompareAsyncBurst(b *testing.B) {
	const sessions, callers, calls = 100, 64, 200000
	t := newCmpTable("Async burst (100 sessions, 64 goroutines, until durable)", "calls/s")
	for _, be := range cmpAll(s3persist.Config{}) {
		b.Run(be.name, func(b *testing.B) {
			in := be.open(b)
			ids := in.createSessions(b, sessions, callers)
			total, note := calls, ""
			if be.name == "bbolt" {
				total, note = cmpBboltCalls, fmt.Sprintf("  (%d calls)", cmpBboltCalls)
			}
			var rate float64
			var lat workload.Latencies
			for b.Loop() {
				in.resetCount()
				start := time.Now()
				var err error
				lat, err = workload.RunCallers(callers, total, cmpLimit, func(i int) error {
					return in.s.PacketStoreQoS12(ids[i%len(ids)], cmpPacket())
				})
				if err == nil {
					err = in.flush()
				}
				if err != nil {
					b.Fatal(err)
				}
				rate = float64(total) / time.Since(start).Seconds()
			}
			b.ReportMetric(rate, "calls/s")
			b.ReportMetric(micros(lat.P99()), "p99-µs")
			in.reportRequests(b, total)
			t.add(be.name, rate, note)
		})
	}
	t.print()
}

// Async fan-out: 1,000 sessions, VolantMQ's two publisher goroutines, each round one
// message for every session (split between the two), 100 rounds (bbolt: as many as
// make cmpBboltCalls calls), then for s3persist a final Flush, timed together.
func BenchmarkCompareAsyncFanOut(b *testing.B) {
	const sessions, publishers, rounds = 1000, 2, 100
	t := newCmpTable("Async fan-out (1,000 sessions, 2 publishers, until durable)", "calls/s")
	for _, be := range cmpAll(s3persist.Config{}) {
		b.Run(be.name, func(b *testing.B) {
			in := be.open(b)
			ids := in.createSessions(b, sessions, 64)
			n, note := rounds, ""
			if be.name == "bbolt" {
				n = cmpBboltCalls / sessions
				note = fmt.Sprintf("  (%d rounds)", n)
			}
			var rate float64
			var lat workload.Latencies
			for b.Loop() {
				in.resetCount()
				lat = lat[:0]
				start := time.Now()
				for range n {
					l, err := workload.RunCallers(publishers, sessions, cmpLimit-time.Since(start), func(i int) error {
						return in.s.PacketStoreQoS12(ids[i], cmpPacket())
					})
					if err != nil {
						b.Fatal(err)
					}
					lat = append(lat, l...)
				}
				if err := in.flush(); err != nil {
					b.Fatal(err)
				}
				rate = float64(n*sessions) / time.Since(start).Seconds()
			}
			b.ReportMetric(rate, "calls/s")
			b.ReportMetric(micros(lat.P99()), "p99-µs")
			in.reportRequests(b, n*sessions)
			t.add(be.name, rate, note)
		})
	}
	t.print()
}

// Sync with 64 callers: 64 goroutines storing 100 packets each, round-robin over 1,000
// sessions; s3persist in Sync mode (its group commit), the references as they are
// (synchronous by nature).
func BenchmarkCompareSync64Callers(b *testing.B) {
	const sessions, callers, perCaller = 1000, 64, 100
	syncCfg := s3persist.Config{Durability: s3persist.Sync}
	t := newCmpTable("Sync, 64 callers (1,000 sessions)", "calls/s")
	for _, be := range cmpAll(syncCfg) {
		b.Run(be.name, func(b *testing.B) {
			in := be.open(b)
			ids := in.createSessions(b, sessions, callers)
			total := callers * perCaller
			var rate float64
			var lat workload.Latencies
			for b.Loop() {
				in.resetCount()
				start := time.Now()
				var err error
				lat, err = workload.RunCallers(callers, total, cmpLimit, func(i int) error {
					return in.s.PacketStoreQoS12(ids[i%len(ids)], cmpPacket())
				})
				if err != nil {
					b.Fatal(err)
				}
				rate = float64(total) / time.Since(start).Seconds()
			}
			b.ReportMetric(rate, "calls/s")
			b.ReportMetric(micros(lat.P99()), "p99-µs")
			in.reportRequests(b, total)
			t.add(be.name, rate, "")
		})
	}
	t.print()
}

// Shutdown of 10,000 sessions in Sync mode, as VolantMQ stops: for every session a
// PacketsStore of 10 packets and a SubscriptionsStore, from two goroutines, then
// Shutdown; for s3persist after BeginShutdown, so that those calls stop waiting for
// their round trips. Without BeginShutdown every call waits for its own upload: that
// case runs 1,000 sessions only and is scaled to 10,000 (the calls are round trips one
// after the other on each goroutine, so their time is linear in the sessions).
func BenchmarkCompareSyncShutdown10k(b *testing.B) {
	const sessions = 10000
	syncCfg := s3persist.Config{Durability: s3persist.Sync}
	type variant struct {
		cmpBackend
		sessions int
		begin    bool
	}
	variants := []variant{
		{cmpMem(), sessions, false},
		{cmpBbolt(), sessions, false},
		{cmpS3("s3persist/memory-20ms", injectedLatency, syncCfg), sessions, true},
		{cmpMinio(syncCfg), sessions, true},
		{cmpS3("s3persist/memory-20ms", injectedLatency, syncCfg), sessions / 10, false},
	}
	variants[len(variants)-1].name = "s3persist/memory-20ms-no-BeginShutdown"
	t := newCmpTable("Sync shutdown of 10,000 sessions (10 packets + subscriptions each, 2 goroutines)", "s")
	sub := make([]byte, 64)
	packets := vlpersistence.PersistedPackets{QoS12: make([]*vlpersistence.PersistedPacket, 10)}
	for i := range packets.QoS12 {
		packets.QoS12[i] = cmpPacket()
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			var secs float64
			for b.Loop() {
				b.StopTimer()
				in := v.open(b)
				ids, err := workload.CreateAll(in.s, "client-", v.sessions, 64, cmpLimit)
				if err != nil {
					b.Fatal(err)
				}
				var before s3persist.Stats
				if in.s3 != nil {
					before = in.s3.Stats()
				}
				in.resetCount()
				b.StartTimer()
				start := time.Now()
				if v.begin {
					in.s3.BeginShutdown()
				}
				_, err = workload.RunCallers(2, len(ids), cmpLimit, func(i int) error {
					if err := in.s.PacketsStore(ids[i], packets); err != nil {
						return err
					}
					return in.s.SubscriptionsStore(ids[i], sub)
				})
				if err != nil {
					b.Fatal(err)
				}
				if err := in.p.Shutdown(); err != nil {
					b.Fatal(err)
				}
				secs = time.Since(start).Seconds()
				if in.s3 != nil {
					// A checkpoint in flight at Shutdown is waited for: it explains
					// outliers.
					in.reportRequests(b, 2*len(ids))
					b.ReportMetric(float64(in.s3.Stats().Checkpoints-before.Checkpoints), "checkpoints")
				}
			}
			b.ReportMetric(secs, "s")
			note := ""
			if v.sessions != sessions {
				scaled := secs * sessions / float64(v.sessions)
				b.ReportMetric(scaled, "s-scaled-to-10k")
				note = fmt.Sprintf("  (scaled from %d sessions: %.3g s)", v.sessions, secs)
				secs = scaled
			}
			t.add(v.name, secs, note)
		})
	}
	t.print()
}

// Cold start after 100,000 Sync calls, s3persist only (mem keeps nothing across
// instances; bbolt would take minutes of fsyncs to fill): a Sync instance over the
// in-memory store with 20 ms per request makes 100,000 calls from 64 goroutines (1,000
// Creates, then PacketStoreQoS12 round-robin) and then crashes: it is never shut down
// before the next instance takes over with ForceTakeover (a graceful Shutdown could
// checkpoint, and a crash leaves the whole journal to replay). Timed: New, Count and
// LoadForEach of that next instance, through a counting store with the same latency.
func BenchmarkCompareSyncColdStart(b *testing.B) {
	const sessions, callers, calls = 1000, 64, 100000
	b.Run("s3persist/memory-20ms", func(b *testing.B) {
		mem := s3store.NewMemory()
		first, err := s3persist.New(context.Background(), s3persist.Config{
			Store: s3store.NewDelayed(mem, injectedLatency), Durability: s3persist.Sync})
		if err != nil {
			b.Fatal(err)
		}
		// The crashed instance is stopped only when b ends; it is fenced by then.
		b.Cleanup(func() { _ = first.Shutdown() })
		s, err := first.Sessions()
		if err != nil {
			b.Fatal(err)
		}
		ids, err := workload.CreateAll(s, "s", sessions, callers, cmpLimit)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := workload.RunCallers(callers, calls-sessions, cmpLimit, func(i int) error {
			return s.PacketStoreQoS12(ids[i%len(ids)], cmpPacket())
		}); err != nil {
			b.Fatal(err)
		}
		// Checkpoints that the filling instance ran by itself (CheckpointBytes): New
		// reads their index and session records and replays only the journal after them.
		before := first.Stats()
		var secs float64
		var st s3store.CountingStats
		for b.Loop() {
			count := s3store.NewCounting(s3store.NewDelayed(mem, injectedLatency))
			start := time.Now()
			p, err := s3persist.New(context.Background(), s3persist.Config{Store: count, ForceTakeover: true})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = p.Shutdown() }) // after the next iteration's takeover: fenced
			s, err := p.Sessions()
			if err != nil {
				b.Fatal(err)
			}
			if n := s.Count(); n != sessions {
				b.Fatalf("Count: %d sessions, want %d", n, sessions)
			}
			n := 0
			if err := s.LoadForEach(loadSessionFunc(func([]byte, *vlpersistence.SessionState) error { n++; return nil }), nil); err != nil || n != sessions {
				b.Fatalf("LoadForEach: %v, %d sessions", err, n)
			}
			secs = time.Since(start).Seconds()
			st = count.Stats()
		}
		b.ReportMetric(secs, "s")
		b.ReportMetric(float64(st.Gets), "GETs")
		b.ReportMetric(float64(st.Lists), "LISTs")
		b.ReportMetric(float64(st.Requests()), "requests")
		b.ReportMetric(float64(st.BytesGot)/(1<<20), "MiB-got")
		b.ReportMetric(float64(before.Checkpoints), "checkpoints-before-crash")
		fmt.Printf("\nSync cold start after 100,000 Sync calls (s3persist only: mem keeps nothing, bbolt not run)\n"+
			"    %-40s %.3f s  %d GETs  %d LISTs  %d requests  %.1f MiB read  (%d checkpoints before the crash, %.1f MiB pinned by the journal only)\n\n",
			"s3persist/memory-20ms", secs, st.Gets, st.Lists, st.Requests(), float64(st.BytesGot)/(1<<20),
			before.Checkpoints, float64(before.PinnedBytes)/(1<<20))
	})
}

func micros(d time.Duration) float64 {
	return math.Round(float64(d.Nanoseconds())/1e3*10) / 10
}

package workload

// Drivers that take any vlpersistence.Sessions, so that s3persist and the VolantMQ
// reference plugins (mem, bbolt) run the same calls in the side-by-side comparison of
// the integration module (integration/compare_bench_test.go).

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"
)

// Latencies are the latencies of the calls of one run.
type Latencies []time.Duration

// P99 returns the 99th percentile, 0 for no calls. It sorts l.
func (l Latencies) P99() time.Duration {
	if len(l) == 0 {
		return 0
	}
	slices.Sort(l)
	return l[len(l)*99/100]
}

// errOverLimit is what RunCallers returns when a run outlasts its limit.
var errOverLimit = errors.New("workload: the run went past its time limit")

// RunCallers makes total calls from callers goroutines: goroutine c makes calls c,
// c+callers, c+2*callers... below total, one after the other, so that at any moment
// the goroutines are on neighbouring indices (round-robin over ids with ids[i%len(ids)]).
// It records every call's latency. A goroutine stops at its first error, at the first
// error of another, or when limit has passed since the start: a run never lasts longer
// than limit plus one call. The error is the first one, wrapped with the call's index.
func RunCallers(callers, total int, limit time.Duration, call func(i int) error) (Latencies, error) {
	if callers <= 0 {
		return nil, fmt.Errorf("workload: %d callers", callers)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex // guards all and first
		all      = make(Latencies, 0, total)
		first    error
		failed   = make(chan struct{})
		failOnce sync.Once
	)
	deadline := time.Now().Add(limit)
	fail := func(err error) {
		failOnce.Do(func() {
			mu.Lock()
			first = err
			mu.Unlock()
			close(failed)
		})
	}
	for c := range callers {
		wg.Go(func() {
			lat := make(Latencies, 0, total/callers+1)
			defer func() {
				mu.Lock()
				all = append(all, lat...)
				mu.Unlock()
			}()
			for i := c; i < total; i += callers {
				select {
				case <-failed:
					return
				default:
				}
				start := time.Now()
				if start.After(deadline) {
					fail(fmt.Errorf("%w (%v, call %d of %d)", errOverLimit, limit, i, total))
					return
				}
				if err := call(i); err != nil {
					fail(fmt.Errorf("workload: call %d: %w", i, err))
					return
				}
				lat = append(lat, time.Since(start))
			}
		})
	}
	wg.Wait()
	return all, first
}

// CreateAll creates n sessions named prefix000000... from callers goroutines (a Sync
// instance makes each creation durable before it returns: one goroutine would pay one
// round trip per session), each with a base as the broker writes it. It returns the ids
// in order.
func CreateAll(s vlpersistence.Sessions, prefix string, n, callers int, limit time.Duration) ([][]byte, error) {
	ids := make([][]byte, n)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "%s%06d", prefix, i)
	}
	_, err := RunCallers(callers, n, limit, func(i int) error {
		return s.Create(ids[i], &vlpersistence.SessionBase{Timestamp: "2026-12-01T00:00:00Z", Version: 4})
	})
	return ids, err
}

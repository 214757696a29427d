package s3store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/s3persist/s3persist/s3store"
	"github.com/s3persist/s3persist/s3store/storetest"
)

func TestInjectorConformanceWhileHealthy(t *testing.T) {
	storetest.Run(t, func(t *testing.T) s3store.Store { return s3store.NewInjector(newMemory(t), nil) })
}

func TestInjectorConformanceWithLatency(t *testing.T) {
	storetest.Run(t, func(t *testing.T) s3store.Store {
		return s3store.NewInjector(newMemory(t), s3store.Latency(100*time.Microsecond))
	})
}

// wantUnknownOutcome checks that err is an injected failure that a caller cannot take
// for an answer of the store.
func wantUnknownOutcome(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, s3store.ErrInjected) {
		t.Fatalf("%s: %v, want an error wrapping ErrInjected", what, err)
	}
	for _, s := range []error{s3store.ErrNotFound, s3store.ErrPreconditionFailed, s3store.ErrAccessDenied, s3store.ErrClosed} {
		if errors.Is(err, s) {
			t.Fatalf("%s: %v also wraps %v", what, err, s)
		}
	}
}

func TestInjectorFailsTheNthRequestBeforeTheStore(t *testing.T) {
	ctx := t.Context()
	mem := newMemory(t)
	in := s3store.NewInjector(mem, s3store.FailNth(2, s3store.FailBefore))
	if _, err := in.Put(ctx, "a", []byte("1"), s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := in.Put(ctx, "b", []byte("2"), s3store.PutOptions{})
	wantUnknownOutcome(t, "request 2", err)
	if _, _, err := mem.Get(ctx, "b"); !errors.Is(err, s3store.ErrNotFound) {
		t.Fatalf("a put failed before the store landed: %v", err)
	}
	if _, err := in.Put(ctx, "c", []byte("3"), s3store.PutOptions{}); err != nil {
		t.Fatalf("request 3: %v", err)
	}
	want := s3store.InjectorStats{Requests: 3, Passed: 2, FailedBefore: 1}
	if got := in.Stats(); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

// A lost acknowledgement: the write happened, and the caller gets an error that is not
// ErrPreconditionFailed, even for a conditional put the store refused.
func TestInjectorLosesTheAcknowledgementOfAnAppliedRequest(t *testing.T) {
	ctx := t.Context()
	mem := newMemory(t)
	for _, op := range []string{"put", "create-only put", "refused create-only put", "delete", "delete many", "get", "get range", "list"} {
		t.Run(op, func(t *testing.T) {
			if _, err := mem.Put(ctx, "old", []byte("o"), s3store.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			in := s3store.NewInjector(mem, s3store.FailNth(1, s3store.FailAfter))
			var err error
			switch op {
			case "put":
				_, err = in.Put(ctx, "new", []byte("n"), s3store.PutOptions{})
			case "create-only put":
				_, err = in.Put(ctx, "new", []byte("n"), s3store.PutOptions{IfNoneMatch: true})
			case "refused create-only put":
				_, err = in.Put(ctx, "old", []byte("n"), s3store.PutOptions{IfNoneMatch: true})
			case "delete":
				err = in.Delete(ctx, "old")
			case "delete many":
				err = in.DeleteMany(ctx, []string{"old", "new"})
				if dm, ok := errors.AsType[*s3store.DeleteManyError](err); !ok || len(dm.Remaining) != 2 {
					t.Fatalf("DeleteMany error %#v does not name both keys as possibly remaining", err)
				}
			case "get":
				_, _, err = in.Get(ctx, "old")
			case "get range":
				_, _, err = in.GetRange(ctx, "old", 0, 1)
			case "list":
				_, err = in.List(ctx, "", "", 0)
			}
			wantUnknownOutcome(t, op, err)
			_, _, oldErr := mem.Get(ctx, "old")
			data, _, newErr := mem.Get(ctx, "new")
			switch op {
			case "put", "create-only put":
				if newErr != nil || string(data) != "n" {
					t.Fatalf("the put was not applied: %q, %v", data, newErr)
				}
			case "refused create-only put":
				if d, _, _ := mem.Get(ctx, "old"); string(d) != "o" {
					t.Fatalf("a refused put changed the object: %q", d)
				}
			case "delete", "delete many":
				if !errors.Is(oldErr, s3store.ErrNotFound) {
					t.Fatalf("the delete was not applied: %v", oldErr)
				}
			}
			if got := in.Stats(); got.FailedAfter != 1 || got.Requests != 1 {
				t.Fatalf("Stats = %+v", got)
			}
			if err := mem.DeleteMany(ctx, []string{"old", "new"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestInjectorHangsARequestUntilItsContextEnds(t *testing.T) {
	mem := newMemory(t)
	in := s3store.NewInjector(mem, s3store.FailNth(1, s3store.Hang))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err := in.Put(ctx, "k", []byte("v"), s3store.PutOptions{})
	if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() == nil {
		t.Fatalf("hung put: %v (ctx %v), want the ctx's deadline", err, ctx.Err())
	}
	if mem.Len() != 0 {
		t.Fatal("a hung put landed")
	}
	if _, err := in.Put(t.Context(), "k", []byte("v"), s3store.PutOptions{}); err != nil {
		t.Fatalf("the next request: %v", err)
	}
	if got := in.Stats(); got.Hung != 1 || got.Passed != 1 {
		t.Fatalf("Stats = %+v", got)
	}
}

func TestInjectorAddsLatency(t *testing.T) {
	const d = 5 * time.Millisecond
	in := s3store.NewInjector(newMemory(t), s3store.Latency(d))
	start := time.Now()
	if _, err := in.Put(t.Context(), "k", []byte("v"), s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < d {
		t.Fatalf("a put with %v of latency took %v", d, took)
	}
	// A request whose ctx ends during the delay is not sent.
	ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
	defer cancel()
	in2 := s3store.NewInjector(newMemory(t), s3store.Latency(time.Hour))
	if _, err := in2.Put(ctx, "k", []byte("v"), s3store.PutOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put whose ctx ended during the delay: %v", err)
	}
	if in2.Unwrap().(*s3store.Memory).Len() != 0 {
		t.Fatal("a put whose ctx ended during its delay landed")
	}
}

// A crash at request k under concurrency: the k-1 requests that entered before it land
// and were acknowledged, request k lands (CrashAfter) or not (CrashBefore) and is not
// acknowledged, and nothing lands after Kill returns, however many goroutines go on
// calling.
func TestInjectorCrashAtRequestKUnderConcurrency(t *testing.T) {
	const workers, perWorker, k = 8, 40, 97
	for _, fault := range []s3store.Fault{s3store.CrashBefore, s3store.CrashAfter} {
		t.Run(fault.String(), func(t *testing.T) {
			mem := newMemory(t)
			in := s3store.NewInjector(mem, s3store.FailNth(k, fault))
			var (
				wg    sync.WaitGroup
				mu    sync.Mutex
				acked = map[string]bool{}
			)
			for w := range workers {
				wg.Go(func() {
					for i := range perWorker {
						key := fmt.Sprintf("w%d/%03d", w, i)
						_, err := in.Put(t.Context(), key, []byte(key), s3store.PutOptions{})
						if err == nil {
							mu.Lock()
							acked[key] = true
							mu.Unlock()
						} else if !errors.Is(err, s3store.ErrInjected) {
							t.Errorf("put %s: %v", key, err)
						}
					}
				})
			}
			<-in.Dead()
			in.Kill()
			landed := mem.Len()
			wg.Wait()
			if mem.Len() != landed {
				t.Fatalf("%d objects landed after Kill returned", mem.Len()-landed)
			}
			want := k - 1
			if fault == s3store.CrashAfter {
				want = k
			}
			if landed != want || len(acked) != k-1 {
				t.Fatalf("crash at request %d: %d objects landed (want %d), %d acknowledged (want %d)", k, landed, want, len(acked), k-1)
			}
			for key := range acked {
				if _, _, err := mem.Get(t.Context(), key); err != nil {
					t.Fatalf("acknowledged %s is missing: %v", key, err)
				}
			}
			st := in.Stats()
			if st.Requests != workers*perWorker || st.Passed != k-1 || st.FailedBefore+st.FailedAfter != workers*perWorker-(k-1) {
				t.Fatalf("Stats = %+v", st)
			}
		})
	}
}

// blockingStore holds every Put until release is closed.
type blockingStore struct {
	s3store.Store
	entered chan struct{}
	release chan struct{}
}

func (b *blockingStore) Put(ctx context.Context, key string, data []byte, opts s3store.PutOptions) (s3store.ObjectInfo, error) {
	b.entered <- struct{}{}
	<-b.release
	return b.Store.Put(ctx, key, data, opts)
}

// Kill returns only once the requests already in the wrapped store have returned, so
// that nothing of a dead instance lands afterwards.
func TestInjectorKillWaitsForRequestsInFlight(t *testing.T) {
	mem := newMemory(t)
	b := &blockingStore{Store: mem, entered: make(chan struct{}), release: make(chan struct{})}
	in := s3store.NewInjector(b, nil)
	putDone := make(chan error, 1)
	go func() {
		_, err := in.Put(t.Context(), "k", []byte("v"), s3store.PutOptions{})
		putDone <- err
	}()
	<-b.entered
	killed := make(chan struct{})
	go func() { in.Kill(); close(killed) }()
	<-in.Dead()
	close(b.release)
	<-killed
	if mem.Len() != 1 {
		t.Fatal("Kill returned before the put in flight landed")
	}
	if err := <-putDone; err != nil {
		t.Fatalf("a put that entered before Kill: %v", err)
	}
	if _, err := in.Put(t.Context(), "k2", []byte("v"), s3store.PutOptions{}); !errors.Is(err, s3store.ErrInjected) {
		t.Fatalf("put after Kill: %v", err)
	}
	if err := in.DeleteMany(t.Context(), []string{"k"}); !errors.Is(err, s3store.ErrInjected) || mem.Len() != 1 {
		t.Fatalf("delete many after Kill: %v, %d objects", err, mem.Len())
	}
}

// A GetRange is a "get" to a Plan, told apart by its range, and takes every fault a Get
// takes; its errors name it "get range".
func TestInjectorFilesAGetRangeAsAGet(t *testing.T) {
	ctx := t.Context()
	mem := newMemory(t)
	if _, err := mem.Put(ctx, "k", []byte("0123456789"), s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	var seen []s3store.Request
	in := s3store.NewInjector(mem, func(r s3store.Request) s3store.Action {
		seen = append(seen, r)
		if r.Op == "get" && r.Length > 0 && r.N > 2 {
			return s3store.Action{Fault: s3store.FailBefore}
		}
		return s3store.Action{}
	})
	if _, _, err := in.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if data, info, err := in.GetRange(ctx, "k", 2, 3); err != nil || string(data) != "234" || info.Size != 10 {
		t.Fatalf("GetRange = %q, %+v, %v", data, info, err)
	}
	_, _, err := in.GetRange(ctx, "k", 4, 5)
	wantUnknownOutcome(t, "a ranged get failed before the store", err)
	if !strings.HasPrefix(err.Error(), `s3store: get range "k": `) {
		t.Fatalf("error %q does not name the call", err)
	}
	// Refused before any request: not numbered, not shown to the Plan.
	if _, _, err := in.GetRange(ctx, "k", -1, 5); !errors.Is(err, s3store.ErrInvalidArgument) {
		t.Fatalf("GetRange with a negative offset: %v", err)
	}
	want := []s3store.Request{
		{N: 1, Op: "get", Key: "k"},
		{N: 2, Op: "get", Key: "k", Offset: 2, Length: 3},
		{N: 3, Op: "get", Key: "k", Offset: 4, Length: 5},
	}
	if !slices.Equal(seen, want) {
		t.Fatalf("the Plan saw %+v, want %+v", seen, want)
	}
	if got := in.Stats(); got != (s3store.InjectorStats{Requests: 3, Passed: 2, FailedBefore: 1}) {
		t.Fatalf("Stats = %+v", got)
	}
}

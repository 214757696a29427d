package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/s3store"
)

// newFaultyMinio opens a store on a fresh target whose requests go through a
// FaultTransport, with the given retries.
func newFaultyMinio(t *testing.T, maxRetries int) (s3store.Store, *s3store.FaultTransport) {
	t.Helper()
	ft := s3store.NewFaultTransport(http.DefaultTransport.(*http.Transport).Clone(), 1)
	t.Cleanup(ft.CloseIdleConnections)
	tgt := srv.NewTarget(t)
	cfg := minioConfig(tgt.Bucket)
	cfg.Transport = ft
	cfg.MaxRetries = maxRetries
	cfg.RequestTimeout = 10 * time.Second
	m, err := s3store.NewMinio(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if tgt.Prefix == "" {
		return m, ft
	}
	p, err := s3store.WithPrefix(m, tgt.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	return p, ft
}

// A create-only put whose acknowledgement is lost has written its object, and the
// store says the outcome is unknown: not ErrPreconditionFailed, which would claim that
// another writer got there first. It is sent once: minio-go does not retry it.
func TestALostAckOfACreateOnlyPutLeavesTheObjectAndAnUnknownOutcome(t *testing.T) {
	store, ft := newFaultyMinio(t, 3)
	ctx := context.Background()
	if err := ft.Add(s3store.FaultRule{Kind: s3store.FaultLostAck, Method: http.MethodPut, Nth: 1}); err != nil {
		t.Fatal(err)
	}
	before := ft.Stats().Requests
	_, err := store.Put(ctx, "owner", []byte("epoch-1"), s3store.PutOptions{IfNoneMatch: true})
	if err == nil || errors.Is(err, s3store.ErrPreconditionFailed) || !errors.Is(err, s3store.ErrInjected) {
		t.Fatalf("create-only put with a lost ack: %v, want an unknown outcome (a transport error)", err)
	}
	if n := ft.Stats().Requests - before; n != 1 {
		t.Fatalf("the conditional put took %d requests, want 1 (never retried)", n)
	}
	data, _, err := store.Get(ctx, "owner")
	if err != nil || string(data) != "epoch-1" {
		t.Fatalf("after the lost ack the object is %q, %v; want it written", data, err)
	}
	// Sent again, the same put now meets its own write.
	if _, err := store.Put(ctx, "owner", []byte("epoch-1"), s3store.PutOptions{IfNoneMatch: true}); !errors.Is(err, s3store.ErrPreconditionFailed) {
		t.Fatalf("create-only put again: %v, want ErrPreconditionFailed", err)
	}
}

// Which failures minio-go retries under s3store, request by request: a fault on the
// first attempt of each call, with MaxRetries 3.
func TestWhatMinioGoRetriesUnderS3store(t *testing.T) {
	ctx := context.Background()
	type call struct {
		name   string
		method string
		do     func(s3store.Store) error
	}
	put := call{"unconditional put", http.MethodPut, func(s s3store.Store) error {
		_, err := s.Put(ctx, "k", []byte("v"), s3store.PutOptions{})
		return err
	}}
	createOnly := call{"create-only put", http.MethodPut, func(s s3store.Store) error {
		_, err := s.Put(ctx, "new", []byte("v"), s3store.PutOptions{IfNoneMatch: true})
		return err
	}}
	get := call{"get", http.MethodGet, func(s s3store.Store) error {
		data, _, err := s.Get(ctx, "k")
		if err == nil && string(data) != "v" {
			return fmt.Errorf("got %q", data)
		}
		return err
	}}
	list := call{"list", http.MethodGet, func(s s3store.Store) error {
		page, err := s.List(ctx, "", "", 0)
		if err == nil && len(page.Objects) == 0 {
			return errors.New("empty listing")
		}
		return err
	}}
	deleteMany := call{"delete many", http.MethodPost, func(s s3store.Store) error {
		return s.DeleteMany(ctx, []string{"gone-1", "gone-2"})
	}}
	for _, c := range []struct {
		kind      s3store.FaultKind
		call      call
		wantErr   bool
		wantTries int64
	}{
		{s3store.FaultRefuse, put, false, 2},
		{s3store.FaultServerError, put, false, 2},
		{s3store.FaultLostAck, put, false, 2},
		{s3store.FaultTimeout, put, false, 2},
		{s3store.FaultRefuse, createOnly, true, 1},
		{s3store.FaultServerError, createOnly, true, 1},
		{s3store.FaultRefuse, get, false, 2},
		{s3store.FaultServerError, get, false, 2},
		{s3store.FaultResetBody, get, true, 1}, // the body is read after minio-go returned
		{s3store.FaultResetBody, list, true, 1},
		{s3store.FaultRefuse, list, false, 2},
		{s3store.FaultLostAck, deleteMany, false, 2},
		{s3store.FaultResetBody, deleteMany, true, 1},
	} {
		t.Run(c.kind.String()+" on "+c.call.name, func(t *testing.T) {
			store, ft := newFaultyMinio(t, 3)
			if _, err := store.Put(ctx, "k", []byte("v"), s3store.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			rule := s3store.FaultRule{Kind: c.kind, Method: c.call.method, Nth: 1}
			if c.kind == s3store.FaultTimeout {
				rule.Delay = 100 * time.Millisecond
			}
			if err := ft.Add(rule); err != nil {
				t.Fatal(err)
			}
			before := ft.Stats().Requests
			err := c.call.do(store)
			tries := ft.Stats().Requests - before
			if (err != nil) != c.wantErr || tries != c.wantTries {
				t.Fatalf("error %v after %d requests; want error %t after %d", err, tries, c.wantErr, c.wantTries)
			}
			if err != nil && (errors.Is(err, s3store.ErrPreconditionFailed) || errors.Is(err, s3store.ErrNotFound)) {
				t.Fatalf("a transport fault reported as an answer: %v", err)
			}
		})
	}
}

// faultModel is what a workload wrote, per session: the packets a reopened instance
// must hold, in order, and those it may hold (their store call failed: the outcome is
// unknown).
type faultModel struct {
	mu       sync.Mutex // guards the maps
	queues   map[string][]string
	maybe    map[string]map[string]bool
	retained string
	failures map[string]int // failed calls by kind of error
	samples  []string       // the first error of each kind
	slowest  time.Duration  // the longest store or drain call
}

func newFaultModel() *faultModel {
	return &faultModel{queues: map[string][]string{}, maybe: map[string]map[string]bool{}, failures: map[string]int{}}
}

func (m *faultModel) failed(what string, err error) {
	kind := "other"
	switch {
	case applied(err):
		kind = "not known to be durable (change kept)"
	case errors.Is(err, s3persist.ErrStoreBehind):
		kind = "store behind (change refused at once)"
	case strings.Contains(err.Error(), "no room"):
		kind = "no room under MaxPendingBytes (change refused)"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := what + ": " + kind
	if m.failures[key] == 0 {
		m.samples = append(m.samples, key+": "+err.Error())
	}
	m.failures[key]++
}

// took records how long one call took.
func (m *faultModel) took(d time.Duration) {
	m.mu.Lock()
	m.slowest = max(m.slowest, d)
	m.mu.Unlock()
}

// applied reports whether a failed call's change was applied anyway: in Sync mode a
// call that timed out waiting for durability keeps its change, which the journal
// uploads later (README, Durability).
func applied(err error) bool { return strings.Contains(err.Error(), "is not known to be durable") }

// runSessionWorkload runs rounds of stores and drains on session id of p and records
// them in m. It creates the session first.
func runSessionWorkload(t *testing.T, p vlpersistence.IFace, m *faultModel, id string, ops int, pace time.Duration, size int, stop <-chan struct{}) {
	s, _ := p.Sessions()
	if err := s.Create([]byte(id), &vlpersistence.SessionBase{Timestamp: "t", Version: 5}); err != nil {
		t.Errorf("create %s: %v", id, err)
		return
	}
	m.mu.Lock()
	m.queues[id] = nil
	m.mu.Unlock()
	for i := range ops {
		select {
		case <-stop:
			return
		case <-time.After(pace):
		}
		if i%25 == 24 {
			var got []string
			began := time.Now()
			err := s.PacketsForEachQoS12([]byte(id), nil, func(_ interface{}, pk *vlpersistence.PersistedPacket) (bool, error) {
				got = append(got, string(bytes.TrimRight(pk.Data, "\x00")))
				return true, nil
			})
			m.took(time.Since(began))
			if err != nil {
				m.failed("drain", err)
			}
			m.mu.Lock()
			if !sameOrMaybe(got, m.queues[id], m.maybe[id]) {
				t.Errorf("drain of %s: %v, want %v (plus any of %v)", id, got, m.queues[id], m.maybe[id])
			}
			// A removal that could not be journaled (no room) was not applied.
			if err == nil || applied(err) {
				m.queues[id], m.maybe[id] = nil, nil
			}
			m.mu.Unlock()
			continue
		}
		data := fmt.Sprintf("%s-%04d", id, i)
		payload := []byte(data)
		if len(payload) < size {
			payload = append(payload, make([]byte, size-len(payload))...)
		}
		began := time.Now()
		err := s.PacketStoreQoS12([]byte(id), &vlpersistence.PersistedPacket{Data: payload, ExpireAt: "x"})
		m.took(time.Since(began))
		m.mu.Lock()
		switch {
		case err == nil || applied(err):
			m.queues[id] = append(m.queues[id], data)
		case errors.Is(err, s3persist.ErrStoreBehind) || strings.Contains(err.Error(), "no room"):
			// Refused before it was applied: it must not come back.
		default:
			if m.maybe[id] == nil {
				m.maybe[id] = map[string]bool{}
			}
			m.maybe[id][data] = true
		}
		m.mu.Unlock()
		if err != nil {
			m.failed("store", err)
		}
	}
}

// sameOrMaybe reports whether got is want with some of maybe mixed in, in order.
func sameOrMaybe(got, want []string, maybe map[string]bool) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
			continue
		}
		if !maybe[g] {
			return false
		}
	}
	return i == len(want)
}

// check opens the bucket again and compares every session with the model.
func (m *faultModel) check(t *testing.T, cfg s3persist.Config) {
	t.Helper()
	p, err := s3persist.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer func() {
		if err := p.Shutdown(); err != nil {
			t.Error(err)
		}
	}()
	s, _ := p.Sessions()
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := s.Count(); n != uint64(len(m.queues)) {
		t.Errorf("reopened with %d sessions, want %d", n, len(m.queues))
	}
	lost := 0
	for id, want := range m.queues {
		var got []string
		err := s.PacketsForEachQoS12([]byte(id), nil, func(_ interface{}, pk *vlpersistence.PersistedPacket) (bool, error) {
			got = append(got, string(bytes.TrimRight(pk.Data, "\x00")))
			return false, nil
		})
		if err != nil {
			t.Errorf("read %s: %v", id, err)
			continue
		}
		if !sameOrMaybe(got, want, m.maybe[id]) {
			lost++
			t.Errorf("session %s after reopen: %d packets %v, want %d %v (plus any of %d unknown)", id, len(got), got, len(want), want, len(m.maybe[id]))
		}
	}
	r, _ := p.Retained()
	rs, err := r.Load()
	if err != nil || m.retained != "" && (len(rs) != 1 || string(rs[0].Data) != m.retained) {
		t.Errorf("retained after reopen: %v, %v; want %q", rs, err, m.retained)
	}
}

// The adapter over MinIO with every kind of fault injected at random into its requests
// runs a broker-like workload; once a Flush succeeds, a new instance finds everything.
func TestAdapterUnderRandomHTTPFaultsLosesNothingAfterFlush(t *testing.T) {
	// Async without minio-go's retries, so that the journal's own retries and failed
	// checkpoints are exercised; Sync with them (the default), as deployed.
	for _, c := range []struct {
		mode       s3persist.Durability
		maxRetries int
		ops        int
		pace       time.Duration
	}{
		{s3persist.Async, -1, 300, 5 * time.Millisecond},
		{s3persist.Sync, 0, 80, 0},
	} {
		mode := c.mode
		t.Run(mode.String(), func(t *testing.T) {
			tgt := srv.NewTarget(t)
			ft := s3store.NewFaultTransport(http.DefaultTransport.(*http.Transport).Clone(), uint64(mode)+1)
			t.Cleanup(ft.CloseIdleConnections)
			s3cfg := minioConfig(tgt.Bucket)
			s3cfg.Transport = ft
			s3cfg.RequestTimeout = 5 * time.Second
			s3cfg.MaxRetries = c.maxRetries
			cfg := s3persist.Config{S3: s3cfg, Prefix: tgt.Prefix, Durability: mode,
				FlushInterval: 20 * time.Millisecond, CheckpointBytes: 16 << 10, CheckpointInterval: 200 * time.Millisecond,
				CallTimeout: 3 * time.Second, ShutdownTimeout: 10 * time.Second}
			p, err := s3persist.New(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			// From here on, about one request in seven meets a fault of some kind.
			for _, r := range []s3store.FaultRule{
				{Kind: s3store.FaultRefuse, Rate: 0.03},
				{Kind: s3store.FaultTimeout, Rate: 0.02, Delay: 200 * time.Millisecond},
				{Kind: s3store.FaultServerError, Rate: 0.03},
				{Kind: s3store.FaultLostAck, Rate: 0.03},
				{Kind: s3store.FaultResetBody, Rate: 0.03},
				{Kind: s3store.FaultLatency, Rate: 0.1, Delay: 20 * time.Millisecond},
			} {
				if err := ft.Add(r); err != nil {
					t.Fatal(err)
				}
			}
			m := newFaultModel()
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() { runSessionWorkload(t, p, m, fmt.Sprintf("client-%d", i), c.ops, c.pace, 0, nil) })
			}
			wg.Wait()
			r, _ := p.Retained()
			m.retained = "retained-" + mode.String()
			if err := r.Store([]*vlpersistence.PersistedPacket{{Data: []byte(m.retained)}}); err != nil {
				m.failed("retained", err) // kept in memory; Flush uploads it
			}
			flushed := false
			for attempt := 0; attempt < 20 && !flushed; attempt++ {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := p.Flush(ctx)
				cancel()
				if err != nil {
					m.failed("flush", err)
				}
				flushed = err == nil
			}
			if !flushed {
				t.Fatal("no Flush succeeded in 20 attempts under faults")
			}
			st := ft.Stats()
			ft.Clear()
			if err := p.Shutdown(); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			ps := p.Stats()
			t.Logf("%s: faults %v; journal retries %d, checkpoints %d, failed checkpoints %d; failed calls %v",
				mode, st, ps.Journal.Retries, ps.Checkpoints, ps.CheckpointFailures, m.failures)
			if st.Faults() == 0 {
				t.Fatal("no fault was injected")
			}
			cfg.S3.Transport, cfg.S3.RequestTimeout = nil, 0
			m.check(t, cfg)
		})
	}
}

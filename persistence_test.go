package s3persist

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist/persistencetest"
	"github.com/s3persist/s3persist/s3store"
)

// memoryBackend runs the conformance suite on s3persist over an in-memory store behind a
// fault switch. Reopen opens a new instance on the same store after Shutdown, Crash
// without it (this release writes through: a nil return is durable, G3), and Break makes
// every request of the instance fail.
func memoryBackend(prefix string) persistencetest.Backend {
	var mu sync.Mutex
	stores := map[vlpersistence.IFace]*s3store.Faulty{}
	open := func(t testing.TB, mem *s3store.Memory) vlpersistence.IFace {
		store := s3store.NewFaulty(mem)
		p, err := New(context.Background(), Config{Store: store, Prefix: prefix})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		mu.Lock()
		stores[p] = store
		mu.Unlock()
		return p
	}
	memOf := func(inst vlpersistence.IFace) *s3store.Memory {
		mu.Lock()
		defer mu.Unlock()
		return stores[inst].Unwrap().(*s3store.Memory)
	}
	return persistencetest.Backend{
		Open: func(t testing.TB) vlpersistence.IFace { return open(t, s3store.NewMemory()) },
		Reopen: func(t testing.TB, old vlpersistence.IFace) vlpersistence.IFace {
			if err := old.Shutdown(); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			return open(t, memOf(old))
		},
		Crash: func(t testing.TB, old vlpersistence.IFace) vlpersistence.IFace {
			// The old instance stays as it is, but cut off from storage, as a dead
			// process would be: nothing it still holds can reach the bucket.
			mu.Lock()
			stores[old].SetFailing(true)
			mu.Unlock()
			return open(t, memOf(old))
		},
		Break: func(t testing.TB, inst vlpersistence.IFace) {
			mu.Lock()
			defer mu.Unlock()
			stores[inst].SetFailing(true)
		},
	}
}

func TestConformanceOnMemoryStore(t *testing.T) {
	persistencetest.Run(t, memoryBackend(""))
}

func TestConformanceOnMemoryStoreWithPrefix(t *testing.T) {
	persistencetest.Run(t, memoryBackend("brokers/eu-1/"))
}

// fixture is an instance over a counting in-memory store.
type fixture struct {
	t     *testing.T
	mem   *s3store.Memory
	count *s3store.Counting
	p     *Persistence
	s     vlpersistence.Sessions
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, mem: s3store.NewMemory()}
	f.reopen()
	return f
}

// reopen abandons the current instance (no Shutdown: a crash) and opens a new one.
func (f *fixture) reopen() {
	f.t.Helper()
	f.count = s3store.NewCounting(f.mem)
	p, err := New(context.Background(), Config{Store: f.count})
	if err != nil {
		f.t.Fatalf("New: %v", err)
	}
	f.p = p
	f.s, _ = p.Sessions()
	f.count.Reset()
}

func (f *fixture) requests() int64 {
	st := f.count.Stats()
	return st.Requests()
}

func pkt(s string) *vlpersistence.PersistedPacket {
	return &vlpersistence.PersistedPacket{Data: []byte(s)}
}

func (f *fixture) drain(id string, q func(id []byte, ctx interface{}, l vlpersistence.PacketLoader) error, keep func(string) bool) []string {
	f.t.Helper()
	var got []string
	err := q([]byte(id), nil, func(_ interface{}, p *vlpersistence.PersistedPacket) (bool, error) {
		got = append(got, string(p.Data))
		return !keep(string(p.Data)), nil
	})
	if err != nil {
		f.t.Fatalf("PacketsForEach %q: %v", id, err)
	}
	return got
}

// keepNone and keepAll are keep functions for drain: remove every packet, or none.
func keepNone(string) bool { return false }
func keepAll(string) bool  { return true }

func TestReadsOfEmptyOrMissingSessionsMakeNoRequest(t *testing.T) {
	f := newFixture(t)
	if err := f.s.Create([]byte("a"), &vlpersistence.SessionBase{Timestamp: "t", Version: 4}); err != nil {
		t.Fatal(err)
	}
	f.count.Reset()
	for _, id := range []string{"a", "missing"} {
		f.s.Exists([]byte(id))
		f.s.Count()
		_, _ = f.s.PacketCountQoS12([]byte(id))
		f.drain(id, f.s.PacketsForEachQoS0, keepNone)
		f.drain(id, f.s.PacketsForEachQoS12, keepNone)
		f.drain(id, f.s.PacketsForEachUnAck, keepNone)
		if err := f.s.PacketsStore([]byte(id), vlpersistence.PersistedPackets{QoS12: []*vlpersistence.PersistedPacket{nil}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.s.LoadForEach(loaderFunc(func([]byte, *vlpersistence.SessionState) error { return nil }), nil); err != nil {
		t.Fatal(err)
	}
	if n := f.requests(); n != 0 {
		t.Fatalf("reads of empty and missing sessions made %d requests: %+v", n, f.count.Stats())
	}
}

type loaderFunc func(id []byte, st *vlpersistence.SessionState) error

func (l loaderFunc) LoadSession(_ interface{}, id []byte, st *vlpersistence.SessionState) error {
	return l(id, st)
}

func TestAStoreIsOnePutAndAnInOrderDrainIsOneDelete(t *testing.T) {
	f := newFixture(t)
	id := []byte("sub")
	if err := f.s.Create(id, nil); err != nil {
		t.Fatal(err)
	}
	f.count.Reset()
	for i := range 10 {
		if err := f.s.PacketStoreQoS12(id, pkt(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if st := f.count.Stats(); st.Puts != 10 || st.Requests() != 10 {
		t.Fatalf("10 stores: %+v, want 10 puts and nothing else", st)
	}
	f.count.Reset()
	if got := f.drain("sub", f.s.PacketsForEachQoS12, keepNone); len(got) != 10 {
		t.Fatalf("drained %v", got)
	}
	// 10 gets of the batches, and one multi-object delete; no session record put.
	if st := f.count.Stats(); st.Gets != 10 || st.DeleteManyRequests != 1 || st.Puts != 0 {
		t.Fatalf("drain: %+v, want 10 gets and one multi-delete", st)
	}
	if f.mem.Len() != 2 { // system and session record
		t.Fatalf("objects left after the drain: %v", f.mem.Keys())
	}
}

func TestPartialDrainMarksRemovalsDurably(t *testing.T) {
	f := newFixture(t)
	id := []byte("x")
	if err := f.s.Create(id, nil); err != nil {
		t.Fatal(err)
	}
	qos12 := []*vlpersistence.PersistedPacket{pkt("1"), pkt("2"), pkt("3"), pkt("4")}
	if err := f.s.PacketsStore(id, vlpersistence.PersistedPackets{QoS12: qos12, QoS0: []*vlpersistence.PersistedPacket{pkt("q0")}}); err != nil {
		t.Fatal(err)
	}
	// Remove 1 and 3, keep 2 and 4 (the batch stays: the removals go to the record).
	got := f.drain("x", f.s.PacketsForEachQoS12, func(s string) bool { return s == "2" || s == "4" })
	if strings.Join(got, ",") != "1,2,3,4" {
		t.Fatalf("visited %v", got)
	}
	f.reopen()
	if got := f.drain("x", f.s.PacketsForEachQoS12, keepNone); strings.Join(got, ",") != "2,4" {
		t.Fatalf("after restart the QoS12 queue holds %v, want 2,4", got)
	}
	if got := f.drain("x", f.s.PacketsForEachQoS0, keepNone); strings.Join(got, ",") != "q0" {
		t.Fatalf("after restart the QoS0 queue holds %v, want q0", got)
	}
	// Drain everything: the batch goes, and a restart finds the queues empty.
	f.drain("x", f.s.PacketsForEachQoS12, keepAll)
	f.drain("x", f.s.PacketsForEachQoS0, keepAll)
	f.reopen()
	for q, n := range map[string]func([]byte) (uint64, error){"QoS0": f.s.PacketCountQoS0, "QoS12": f.s.PacketCountQoS12} {
		if c, err := n(id); err != nil || c != 0 {
			t.Fatalf("%s count after full drain and restart: %d, %v", q, c, err)
		}
	}
	if keys := f.mem.Keys(); len(keys) != 2 {
		t.Fatalf("objects left: %v", keys)
	}
}

func TestPacketsOfADeletedIncarnationNeverReappear(t *testing.T) {
	f := newFixture(t)
	id := []byte("phoenix")
	if err := f.s.Create(id, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.s.PacketStoreQoS12(id, pkt("old")); err != nil {
		t.Fatal(err)
	}
	// A batch of the old incarnation survives the delete (as after a crash between the
	// record's deletion and the batches').
	leftover := make(map[string][]byte)
	for _, k := range f.mem.Keys() {
		if strings.Contains(k, "/b/") {
			data, _, err := f.mem.Get(context.Background(), k)
			if err != nil {
				t.Fatal(err)
			}
			leftover[k] = data
		}
	}
	if err := f.s.Delete(id); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Create(id, nil); err != nil {
		t.Fatal(err)
	}
	for k, data := range leftover {
		if _, err := f.mem.Put(context.Background(), k, data, s3store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.s.PacketStoreQoS12(id, pkt("new")); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	if got := f.drain("phoenix", f.s.PacketsForEachQoS12, keepNone); strings.Join(got, ",") != "new" {
		t.Fatalf("queue after delete, create and restart: %v, want only new", got)
	}
	for k := range leftover {
		if _, _, err := f.mem.Get(context.Background(), k); !errors.Is(err, s3store.ErrNotFound) {
			t.Fatalf("leftover batch %q of the old incarnation was not collected at start: %v", k, err)
		}
	}
}

// Stores racing with Delete and Create may land in either incarnation, but a store that
// returned before Delete began belongs to the old one and must never be visited in the
// new one, neither live nor after a restart (which rebuilds the index from the bucket).
func TestStoresRacingDeleteAndCreateNeverReachTheNewIncarnation(t *testing.T) {
	for round := range 20 {
		f := newFixture(t)
		id := []byte(fmt.Sprint("race-", round))
		if err := f.s.Create(id, nil); err != nil {
			t.Fatal(err)
		}
		var deleting atomic.Bool
		var mu sync.Mutex
		old := map[string]bool{} // packets whose store returned before Delete began
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := range 25 {
					data := fmt.Sprintf("w%d-%d", w, i)
					err := f.s.PacketStoreQoS12(id, pkt(data))
					if err != nil && err != vlpersistence.ErrNotFound {
						t.Errorf("store: %v", err)
					}
					if !deleting.Load() {
						mu.Lock()
						old[data] = true
						mu.Unlock()
					}
				}
			})
		}
		deleting.Store(true)
		if err := f.s.Delete(id); err != nil {
			t.Fatal(err)
		}
		if err := f.s.Create(id, nil); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		for _, view := range []string{"live", "restart"} {
			if view == "restart" {
				f.reopen()
			}
			for _, got := range f.drain(string(id), f.s.PacketsForEachQoS12, keepNone) {
				if old[got] {
					t.Fatalf("round %d, %s: the new incarnation holds %q, stored before Delete", round, view, got)
				}
			}
		}
	}
}

func TestCorruptObjectsAreReportedAndTheRestLoads(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for i := range 20 {
		id := []byte(fmt.Sprint("good-", i))
		if err := f.s.Create(id, &vlpersistence.SessionBase{Version: 4}); err != nil {
			t.Fatal(err)
		}
		if err := f.s.PacketStoreQoS12(id, pkt("m")); err != nil {
			t.Fatal(err)
		}
	}
	long := bytes.Repeat([]byte("L"), 5000) // hashed key: the id is only inside the record
	bad := map[string]func([]byte) []byte{
		"truncated":     func(b []byte) []byte { return b[:len(b)/2] },
		"random":        func([]byte) []byte { return []byte("\x9f\xff\x00garbage\x01\x02") },
		"wrong-version": func(b []byte) []byte { return bytes.Replace(b, []byte{0x00, 0x01}, []byte{0x00, 0x07}, 1) },
		"empty":         func([]byte) []byte { return nil },
		string(long):    func(b []byte) []byte { return b[:3] },
	}
	for name, damage := range bad {
		id := []byte(name)
		if err := f.s.Create(id, nil); err != nil {
			t.Fatal(err)
		}
		data, _, err := f.mem.Get(ctx, sessionKey(id))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.mem.Put(ctx, sessionKey(id), damage(data), s3store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A corrupt batch in a good session, and a corrupt retained set.
	var batch string
	for _, k := range f.mem.Keys() {
		if strings.HasPrefix(k, clientPrefix([]byte("good-0"))+batchDir) {
			batch = k
		}
	}
	if _, err := f.mem.Put(ctx, batch, []byte{0xa1}, s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.mem.Put(ctx, keyRetained, []byte("not cbor"), s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	f.reopen()
	if n := f.s.Count(); n != 25 {
		t.Fatalf("Count = %d, want 25 (corrupt sessions included)", n)
	}
	broken := 0
	err := f.s.LoadForEach(loaderFunc(func(id []byte, st *vlpersistence.SessionState) error {
		if len(st.Errors) > 0 {
			broken++
			if !errors.Is(st.Errors[0], vlpersistence.ErrBrokenEntry) {
				t.Errorf("session %q: error %v does not wrap ErrBrokenEntry", trim(id), st.Errors[0])
			}
			return nil
		}
		if !strings.HasPrefix(string(id), "good-") || st.Version != 4 {
			t.Errorf("session %q loaded with state %+v", trim(id), st)
		}
		return nil
	}), nil)
	if err != nil || broken != len(bad) {
		t.Fatalf("LoadForEach: %v, %d broken sessions reported, want %d", err, broken, len(bad))
	}
	// The corrupt batch is reported and skipped; it stays for inspection.
	err = f.s.PacketsForEachQoS12([]byte("good-0"), nil, func(interface{}, *vlpersistence.PersistedPacket) (bool, error) { return true, nil })
	if !errors.Is(err, vlpersistence.ErrBrokenEntry) {
		t.Fatalf("draining a corrupt batch: %v, want an error wrapping ErrBrokenEntry", err)
	}
	if _, _, err := f.mem.Get(ctx, batch); err != nil {
		t.Fatalf("the corrupt batch was not left in place: %v", err)
	}
	r, _ := f.p.Retained()
	if _, err := r.Load(); !errors.Is(err, vlpersistence.ErrBrokenEntry) || !strings.Contains(err.Error(), keyRetained) {
		t.Fatalf("Retained.Load over a corrupt object: %v", err)
	}
	// A corrupt session can still be deleted, objects and all, and its id reused.
	if err := f.s.Delete([]byte("truncated")); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Create([]byte("truncated"), nil); err != nil {
		t.Fatal(err)
	}
	if err := f.s.PacketStoreQoS0([]byte("random"), pkt("x")); !errors.Is(err, vlpersistence.ErrBrokenEntry) {
		t.Fatalf("storing into a corrupt session: %v", err)
	}
}

func TestForeignObjectsAreLeftAlone(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	foreign := []string{"c/readme.txt", "c/zz/x/session", clientPrefix([]byte("a")) + "notes", "other/thing"}
	for _, k := range foreign {
		if _, err := f.mem.Put(ctx, k, []byte("hello"), s3store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f.reopen()
	if n := f.s.Count(); n != 0 {
		t.Fatalf("Count = %d with only foreign objects", n)
	}
	for _, k := range foreign {
		if _, _, err := f.mem.Get(ctx, k); err != nil {
			t.Fatalf("foreign object %q: %v", k, err)
		}
	}
}

func TestNewRefusesAnotherLayoutOrAForeignSystemObject(t *testing.T) {
	for name, data := range map[string][]byte{
		"another layout": func() []byte {
			b, _ := encode(systemRecord{Format: formatVersion, Layout: "s3persist-layout-9", CreatedAt: "x"})
			return b
		}(),
		"not cbor": []byte("{\"json\": true}"),
	} {
		t.Run(name, func(t *testing.T) {
			mem := s3store.NewMemory()
			if _, err := mem.Put(context.Background(), keySystem, data, s3store.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			_, err := New(context.Background(), Config{Store: mem})
			if err == nil || !strings.Contains(err.Error(), "layout") && !strings.Contains(err.Error(), "system record") {
				t.Fatalf("New over %s: %v", name, err)
			}
		})
	}
}

func TestSequenceNumbersGrowAcrossRestarts(t *testing.T) {
	f := newFixture(t)
	id := []byte("fifo")
	if err := f.s.Create(id, nil); err != nil {
		t.Fatal(err)
	}
	var want []string
	for round := range 5 {
		for i := range 3 {
			m := fmt.Sprint(round, "-", i)
			want = append(want, m)
			if err := f.s.PacketStoreQoS12(id, pkt(m)); err != nil {
				t.Fatal(err)
			}
		}
		f.reopen()
	}
	if got := f.drain("fifo", f.s.PacketsForEachQoS12, keepNone); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("after 5 restarts the queue is %v, want %v", got, want)
	}
}

func TestAFailedUploadIsAStorageErrorAndFlushRetriesIt(t *testing.T) {
	mem := s3store.NewMemory()
	flaky := s3store.NewFaulty(mem)
	p, err := New(context.Background(), Config{Store: flaky})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := p.Sessions()
	flaky.SetFailing(true)
	err = s.Create([]byte("c"), &vlpersistence.SessionBase{Version: 5})
	if err == nil || !errors.Is(err, s3store.ErrInjected) || isSentinel(err) {
		t.Fatalf("Create over a failing store: %v, want a storage error equal to no sentinel", err)
	}
	if err := p.Flush(context.Background()); err == nil || !strings.Contains(err.Error(), `session "c"`) {
		t.Fatalf("Flush over a failing store: %v, want an error naming the session", err)
	}
	flaky.SetFailing(false)
	if err := p.Flush(context.Background()); err != nil {
		t.Fatalf("Flush after recovery: %v", err)
	}
	p2, err := New(context.Background(), Config{Store: mem})
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := p2.Sessions()
	if !s2.Exists([]byte("c")) {
		t.Fatal("the session whose upload was retried by Flush is missing after restart")
	}
}

func isSentinel(err error) bool {
	for _, s := range []error{vlpersistence.ErrNotFound, vlpersistence.ErrInvalidArgs, vlpersistence.ErrAlreadyExists,
		vlpersistence.ErrNotOpen, vlpersistence.ErrBrokenEntry} {
		if err == s {
			return true
		}
	}
	return false
}

func TestConfigValidateNamesTheField(t *testing.T) {
	mem := s3store.NewMemory()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "set S3"},
		{Config{Store: mem, S3: s3store.MinioConfig{Bucket: "b"}}, "both"},
		{Config{Store: mem, Prefix: "no-slash"}, "Prefix"},
		{Config{Store: mem, Prefix: "../"}, "Prefix"},
		{Config{Store: mem, CallTimeout: -1}, "CallTimeout"},
		{Config{Store: mem, LoadConcurrency: -1}, "LoadConcurrency"},
		{Config{Store: mem, ShutdownTimeout: -1}, "ShutdownTimeout"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want an error mentioning %q", c.cfg, err, c.want)
		}
	}
	if err := (Config{Store: mem, Prefix: "a/b/"}).Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

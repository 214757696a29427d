package persistencetest

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/VolantMQ/vlapi/vlpersistence"
)

// The scenarios of section 1 of the contract: the calls VolantMQ makes, in its order.

// connect does what the broker does on CONNECT of client sid: for a clean start Delete,
// then Exists, and Create when it is false; then the three queue reads, delivering (and
// removing) every packet. It returns sessionPresent and the delivered packets.
func (h *harness) connect(s vlpersistence.Sessions, sid []byte, clean bool, b *vlpersistence.SessionBase) (bool, [3][]*packet) {
	h.t.Helper()
	if clean {
		if err := s.Delete(sid); err != nil && err != vlpersistence.ErrNotFound {
			h.t.Fatalf("clean start: Delete(%q): %s, want nil or the bare ErrNotFound", sid, fmtErr(err))
		}
	}
	present := s.Exists(sid)
	if !present {
		h.noErr(s.Create(sid, b), "connect: Create(%q)", sid)
	}
	var got [3][]*packet
	for _, q := range []queue{qUA, q12, q0} {
		got[q] = h.drain(s, sid, q)
	}
	return present, got
}

// brokerLoader is the broker's session loader at start-up: it reads every field of the
// state (a nil state panics there), deletes expired sessions and drops subscriptions it
// cannot decode, both from inside LoadSession.
func brokerLoader(s vlpersistence.Sessions, rec *recorder, expired func(st *vlpersistence.SessionState) bool) vlpersistence.SessionLoader {
	var mu sync.Mutex
	return sessionLoader(func(_ any, sid []byte, st *vlpersistence.SessionState) error {
		mu.Lock()
		defer mu.Unlock()
		if st == nil {
			rec.errorf("LoadSession of %q got a nil state: the broker dereferences it", sid)
			return nil
		}
		if len(st.Errors) > 0 {
			return nil // the broker skips broken sessions
		}
		if expired(st) {
			step(rec, nil, s.Delete(sid), "start-up: Delete(%q) of an expired session from LoadSession", sid)
			return nil
		}
		if len(st.Subscriptions) > 0 {
			step(rec, nil, s.SubscriptionsDelete(sid), "start-up: SubscriptionsDelete(%q) from LoadSession", sid)
		}
		return nil
	})
}

func brokerStartEmpty(t *testing.T, h *harness) {
	in := h.open()
	got, err := in.ret.Load()
	if err != nil || len(got) != 0 {
		t.Errorf("start-up on a new store: Retained().Load() = (%s, %s), want (empty, nil)", describeAll(got), fmtErr(err))
	}
	if c := in.ses.Count(); c != 0 {
		t.Errorf("start-up on a new store: Count() = %d, want 0 (the broker would call LoadForEach)", c)
	}
}

func brokerStartLoads(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	h.noErr(in.ret.Store(pks("retained", 3)), "Retained.Store")
	for _, sid := range []string{"c1", "c2", "c3"} {
		h.create(s, id(sid), base(ts, 5))
		h.store(s, id(sid), q12, pk(sid))
	}
	// The broker's order: Retained().Load(), Sessions(), Count(), LoadForEach.
	h.wantRetained(in.ret, pks("retained", 3), "start-up")
	ses, err := in.iface.Sessions()
	h.noErr(err, "Sessions()")
	if c := ses.Count(); c != 3 {
		t.Fatalf("start-up: Count() = %d, want 3", c)
	}
	var rec recorder
	visited := make(map[string]int)
	h.must("LoadForEach at start-up", func() {
		loader := brokerLoader(ses, &rec, func(*vlpersistence.SessionState) bool { return false })
		err = ses.LoadForEach(sessionLoader(func(ctx any, sid []byte, st *vlpersistence.SessionState) error {
			visited[string(sid)]++
			if st != nil && (st.Timestamp != ts || st.Version != 5) {
				rec.errorf("LoadSession of %q: Timestamp %q Version %d, want %q 5", sid, st.Timestamp, st.Version, ts)
			}
			return loader.LoadSession(ctx, sid, st)
		}), nil)
	})
	h.noErr(err, "LoadForEach at start-up")
	rec.report(t)
	for _, sid := range []string{"c1", "c2", "c3"} {
		if visited[sid] != 1 {
			t.Errorf("start-up: LoadSession of %q called %d times, want once", sid, visited[sid])
		}
		h.wantQueue(ses, id(sid), q12, []*packet{pk(sid)}, "after start-up")
	}
}

func brokerStartReentrant(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	expired, subscribed, plain := id("expired"), id("subscribed"), id("plain")
	for _, sid := range [][]byte{expired, subscribed, plain} {
		h.create(s, sid, base(ts, 5))
		h.store(s, sid, q12, pk(string(sid)))
	}
	h.noErr(s.ExpiryStore(expired, &vlpersistence.SessionDelays{Since: ts, ExpireIn: "0", Will: []byte("will")}), "ExpiryStore")
	h.noErr(s.SubscriptionsStore(subscribed, []byte("subs")), "SubscriptionsStore")
	var rec recorder
	var err error
	h.must("LoadForEach at start-up deleting and dropping subscriptions from LoadSession", func() {
		err = s.LoadForEach(brokerLoader(s, &rec, func(st *vlpersistence.SessionState) bool { return st.Expire != nil }), nil)
	})
	h.noErr(err, "LoadForEach at start-up")
	rec.report(t)
	h.wantExists(s, expired, false, "after start-up deleted the expired session")
	h.wantCount(s, 2, "after start-up deleted the expired session")
	h.wantIDs(s, [][]byte{subscribed, plain}, "after start-up")
	if v := h.stateOf(s, subscribed); len(v.Subscriptions) != 0 {
		t.Errorf("after start-up: %q still has Subscriptions %s", subscribed, describeBytes(v.Subscriptions))
	}
	h.wantQueue(s, subscribed, q12, []*packet{pk("subscribed")}, "after start-up")
	h.wantQueue(s, plain, q12, []*packet{pk("plain")}, "after start-up")
}

func brokerConnectUnknown(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	sid := id("client")
	if err := s.Delete(sid); err != vlpersistence.ErrNotFound {
		t.Errorf("clean start of an unknown client: Delete: %s, want the bare ErrNotFound (v0.3.2 compares with ==)", fmtErr(err))
	}
	present, got := h.connect(s, sid, true, base(ts, 4))
	if present {
		t.Errorf("clean start of an unknown client: Exists = true (SessionPresent)")
	}
	if anyPackets(got) {
		t.Errorf("a new session delivered packets: %v", got)
	}
	h.wantExists(s, sid, true, "after connect")
	h.wantCount(s, 1, "after connect")
}

func brokerConnectKnownClean(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	sid := id("client")
	h.full(s, sid)
	h.store(s, sid, q0, pks("old", 3)...)
	present, got := h.connect(s, sid, true, base("2030-01-01T00:00:00Z", 5))
	if present {
		t.Errorf("clean start: Exists after Delete = true (SessionPresent)")
	}
	for _, q := range queues {
		if len(got[q]) != 0 {
			t.Errorf("clean start delivered old packets from %s: %s", q, describeAll(got[q]))
		}
	}
	h.wantState(s, sid, &view{Timestamp: "2030-01-01T00:00:00Z", Version: 5}, "after a clean start")
}

func brokerResume(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	sid := id("client")
	h.create(s, sid, base(ts, 4))
	want := [3][]*packet{pks("q0", 2), pks("q12", 3), pks("ua", 2)}
	h.noErr(s.PacketsStore(sid, vlpersistence.PersistedPackets{QoS0: want[q0], QoS12: want[q12], UnAck: want[qUA]}), "PacketsStore at disconnect")
	present, got := h.connect(s, sid, false, base(ts, 4))
	if !present {
		t.Errorf("reconnect: Exists = false (no SessionPresent)")
	}
	for _, q := range queues {
		if d := diffPackets(got[q], want[q]); d != "" {
			t.Errorf("reconnect: queue %s delivered: %s", q, d)
		}
	}
	_, again := h.connect(s, sid, false, base(ts, 4))
	if anyPackets(again) {
		t.Errorf("a second reconnect delivered packets again: %v", again)
	}
}

func brokerResumeStopSignal(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	sid := id("client")
	h.create(s, sid, base(ts, 4))
	all := pks("ua", 10)
	h.noErr(s.PacketsStore(sid, qUA.in(all...)), "PacketsStore")
	// The broker's loader: rm is always true; after its limit it returns errors.New("exit").
	exit := errors.New("exit")
	got, err := visit(s, sid, qUA, func(i int, _ *packet) (bool, error) {
		if i == 3 {
			return true, exit
		}
		return true, nil
	})
	if err != nil {
		t.Errorf("PacketsForEachUnAck stopped by the broker's limit: %s, want nil", fmtErr(err))
	}
	if d := diffPackets(got, all[:4]); d != "" {
		t.Errorf("delivered before the limit: %s", d)
	}
	h.wantQueue(s, sid, qUA, all[4:], "the next connect after the limit")
}

func brokerDisconnectEmpty(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	sid := id("client")
	h.create(s, sid, base(ts, 4))
	for i, pp := range []vlpersistence.PersistedPackets{{}, {QoS0: []*packet{}, QoS12: []*packet{}, UnAck: []*packet{}}} {
		h.wantErr(s.PacketsStore(sid, pp), nil, "disconnect %d: PacketsStore with every list empty", i)
	}
	h.wantQueues(s, sid, [3][]*packet{}, "after disconnects with nothing queued")
}

func brokerDisconnectNil(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	sid := id("client")
	h.create(s, sid, base(ts, 4))
	h.noErr(s.PacketsStore(sid, vlpersistence.PersistedPackets{
		QoS0:  []*packet{pk("a"), nil},
		QoS12: []*packet{nil, pk("b"), nil, pk("c")},
		UnAck: []*packet{nil},
	}), "PacketsStore with expired (nil) messages")
	h.wantQueues(s, sid, [3][]*packet{{pk("a")}, {pk("b"), pk("c")}, nil}, "after a disconnect with expired messages")
}

func brokerDisconnectNonDurable(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	sid := id("client")
	h.full(s, sid)
	h.create(s, id("other"), base(ts, 4))
	h.noErr(s.PacketsDelete(sid), "PacketsDelete")
	h.noErr(s.Delete(sid), "Delete")
	h.wantExists(s, sid, false, "after a non-durable disconnect")
	h.wantCount(s, 1, "after a non-durable disconnect")
	_, got := h.connect(s, sid, false, base(ts, 4))
	if anyPackets(got) {
		t.Errorf("the next connect delivered packets: %v", got)
	}
}

// publish stores n messages of publisher w for sid, alternating QoS0 and QoS1/2 as
// the broker's topic publisher goroutines do, and returns which sequence numbers went to
// which queue.
func publish(s vlpersistence.Sessions, sid []byte, w, n int) (map[queue][]int, error) {
	where := make(map[queue][]int)
	for i := 0; i < n; i++ {
		q := singleQueues[(i/3)%2]
		if err := q.store(s, sid, pk(fmt.Sprintf("w%d-%d", w, i))); err != nil {
			return where, fmt.Errorf("publisher %d: PacketStore%s(%q): %v", w, q, sid, err)
		}
		where[q] = append(where[q], i)
	}
	return where, nil
}

func brokerTwoPublishers(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	sid := id("offline")
	h.create(s, sid, base(ts, 4))
	var g errgroup.Group
	var where [2]map[queue][]int
	for w := 0; w < 2; w++ {
		g.Go(safe(fmt.Sprint("publisher ", w), func() error {
			var err error
			where[w], err = publish(s, sid, w, 150)
			return err
		}))
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, q := range singleQueues {
		checkWriters(t, "queue "+q.String(), h.drain(s, sid, q), map[int][]int{0: where[0][q], 1: where[1][q]})
	}
}

func brokerPublishOverlaps(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	sid := id("offline")
	h.create(s, sid, base(ts, 4))
	var g errgroup.Group
	var where [2]map[queue][]int
	for w := 0; w < 2; w++ {
		g.Go(safe(fmt.Sprint("publisher ", w), func() error {
			var err error
			where[w], err = publish(s, sid, w, 150)
			return err
		}))
	}
	// The client meanwhile connects and disconnects: Exists, queue reads that deliver,
	// and PacketsStore of its unacknowledged messages; another client connects.
	var delivered [3][]*packet
	var unacked []*packet
	g.Go(safe("client", func() error {
		for round := 0; round < 10; round++ {
			if !s.Exists(sid) {
				return fmt.Errorf("round %d: Exists(%q) = false", round, sid)
			}
			for _, q := range []queue{qUA, q12, q0} {
				got, err := drainE(s, sid, q)
				if err != nil {
					return err
				}
				delivered[q] = append(delivered[q], got...)
			}
			ua := pks(fmt.Sprint("unacked", round), 2)
			unacked = append(unacked, ua...)
			if err := s.PacketsStore(sid, qUA.in(ua...)); err != nil {
				return fmt.Errorf("round %d: PacketsStore at disconnect: %v", round, err)
			}
			other := id(fmt.Sprint("other-", round))
			if err := s.Create(other, base(ts, 4)); err != nil {
				return fmt.Errorf("Create(%q): %v", other, err)
			}
		}
		return nil
	}))
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, q := range queues {
		delivered[q] = append(delivered[q], h.drain(s, sid, q)...)
	}
	for _, q := range singleQueues {
		checkWriters(t, "queue "+q.String()+", over every delivery", delivered[q], map[int][]int{0: where[0][q], 1: where[1][q]})
	}
	if d := diffPackets(delivered[qUA], unacked); d != "" {
		t.Errorf("queue UnAck over every delivery: %s", d)
	}
}

func brokerPublishAfterDelete(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	sid := id("expired")
	h.create(s, sid, base(ts, 4))
	h.create(s, id("other"), base(ts, 4))
	h.noErr(s.Delete(sid), "Delete of the expired session")
	for _, q := range singleQueues {
		h.wantErr(q.store(s, sid, pk("late")), vlpersistence.ErrNotFound, "PacketStore%s for a session deleted after expiry", q)
	}
	h.wantNothingCreated(s, sid, 1, "after publishing to a deleted session")
}

func brokerShutdown(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	want := brokerShutdownWrite(h, in)
	brokerShutdownCheck(h, in, want)
	if err := in.iface.Shutdown(); err != nil {
		t.Errorf("Shutdown after the broker's shutdown writes: %s, want nil (I4)", fmtErr(err))
	}
	_ = s
}

// brokerShutdownState is what a broker's shutdown left in storage.
type brokerShutdownState struct {
	sessions map[string]*view
	queues   map[string][3][]*packet
	retained []*packet
}

// brokerShutdownWrite creates three connected sessions and then does what the broker
// does when it stops: PacketsStore per durable session (one with everything empty),
// SubscriptionsStore per remaining session, then Retained.Store of the full set once.
func brokerShutdownWrite(h *harness, in *instance) brokerShutdownState {
	h.t.Helper()
	s := in.ses
	st := brokerShutdownState{sessions: map[string]*view{}, queues: map[string][3][]*packet{}}
	for i, sid := range []string{"durable-busy", "durable-idle", "clean"} {
		h.create(s, id(sid), base(ts, byte(3+i)))
		st.sessions[sid] = &view{Timestamp: ts, Version: byte(3 + i)}
		st.queues[sid] = [3][]*packet{}
	}
	busy := [3][]*packet{pks("q0", 2), pks("q12", 3), pks("ua", 4)}
	h.noErr(s.PacketsStore(id("durable-busy"), vlpersistence.PersistedPackets{QoS0: busy[q0], QoS12: busy[q12], UnAck: busy[qUA]}), "PacketsStore")
	st.queues["durable-busy"] = busy
	h.noErr(s.PacketsStore(id("durable-idle"), vlpersistence.PersistedPackets{}), "PacketsStore")
	for _, sid := range []string{"durable-busy", "durable-idle", "clean"} {
		subs := []byte("subscriptions of " + sid)
		h.noErr(s.SubscriptionsStore(id(sid), subs), "SubscriptionsStore(%q)", sid)
		st.sessions[sid].Subscriptions = subs
	}
	st.retained = []*packet{pk("retained/a"), pk("retained/b"), pk("retained/c")}
	h.noErr(in.ret.Store(st.retained), "Retained.Store")
	return st
}

// brokerShutdownCheck checks what the next start-up sees.
func brokerShutdownCheck(h *harness, in *instance, want brokerShutdownState) {
	h.t.Helper()
	h.wantRetained(in.ret, want.retained, "start-up after a broker shutdown")
	h.wantCount(in.ses, uint64(len(want.sessions)), "start-up after a broker shutdown")
	got := h.load(in.ses)
	for _, sid := range sortedIDs(want.sessions) {
		g, ok := got[sid]
		if !ok {
			h.t.Errorf("start-up after a broker shutdown: session %q not loaded", sid)
			continue
		}
		if d := g.diff(want.sessions[sid]); d != "" {
			h.t.Errorf("start-up after a broker shutdown: session %q: %s", sid, d)
		}
		h.wantQueues(in.ses, id(sid), want.queues[sid], "start-up after a broker shutdown")
	}
}

// anyPackets reports whether any of the three queues holds a packet.
func anyPackets(qs [3][]*packet) bool {
	return len(qs[0])+len(qs[1])+len(qs[2]) > 0
}

// sortedIDs returns the keys of m in order, for deterministic failure messages.
func sortedIDs[V any](m map[string]V) []string {
	ids := make([]string, 0, len(m))
	for k := range m {
		ids = append(ids, k)
	}
	sort.Strings(ids)
	return ids
}

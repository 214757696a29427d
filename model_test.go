package s3persist

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/VolantMQ/vlapi/vlpersistence"
)

// modelSession is what a session must hold, by the contract, after the calls made.
type modelSession struct {
	subs   string
	queues [numQueues][]string
}

// In Sync mode every call that returned nil survives anything: random calls on a few
// ids, interleaved with checkpoints, clean restarts and crashes (the old instance cut
// off from storage, checkpoint in flight or not), always leave exactly the state the
// calls describe. In Async mode the same holds for crashes right after a Flush, while
// checkpoints run with changes still pending in the journal.
//
// CI runs 6 seeds per mode; S3PERSIST_MODEL_SEEDS=150 runs more (go test -run
// TestRandomCalls .), as was done before this test was committed.
func TestRandomCallsCheckpointsAndCrashesMatchAModel(t *testing.T) {
	seeds := uint64(6)
	if n, err := strconv.ParseUint(os.Getenv("S3PERSIST_MODEL_SEEDS"), 10, 64); err == nil {
		seeds = n
	}
	for _, mode := range []Durability{Sync, Async} {
		for seed := range seeds {
			t.Run(fmt.Sprint(mode, "/seed_", seed), func(t *testing.T) { randomCalls(t, mode, seed) })
		}
	}
}

func randomCalls(t *testing.T, mode Durability, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 99))
	f := newFixture(t, Config{Durability: mode, CheckpointBytes: 4 << 10})
	model := map[string]*modelSession{}
	ids := []string{"a", "b-1", "C/2", "d"}
	n := 0
	for step := range 400 {
		id := ids[r.IntN(len(ids))]
		m := model[id]
		switch op := r.IntN(100); {
		case op < 10:
			err := f.s.Create([]byte(id), nil)
			if (m == nil) != (err == nil) {
				t.Fatalf("step %d: Create(%q) = %v with the session existing: %v", step, id, err, m != nil)
			}
			if m == nil {
				model[id] = &modelSession{}
			}
		case op < 15:
			err := f.s.Delete([]byte(id))
			if (m == nil) != (err == vlpersistence.ErrNotFound) {
				t.Fatalf("step %d: Delete(%q) = %v", step, id, err)
			}
			delete(model, id)
		case op < 50:
			q := r.IntN(numQueues)
			var lists [numQueues][]*vlpersistence.PersistedPacket
			k := 1 + r.IntN(3)
			var data []string
			for range k {
				n++
				data = append(data, fmt.Sprint("p", n))
				lists[q] = append(lists[q], pkt(data[len(data)-1]))
			}
			err := f.s.PacketsStore([]byte(id), vlpersistence.PersistedPackets{QoS0: lists[0], QoS12: lists[1], UnAck: lists[2]})
			if (m == nil) != (err == vlpersistence.ErrNotFound) {
				t.Fatalf("step %d: PacketsStore(%q) = %v", step, id, err)
			}
			if m != nil {
				m.queues[q] = append(m.queues[q], data...)
			}
		case op < 70:
			q := r.IntN(numQueues)
			keep := r.IntN(2) == 0
			got := f.drain(id, forEachOf(f, q), func(s string) bool { return keep && s[len(s)-1]%2 == 0 })
			if m == nil {
				if len(got) != 0 {
					t.Fatalf("step %d: missing %q visited %v", step, id, got)
				}
				continue
			}
			if !slices.Equal(got, m.queues[q]) {
				t.Fatalf("step %d: queue %d of %q = %v, want %v", step, q, id, got, m.queues[q])
			}
			m.queues[q] = slices.DeleteFunc(m.queues[q], func(s string) bool { return !(keep && s[len(s)-1]%2 == 0) })
		case op < 80:
			subs := fmt.Sprint("subs-", step)
			if err := f.s.SubscriptionsStore([]byte(id), []byte(subs)); err != nil {
				t.Fatal(err)
			}
			if m == nil {
				m = &modelSession{}
				model[id] = m
			}
			m.subs = subs
		case op < 88:
			f.checkpoint()
		case op < 94:
			f.restart()
			checkModel(t, f, model, step, "restart")
		default:
			if mode == Async {
				f.flush()
			}
			f.crash()
			checkModel(t, f, model, step, "crash")
		}
	}
	if mode == Async {
		f.flush()
	}
	f.crash()
	checkModel(t, f, model, -1, "final crash")
}

func forEachOf(f *fixture, q int) func([]byte, interface{}, vlpersistence.PacketLoader) error {
	return [numQueues]func([]byte, interface{}, vlpersistence.PacketLoader) error{
		f.s.PacketsForEachQoS0, f.s.PacketsForEachQoS12, f.s.PacketsForEachUnAck,
	}[q]
}

func checkModel(t *testing.T, f *fixture, model map[string]*modelSession, step int, what string) {
	t.Helper()
	if n := f.s.Count(); n != uint64(len(model)) {
		ids := []string{}
		_ = f.s.LoadForEach(loaderFunc(func(id []byte, _ *vlpersistence.SessionState) error { ids = append(ids, string(id)); return nil }), nil)
		t.Fatalf("step %d, after a %s: Count = %d (%q), want %d (%v)", step, what, n, ids, len(model), model)
	}
	got := map[string]string{}
	if err := f.s.LoadForEach(loaderFunc(func(id []byte, st *vlpersistence.SessionState) error {
		got[string(id)] = string(st.Subscriptions)
		return nil
	}), nil); err != nil {
		t.Fatal(err)
	}
	for id, m := range model {
		if s, ok := got[id]; !ok || s != m.subs {
			t.Fatalf("step %d, after a %s: %q loaded %v with subscriptions %q, want %q", step, what, id, ok, s, m.subs)
		}
		for q := range numQueues {
			if g := f.drain(id, forEachOf(f, q), keepAll); !slices.Equal(g, m.queues[q]) {
				t.Fatalf("step %d, after a %s: queue %d of %q = %s, want %s", step, what, q, id, strings.Join(g, ","), strings.Join(m.queues[q], ","))
			}
		}
	}
}

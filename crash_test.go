package s3persist

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist/internal/logtest"
	"github.com/s3persist/s3persist/s3store"
)

// The crash test: a scripted broker-like workload runs against an in-memory store behind
// an s3store.Injector that crashes at request k: requests 1..k-1 pass, request k is not
// applied (CrashBefore) or applied with its answer lost (CrashAfter), and nothing of the
// instance lands afterwards. The instance is abandoned there (no Shutdown reaches the
// store) and a new one opens the same store. For every k, until the workload completes
// without reaching k, in both durability modes, it checks that:
//
//   - every object under the prefix decodes, and New logs no error (nothing corrupt);
//   - each session is in one of the states its calls went through since the last one
//     known durable (returned in Sync, covered by a successful Flush or Shutdown in
//     Async): what was durable is present exactly once and in order, nothing deleted
//     durably comes back, and nothing is lost or made up;
//   - sessions are neither lost nor duplicated (Count, LoadForEach);
//   - the retained set is the last one stored, or the one being stored at the crash;
//   - the same holds once more after that instance ran its garbage collection and its
//     checkpoint of the replayed journal and shut down.
//
// Per session, the states after the durable one form a prefix: a session's journal
// records go to one stream in Async mode, whose segments land in order, and a checkpoint
// snapshots a session's whole state under its lock. In Sync mode the workload makes one
// call at a time, so at most one call is undecided at the crash.
//
// Crash points that leave the same objects after the same calls (a crash at any of the
// reads of New, say) are all run, and the state they leave is recovered and checked once.
//
// CI runs the short workload: 30 healthy steps, then crash points from the New that
// reopens their bucket through 210 more steps (about 1,000 crash points over both modes,
// logged). S3PERSIST_CRASH_LONG=1 runs a longer one with more sessions, crash
// points from the first New on an empty bucket, and two clean restarts.

const crashPrefix = "broker/"

func TestCrashAtEveryRequestAsync(t *testing.T) { crashAtEveryRequest(t, Async) }

func TestCrashAtEveryRequestSync(t *testing.T) { crashAtEveryRequest(t, Sync) }

// crashSize is the size of the workload.
type crashSize struct {
	ids   []string
	steps int
	// crashFrom is the first step with crash points: the steps before it run once, on
	// a healthy store, and shut down cleanly; every crash run starts from what they
	// left, with a New that replays their journal.
	crashFrom int
	restarts  []int // steps at which the instance shuts down cleanly and a new one opens
	// emptyBucket starts from an empty bucket, so that the crash points cover its
	// initialisation and first checkpoint (every index shard), instead of from one
	// that a first instance initialised.
	emptyBucket bool
}

func crashWorkloadSize() crashSize {
	if os.Getenv("S3PERSIST_CRASH_LONG") != "" {
		return crashSize{
			ids:   []string{"a", "dev/1", "C-3", "sensor_7", "ü", strings.Repeat("L", 300), "x", "y"},
			steps: 720, restarts: []int{240, 480}, emptyBucket: true,
		}
	}
	// CI has one New, after a healthy start of 30 steps; the steps after it make about a
	// thousand crash points over both modes (a checkpoint of layout 3 makes few requests).
	return crashSize{ids: []string{"a", "dev/1", "C-3", strings.Repeat("L", 300)}, steps: 240, crashFrom: 30}
}

func crashAtEveryRequest(t *testing.T, mode Durability) {
	t.Parallel()
	start := time.Now()
	c := newCrashRun(t, mode, crashWorkloadSize())
	points := map[s3store.Fault]int{}
	defer func() {
		c.abandoned.Wait()
		t.Logf("%v: crashed at each of %d requests before and %d after they reached the store (%d crash points), "+
			"%d distinct states recovered and checked, %d requests of dead instances refused, in %v",
			mode, points[s3store.CrashBefore], points[s3store.CrashAfter], points[s3store.CrashBefore]+points[s3store.CrashAfter],
			len(c.checked), c.refused.Load(), time.Since(start).Round(time.Millisecond))
	}()
	for _, fault := range []s3store.Fault{s3store.CrashBefore, s3store.CrashAfter} {
		for k := int64(1); ; k++ {
			if t.Failed() {
				return
			}
			if !c.crashAt(fault, k) {
				break
			}
			points[fault]++
		}
	}
}

// initialisedBucket returns a store holding what a first instance leaves on an empty
// bucket prefix once it checkpointed and shut down: the system record and every index
// shard. The workload starts there, so that its requests are the broker's, not the 256
// shards of a first checkpoint.
func initialisedBucket(t *testing.T) *s3store.Memory {
	mem := s3store.NewMemory()
	p, err := New(context.Background(), Config{Store: mem, Prefix: crashPrefix})
	if err != nil {
		t.Fatal(err)
	}
	<-p.gcDone
	if err := p.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(); err != nil {
		t.Fatal(err)
	}
	return mem
}

// storeDigest identifies the content of a store by its keys and ETags (an MD5 of the
// content on Memory).
func storeDigest(t *testing.T, m *s3store.Memory) string {
	h := sha256.New()
	err := s3store.ListAll(context.Background(), m, "", func(o s3store.ObjectInfo) error {
		fmt.Fprintf(h, "%q %q\n", o.Key, o.ETag)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(h.Sum(nil))
}

// crashRun is every crash point of one durability mode.
type crashRun struct {
	t    *testing.T
	mode Durability
	size crashSize
	// start is the world after the healthy steps before size.crashFrom, shut down; base
	// is the store it left. Every crash run continues from a copy of both.
	start *crashWorld
	base  *s3store.Memory
	// checked holds the (store content, model) pairs already recovered and checked:
	// crash points that leave the same objects after the same calls (a crash at any
	// of the reads of New, say) are run, and checked once.
	checked   map[string]bool
	abandoned sync.WaitGroup // the goroutines that release abandoned instances
	refused   atomic.Int64   // requests failed by the injector: the crashing one and all after it
}

func newCrashRun(t *testing.T, mode Durability, size crashSize) *crashRun {
	c := &crashRun{t: t, mode: mode, size: size, checked: map[string]bool{}}
	if size.emptyBucket {
		c.base = s3store.NewMemory()
	} else {
		c.base = initialisedBucket(t)
	}
	w := c.world(s3store.NewInjector(c.base, nil), newCrashModel(), rand.NewPCG(5, uint64(mode)), 0)
	if size.crashFrom > 0 {
		if err := w.steps(0, size.crashFrom); err != nil {
			t.Fatal(err)
		}
		marks := w.model.marks()
		if err := w.p.Shutdown(); err != nil {
			t.Fatal(err)
		}
		w.model.ackMarks(marks)
	}
	c.start = w
	return c
}

// world returns a world whose instances use store inj.
func (c *crashRun) world(inj *s3store.Injector, model *crashModel, pcg *rand.PCG, n int) *crashWorld {
	return &crashWorld{
		mode: c.mode, size: c.size, inj: inj, model: model, pcg: pcg, rng: rand.New(pcg), n: n,
		cfg: Config{
			Store: inj, Prefix: crashPrefix, Durability: c.mode,
			// Everything happens when the workload says so: no flush or checkpoint timer.
			FlushInterval: time.Hour, CheckpointInterval: time.Hour, CheckpointBytes: 1 << 40,
			// Some packets must be read back from their batch objects.
			CacheBytes: 256,
			// Fewer goroutines for the reads of New: faster under the race detector.
			LoadConcurrency: 2,
			// Generous for a healthy store on a busy machine. A dead instance is
			// abandoned without waiting for them: its Shutdown, in the background,
			// gives up on its journal after ShutdownTimeout.
			CallTimeout: 10 * time.Second, ShutdownTimeout: 5 * time.Second,
		},
	}
}

// crashAt runs the workload with a crash at request k, then checks what a new instance
// finds. It returns false when the workload completed without reaching request k (it
// checks that end state too).
func (c *crashRun) crashAt(fault s3store.Fault, k int64) bool {
	t, mode := c.t, c.mode
	mem := c.base.Clone()
	inj := s3store.NewInjector(mem, s3store.FailNth(k, fault))
	pcg := *c.start.pcg
	w := c.world(inj, c.start.model.snapshot(), &pcg, c.start.n)
	done := make(chan error, 1)
	go func() { done <- w.run(c.size.crashFrom) }()
	crashed := true
	select {
	case <-inj.Dead():
	case err := <-done:
		if err != nil {
			t.Errorf("%v, %v at request %d: %v", mode, fault, k, err)
			return false
		}
		select {
		case <-inj.Dead():
		default:
			crashed = false // completed before request k: abandoned at its end
		}
		done <- nil
	}
	inj.Kill() // nothing of the dead instance lands from here on
	model := w.model.snapshot()
	what := fmt.Sprintf("%v, %v at request %d of %d", mode, fault, k, inj.Requests())
	if !crashed {
		what = fmt.Sprintf("%v, abandoned after the workload's %d requests", mode, inj.Requests())
	}
	c.abandoned.Go(func() {
		w.abandon()
		if err := <-done; err != nil {
			t.Errorf("%s: the workload after the crash: %v", what, err)
		}
		st := inj.Stats()
		c.refused.Add(st.FailedBefore + st.FailedAfter)
	})
	if key := storeDigest(t, mem) + model.String(); !c.checked[key] {
		c.checked[key] = true
		checkRecovery(t, mem, mode, model, what)
	}
	return crashed
}

// crashWorld is one run of the workload.
type crashWorld struct {
	mode  Durability
	size  crashSize
	cfg   Config
	inj   *s3store.Injector
	model *crashModel
	pcg   *rand.PCG  // the source of rng, copied to continue the workload elsewhere
	rng   *rand.Rand // chooses the calls
	n     int        // packets made so far: the next is named "m<n+1>"

	mu sync.Mutex
	p  *Persistence // the current instance; guarded by mu
}

func (w *crashWorld) dead() bool {
	select {
	case <-w.inj.Dead():
		return true
	default:
		return false
	}
}

// abandon releases the current instance, which can reach the store no more: its calls
// blocked on durability return, its goroutines stop.
func (w *crashWorld) abandon() {
	w.mu.Lock()
	p := w.p
	w.mu.Unlock()
	if p != nil {
		_ = p.Shutdown()
	}
}

// errStopped ends the workload at the crash.
var errStopped = errors.New("stopped at the crash")

// run runs the workload: the same calls for every k, up to the crash, and leaves its
// last instance running (abandon releases it once the store is dead). It returns nil
// when it completed or stopped at the crash, and an error when the instance misbehaved
// while its store was healthy.
func (w *crashWorld) run(from int) error {
	err := w.steps(from, w.size.steps) // the instance is left running: abandon releases it
	if errors.Is(err, errStopped) {
		return nil
	}
	return err
}

// check turns the error of a call into errStopped once the store is dead, or into a
// failure while it is healthy.
func (w *crashWorld) check(err error, what string, args ...any) error {
	if err == nil {
		return nil
	}
	if w.dead() {
		return errStopped
	}
	return fmt.Errorf("%s with a healthy store: %w", fmt.Sprintf(what, args...), err)
}

func (w *crashWorld) open() error {
	p, err := New(context.Background(), w.cfg)
	if err := w.check(err, "New"); err != nil {
		return err
	}
	w.mu.Lock()
	w.p = p
	w.mu.Unlock()
	<-p.gcDone // the garbage collection after start, before the next request
	return nil
}

// steps opens an instance and runs steps from..to-1 of the workload.
func (w *crashWorld) steps(from, to int) error {
	r := w.rng
	if err := w.open(); err != nil {
		return err
	}
	m := w.model
	nextData := func() string { w.n++; return fmt.Sprintf("m%d", w.n) }
	for step := from; step < to; step++ {
		if w.dead() {
			return errStopped
		}
		p := w.p
		s := &p.handles.sessions
		if slices.Contains(w.size.restarts, step) {
			marks := m.marks()
			if err := w.check(p.Shutdown(), "Shutdown"); err != nil {
				return err
			}
			m.ackMarks(marks)
			if err := w.open(); err != nil {
				return err
			}
			continue
		}
		id := w.size.ids[r.IntN(len(w.size.ids))]
		cur := m.last(id)
		// ack records a call that returned nil: in Sync mode, its change is durable.
		ack := func(i int) {
			if w.mode == Sync {
				m.ack(id, i)
			}
		}
		switch op := r.IntN(100); {
		case op < 12 && !cur.exists:
			i := m.intend(id, func(st *sessState) { *st = sessState{exists: true} })
			err := s.Create([]byte(id), &vlpersistence.SessionBase{Timestamp: "t", Version: 5})
			if err := w.check(err, "Create(%q)", id); err != nil {
				return err
			}
			ack(i)
		case op >= 10 && op < 16 && cur.exists:
			i := m.intend(id, func(st *sessState) { *st = sessState{} })
			if err := w.check(s.Delete([]byte(id)), "Delete(%q)", id); err != nil {
				return err
			}
			ack(i)
		case op < 48 && cur.exists:
			var lists [numQueues][]*vlpersistence.PersistedPacket
			var data [numQueues][]string
			kind := r.IntN(3)
			for range 1 + r.IntN(3) {
				q := queueQoS12
				switch {
				case kind == 1:
					q = queueQoS0
				case kind == 2:
					q = r.IntN(numQueues)
				}
				d := nextData()
				data[q] = append(data[q], d)
				lists[q] = append(lists[q], pkt(d))
				if kind != 2 {
					break // PacketStoreQoS0/QoS12 store one packet
				}
			}
			i := m.intend(id, func(st *sessState) {
				for q := range numQueues {
					st.q[q] = append(st.q[q], data[q]...)
				}
			})
			var err error
			switch kind {
			case 0:
				err = s.PacketStoreQoS12([]byte(id), lists[queueQoS12][0])
			case 1:
				err = s.PacketStoreQoS0([]byte(id), lists[queueQoS0][0])
			default:
				err = s.PacketsStore([]byte(id), vlpersistence.PersistedPackets{QoS0: lists[0], QoS12: lists[1], UnAck: lists[2]})
			}
			if err := w.check(err, "storing packets into %q", id); err != nil {
				return err
			}
			ack(i)
		case op < 68:
			// A drain as the broker makes it: visit a queue, remove what was delivered
			// (all of it, or every other packet).
			q := r.IntN(numQueues)
			all := r.IntN(2) == 0
			remove := func(d string) bool { return all || d[len(d)-1]%2 == 0 }
			want := slices.Clone(cur.q[q])
			i := m.intend(id, func(st *sessState) {
				st.q[q] = slices.DeleteFunc(st.q[q], remove)
			})
			var got []string
			err := forEachOfSessions(s, q)([]byte(id), nil, func(_ interface{}, pk *vlpersistence.PersistedPacket) (bool, error) {
				got = append(got, string(pk.Data))
				return remove(string(pk.Data)), nil
			})
			if err := w.check(err, "draining queue %d of %q", q, id); err != nil {
				return err
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("step %d: queue %d of %q visited %v, want %v", step, q, id, got, want)
			}
			ack(i)
		case op < 71 && cur.exists:
			i := m.intend(id, func(st *sessState) { st.q = [numQueues][]string{} })
			if err := w.check(s.PacketsDelete([]byte(id)), "PacketsDelete(%q)", id); err != nil {
				return err
			}
			ack(i)
		case op < 80:
			subs := fmt.Sprint("subs-", step)
			i := m.intend(id, func(st *sessState) {
				if !st.exists {
					*st = sessState{exists: true}
				}
				st.subs = subs
			})
			if err := w.check(s.SubscriptionsStore([]byte(id), []byte(subs)), "SubscriptionsStore(%q)", id); err != nil {
				return err
			}
			ack(i)
		case op < 84:
			var set []string
			if r.IntN(4) > 0 {
				for range 1 + r.IntN(3) {
					set = append(set, "r"+nextData())
				}
			}
			i := m.intendRetained(set)
			ret := &p.handles.retained
			var err error
			if set == nil {
				err = ret.Wipe()
			} else {
				var list []*vlpersistence.PersistedPacket
				for _, d := range set {
					list = append(list, pkt(d))
				}
				err = ret.Store(list)
			}
			if err := w.check(err, "storing the retained set"); err != nil {
				return err
			}
			m.ackRetained(i) // write-through in both modes
		case op < 92:
			marks := m.marks()
			if err := w.check(p.Flush(context.Background()), "Flush"); err != nil {
				return err
			}
			m.ackMarks(marks)
		default:
			if err := w.check(p.Checkpoint(context.Background()), "Checkpoint"); err != nil {
				return err
			}
		}
	}
	if w.dead() {
		return errStopped
	}
	if to < w.size.steps {
		return nil
	}
	marks := m.marks()
	if err := w.check(w.p.Flush(context.Background()), "the last Flush"); err != nil {
		return err
	}
	m.ackMarks(marks)
	return nil
}

func forEachOfSessions(s *sessions, q int) func([]byte, interface{}, vlpersistence.PacketLoader) error {
	return [numQueues]func([]byte, interface{}, vlpersistence.PacketLoader) error{
		s.PacketsForEachQoS0, s.PacketsForEachQoS12, s.PacketsForEachUnAck,
	}[q]
}

// sessState is what a session holds by the contract.
type sessState struct {
	exists bool
	subs   string
	q      [numQueues][]string
}

func (s sessState) clone() sessState {
	for q := range numQueues {
		s.q[q] = slices.Clone(s.q[q])
	}
	return s
}

func (s sessState) equal(o sessState) bool {
	if s.exists != o.exists || s.subs != o.subs {
		return false
	}
	for q := range numQueues {
		if !slices.Equal(s.q[q], o.q[q]) {
			return false
		}
	}
	return true
}

func (s sessState) String() string {
	if !s.exists {
		return "none"
	}
	return fmt.Sprintf("{subs %q, qos0 %v, qos12 %v, unack %v}", s.subs, s.q[0], s.q[1], s.q[2])
}

// sessHistory is every state a session went through: states[0] is before the workload,
// states[durable] the last one known durable. The calls after it may or may not have
// landed, in order.
type sessHistory struct {
	states  []sessState
	durable int
}

// crashModel is what the workload's calls describe. The workload writes it before each
// call (the state the call leads to) and after it (when the call made it durable); the
// test reads a snapshot once the store is dead.
type crashModel struct {
	mu       sync.Mutex
	sessions map[string]*sessHistory
	retained sessHistoryOf
}

// sessHistoryOf is the history of the retained set.
type sessHistoryOf struct {
	sets    [][]string
	durable int
}

func newCrashModel() *crashModel {
	return &crashModel{sessions: map[string]*sessHistory{}, retained: sessHistoryOf{sets: [][]string{nil}}}
}

func (m *crashModel) history(id string) *sessHistory {
	h := m.sessions[id]
	if h == nil {
		h = &sessHistory{states: []sessState{{}}}
		m.sessions[id] = h
	}
	return h
}

func (m *crashModel) last(id string) sessState {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.history(id)
	return h.states[len(h.states)-1].clone()
}

// intend records the state a call is about to lead to and returns its index.
func (m *crashModel) intend(id string, fn func(*sessState)) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.history(id)
	st := h.states[len(h.states)-1].clone()
	fn(&st)
	h.states = append(h.states, st)
	return len(h.states) - 1
}

func (m *crashModel) ack(id string, i int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.history(id)
	h.durable = max(h.durable, i)
}

// marks returns the last state of every session, for ackMarks after a barrier.
func (m *crashModel) marks() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for id, h := range m.sessions {
		out[id] = len(h.states) - 1
	}
	return out
}

func (m *crashModel) ackMarks(marks map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, i := range marks {
		h := m.sessions[id]
		h.durable = max(h.durable, i)
	}
}

func (m *crashModel) intendRetained(set []string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retained.sets = append(m.retained.sets, set)
	return len(m.retained.sets) - 1
}

func (m *crashModel) ackRetained(i int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retained.durable = max(m.retained.durable, i)
}

// String describes the model, sessions in id order.
func (m *crashModel) String() string {
	var b strings.Builder
	ids := slices.Sorted(maps.Keys(m.sessions))
	for _, id := range ids {
		h := m.sessions[id]
		fmt.Fprintf(&b, "%q %d %v\n", id, h.durable, h.states)
	}
	fmt.Fprintf(&b, "retained %d %q\n", m.retained.durable, m.retained.sets)
	return b.String()
}

func (m *crashModel) snapshot() *crashModel {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := &crashModel{sessions: map[string]*sessHistory{}, retained: sessHistoryOf{
		sets: slices.Clone(m.retained.sets), durable: m.retained.durable}}
	for id, h := range m.sessions {
		c.sessions[id] = &sessHistory{states: slices.Clone(h.states), durable: h.durable}
	}
	return c
}

// checkRecovery opens the store left by a crash and checks it against the model, then
// does it again after that instance collected garbage, checkpointed and shut down.
func checkRecovery(t *testing.T, mem *s3store.Memory, mode Durability, model *crashModel, what string) {
	t.Helper()
	if err := decodeEveryObject(mem, crashPrefix); err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	for _, pass := range []string{"after the crash", "after the first recovery shut down"} {
		logged := &logtest.Recorder{Min: slog.LevelError}
		// The crashed instance is gone: no wait for its lease.
		p, err := New(context.Background(), Config{Store: mem, Prefix: crashPrefix, Durability: mode,
			FlushInterval: time.Hour, CheckpointInterval: time.Hour, ForceTakeover: true, Logger: slog.New(logged)})
		if err != nil {
			t.Errorf("%s: New %s: %v", what, pass, err)
			return
		}
		err = checkModelState(t, p, model)
		<-p.gcDone
		if err == nil {
			err = p.Checkpoint(context.Background())
		}
		if serr := p.Shutdown(); err == nil {
			err = serr
		}
		if err == nil {
			err = logged.ErrorsLogged()
		}
		if err == nil {
			err = decodeEveryObject(mem, crashPrefix)
		}
		if err != nil {
			t.Errorf("%s: %s: %v", what, pass, err)
			return
		}
	}
}

// checkModelState compares what p holds with the states the model allows.
func checkModelState(t *testing.T, p *Persistence, model *crashModel) error {
	s := &p.handles.sessions
	loaded := map[string]string{}
	var dup []string
	err := s.LoadForEach(loaderFunc(func(id []byte, st *vlpersistence.SessionState) error {
		if _, ok := loaded[string(id)]; ok {
			dup = append(dup, string(id))
		}
		if len(st.Errors) > 0 {
			return fmt.Errorf("session %q loaded with errors: %v", trim(id), st.Errors)
		}
		loaded[string(id)] = string(st.Subscriptions)
		return nil
	}), nil)
	if err != nil {
		return fmt.Errorf("LoadForEach: %w", err)
	}
	if len(dup) > 0 || s.Count() != uint64(len(loaded)) {
		return fmt.Errorf("sessions duplicated: LoadForEach gave %d (twice: %q), Count %d", len(loaded), dup, s.Count())
	}
	for id := range loaded {
		if _, ok := model.sessions[id]; !ok {
			return fmt.Errorf("session %q exists, and no call made it", trim([]byte(id)))
		}
	}
	for id, h := range model.sessions {
		var got sessState
		if subs, ok := loaded[id]; ok {
			got = sessState{exists: true, subs: subs}
			for q := range numQueues {
				err := forEachOfSessions(s, q)([]byte(id), nil, func(_ interface{}, pk *vlpersistence.PersistedPacket) (bool, error) {
					got.q[q] = append(got.q[q], string(pk.Data))
					return false, nil
				})
				if err != nil {
					return fmt.Errorf("reading queue %d of %q: %w", q, trim([]byte(id)), err)
				}
			}
		}
		if !slices.ContainsFunc(h.states[h.durable:], got.equal) {
			return fmt.Errorf("session %q is %v; durable was %v, and the calls after it lead to %v",
				trim([]byte(id)), got, h.states[h.durable], h.states[h.durable+1:])
		}
	}
	list, err := p.handles.retained.Load()
	if err != nil {
		return fmt.Errorf("Retained.Load: %w", err)
	}
	var set []string
	for _, pk := range list {
		set = append(set, string(pk.Data))
	}
	if !slices.ContainsFunc(model.retained.sets[model.retained.durable:], func(s []string) bool { return slices.Equal(s, set) }) {
		return fmt.Errorf("retained set %v; durable was %v, then %v", set,
			model.retained.sets[model.retained.durable], model.retained.sets[model.retained.durable+1:])
	}
	return nil
}

// decodeEveryObject checks that every object under prefix is one the layout writes and
// decodes.
func decodeEveryObject(mem *s3store.Memory, prefix string) error {
	ctx := context.Background()
	for _, full := range mem.Keys() {
		key, ok := strings.CutPrefix(full, prefix)
		if !ok {
			continue
		}
		data, _, err := mem.Get(ctx, full)
		if err != nil {
			return err
		}
		switch {
		case key == keySystem:
			_, err = decodeSystem(key, data)
		case key == keyRetained:
			_, err = decodeRetained(key, data)
		case key == keyOwner:
			_, err = decodeOwner(key, data)
		case strings.HasPrefix(key, probeRoot):
			// The conditional-write probe of New: any content. A crash between its put
			// and its delete leaves it behind (nothing collects it yet).
		case strings.HasPrefix(key, indexRoot):
			if _, err = parseShardKey(key); err == nil {
				_, err = decodeShard(key, data)
			}
		case strings.HasPrefix(key, journalRoot):
			if _, _, _, err = parseSegmentKey(key); err == nil {
				_, err = decodeSegment(key, data)
			}
		case strings.HasPrefix(key, deltaRoot):
			if _, err = parseNumberedKey(deltaRoot, key); err == nil {
				_, err = decodeDelta(key, data)
			}
		case strings.HasPrefix(key, packRoot):
			if _, err = parseNumberedKey(packRoot, key); err == nil {
				_, err = packBatches(key, data)
			}
		case strings.HasPrefix(key, clientsRoot):
			var pk parsedKey
			if pk, err = parseClientKey(key); err == nil {
				if pk.kind == keySession {
					_, err = decodeSession(key, data)
				} else {
					_, err = decodeBatch(key, data, pk.seq)
				}
			}
		default:
			err = fmt.Errorf("%q is no key of the layout", key)
		}
		if err != nil {
			return fmt.Errorf("object %q: %w", full, err)
		}
	}
	return nil
}

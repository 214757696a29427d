package s3persist_test

// The generator of testdata/layout2: a bucket written by the layout-2 release, with
// every kind of object that layout has, and the state the public API shows of it. It
// only makes sense on a release that writes layout 2, and refuses to run on another;
// testdata/layout2/README.md says how it was run.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/s3store"
)

// layout2Version is the layout the generator must run on.
const layout2Version = "s3persist-layout-2"

// TestWriteLayout2Fixture writes the fixture into the directory named by
// S3PERSIST_WRITE_LAYOUT2_FIXTURE (testdata/layout2 to replace the committed one):
//
//	S3PERSIST_WRITE_LAYOUT2_FIXTURE=testdata/layout2 go test -run TestWriteLayout2Fixture .
//
// Three instances write the bucket in turn, each ending with Shutdown:
//
//   - A (Sync) creates the sessions and their packets, checkpoints, changes many of them
//     (removals, deletes, a new incarnation, state), and checkpoints again: batches of
//     two checkpoints, some with packets removed since;
//   - B (Async) makes changes, checkpoints before they are durable (so segments whose
//     records are already in the index shards remain), then makes changes that only its
//     journal holds: removals of checkpointed packets, a delete of a checkpointed session,
//     a new incarnation, state changes, new sessions, the retained set;
//   - C (Sync) replays B's journal (and seals its segments in the owner record) on a store
//     that refuses checkpoints, so that B's segments stay, and adds segments of its own.
//
// No instance's garbage collection runs (layout2NoGC says why).
//
// The state the three built is kept in a model as the calls are made; the generator
// dumps the bucket, loads it back from the files as the test does, and requires a new
// instance to show exactly the model before it writes expected.json.
func TestWriteLayout2Fixture(t *testing.T) {
	dir := os.Getenv("S3PERSIST_WRITE_LAYOUT2_FIXTURE")
	if dir == "" {
		t.Skip("set S3PERSIST_WRITE_LAYOUT2_FIXTURE=testdata/layout2 to write the fixture (on a layout-2 release only)")
	}
	mem := s3store.NewMemory()
	g := &layout2Gen{t: t, model: map[string]*layout2Model{}, deleted: map[string]bool{}}

	// A: Sync.
	g.open(s3persist.Sync, &layout2NoGC{Store: mem})
	g.phaseA()
	g.shutdown()
	// B: Async; only Flush, Checkpoint and Shutdown cut segments.
	g.open(s3persist.Async, &layout2NoGC{Store: mem})
	g.phaseB()
	g.shutdown()
	// C: Sync, on a store that refuses every checkpoint.
	g.open(s3persist.Sync, &layout2NoGC{Store: mem, refuseCheckpoints: true})
	g.phaseC()
	g.shutdown()

	keys := mem.Keys()
	g.checkShape(keys)
	objects := filepath.Join(dir, "objects")
	if err := os.RemoveAll(objects); err != nil {
		t.Fatal(err)
	}
	var size int
	for _, k := range keys {
		if err := layout2SafePath(k); err != nil {
			t.Fatalf("key %q cannot be a file of the fixture: %v", k, err)
		}
		data, _, err := mem.Get(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(objects, filepath.FromSlash(k))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		size += len(data)
	}
	t.Logf("wrote %d objects, %d bytes: %v", len(keys), size, layout2Kinds(keys))

	// What a new instance shows of the bucket read back from the files must be the model.
	want := g.expected()
	p, err := s3persist.New(context.Background(), s3persist.Config{Store: loadLayout2Fixture(t, dir)})
	if err != nil {
		t.Fatal(err)
	}
	got := readLayout2(t, p, want.Absent)
	if err := p.Shutdown(); err != nil {
		t.Fatal(err)
	}
	want.CreatedAt = g.createdAt
	if d := diffLayout2(want, got); len(d) > 0 {
		t.Fatalf("the bucket read back differs from what the generator did, in %d ways:\n\t%s", len(d), strings.Join(d, "\n\t"))
	}
	got.Comment = "The state of the bucket in objects/, as the public API of the layout-2 release showed it; see README.md."
	data, err := layout2JSONIndent(got)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "expected.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("expected.json: %d sessions, %d absent ids, %d retained packets", len(got.Sessions), len(got.Absent), len(got.Retained))
}

func layout2JSONIndent(v any) ([]byte, error) {
	data, err := layout2JSON(v)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	// Indent keeps the compact form's escapes (no HTML escaping).
	if err := json.Indent(&buf, data, "", "  "); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// layout2NoGC is the generator's store. It refuses to list "c/", which only the garbage
// collection after New does, so that collection gives up at once ("it runs again at the
// next start"), as after a failed listing. Otherwise it would run in the background and
// what it deletes would depend on how fast it is compared with the calls that follow New:
// B's, since A ended with a checkpoint, would find nothing; C's would delete the session
// record and batches of sensor-14 and the old batches of sensor-16, which B deleted in its
// journal only, and which the fixture keeps on purpose: a later release must not bring
// them back. With refuseCheckpoints it also refuses every put of a checkpoint (index
// shards, session records, batches), so that the journal segments C replayed stay.
type layout2NoGC struct {
	s3store.Store
	refuseCheckpoints bool
}

var errLayout2Refused = errors.New("refused by the fixture generator")

func (s *layout2NoGC) List(ctx context.Context, prefix, startAfter string, limit int) (s3store.ListPage, error) {
	if prefix == "c/" {
		return s3store.ListPage{}, errLayout2Refused
	}
	return s.Store.List(ctx, prefix, startAfter, limit)
}

func (s *layout2NoGC) Put(ctx context.Context, key string, data []byte, opts s3store.PutOptions) (s3store.ObjectInfo, error) {
	if s.refuseCheckpoints && (strings.HasPrefix(key, "c/") || strings.HasPrefix(key, "i/")) {
		return s3store.ObjectInfo{}, errLayout2Refused
	}
	return s.Store.Put(ctx, key, data, opts)
}

// layout2SafePath checks that key can be a file path in a Go module and on the usual
// file systems, as it is: the layout's keys are made of [a-z0-9_~-] segments (see
// docs/layout.md, "Client segment"), with no Windows-reserved name and no element that
// looks like a Windows short name ("~" and digits), which a module zip refuses.
func layout2SafePath(key string) error {
	for seg := range strings.SplitSeq(key, "/") {
		if !layout2Segment.MatchString(seg) {
			return fmt.Errorf("segment %q has a byte outside [a-z0-9_~-]", seg)
		}
		if layout2Reserved.MatchString(seg) {
			return fmt.Errorf("segment %q is a reserved name on Windows", seg)
		}
		if i := strings.LastIndexByte(seg, '~'); i >= 0 && strings.Trim(seg[i+1:], "0123456789") == "" {
			return fmt.Errorf("segment %q looks like a Windows short name", seg)
		}
	}
	return nil
}

var (
	layout2Segment  = regexp.MustCompile(`^[a-z0-9_~-]{1,255}$`)
	layout2Reserved = regexp.MustCompile(`^(con|prn|aux|nul|com[0-9]|lpt[0-9])$`)
)

// layout2Gen makes the calls and keeps the model of what they did.
type layout2Gen struct {
	t         *testing.T
	p         *s3persist.Persistence
	s         vlpersistence.Sessions
	r         vlpersistence.Retained
	createdAt string
	model     map[string]*layout2Model // by id
	deleted   map[string]bool          // ids deleted and not created again
	retained  []layout2Packet
}

type layout2Model struct {
	id []byte
	st vlpersistence.SessionState
	q  [3][]*vlpersistence.PersistedPacket
}

const (
	l2QoS0 = iota
	l2QoS12
	l2UnAck
)

func (g *layout2Gen) open(mode s3persist.Durability, store s3store.Store) {
	g.t.Helper()
	p, err := s3persist.New(context.Background(), s3persist.Config{
		Store:      store,
		Durability: mode,
		// Only the generator's Flush, Checkpoint and Shutdown calls cut segments and
		// checkpoint, whatever the speed of the machine.
		FlushInterval:      time.Hour,
		CheckpointInterval: time.Hour,
		CheckpointSegments: 1 << 30,
		LeaseTTL:           time.Hour,
	})
	if err != nil {
		g.t.Fatal(err)
	}
	g.p = p
	if g.s, err = p.Sessions(); err != nil {
		g.t.Fatal(err)
	}
	if g.r, err = p.Retained(); err != nil {
		g.t.Fatal(err)
	}
	sys, err := p.System()
	if err != nil {
		g.t.Fatal(err)
	}
	info, err := sys.GetInfo()
	if err != nil {
		g.t.Fatal(err)
	}
	if info.Version != layout2Version {
		g.t.Fatalf("this release writes layout %q: the fixture is of %q, written by that release only", info.Version, layout2Version)
	}
	if g.createdAt == "" {
		g.createdAt = info.CreatedAt
	}
}

func (g *layout2Gen) shutdown() {
	g.t.Helper()
	if err := g.p.Shutdown(); err != nil {
		g.t.Fatal(err)
	}
}

func (g *layout2Gen) checkpoint() {
	g.t.Helper()
	if err := g.p.Checkpoint(context.Background()); err != nil {
		g.t.Fatal(err)
	}
}

func (g *layout2Gen) flush() {
	g.t.Helper()
	if err := g.p.Flush(context.Background()); err != nil {
		g.t.Fatal(err)
	}
}

func (g *layout2Gen) check(what string, id []byte, err error) {
	g.t.Helper()
	if err != nil {
		g.t.Fatalf("%s(%s): %v", what, layout2Bytes(id), err)
	}
}

func (g *layout2Gen) session(id []byte) *layout2Model {
	g.t.Helper()
	m := g.model[string(id)]
	if m == nil {
		g.t.Fatalf("the generator uses %s, which it has not created", layout2Bytes(id))
	}
	return m
}

func (g *layout2Gen) create(id []byte, ts string, version byte) {
	g.t.Helper()
	g.check("Create", id, g.s.Create(id, &vlpersistence.SessionBase{Timestamp: ts, Version: version}))
	g.model[string(id)] = &layout2Model{id: id, st: vlpersistence.SessionState{SessionBase: vlpersistence.SessionBase{Timestamp: ts, Version: version}}}
	delete(g.deleted, string(id))
}

func (g *layout2Gen) delete(id []byte) {
	g.t.Helper()
	g.check("Delete", id, g.s.Delete(id))
	delete(g.model, string(id))
	g.deleted[string(id)] = true
}

// subscribe is SubscriptionsStore, which creates a missing session (B1).
func (g *layout2Gen) subscribe(id, subs []byte) {
	g.t.Helper()
	g.check("SubscriptionsStore", id, g.s.SubscriptionsStore(id, subs))
	m := g.model[string(id)]
	if m == nil {
		m = &layout2Model{id: id}
		g.model[string(id)] = m
		delete(g.deleted, string(id))
	}
	m.st.Subscriptions = subs
}

func (g *layout2Gen) unsubscribe(id []byte) {
	g.t.Helper()
	g.check("SubscriptionsDelete", id, g.s.SubscriptionsDelete(id))
	g.session(id).st.Subscriptions = nil
}

// stateStore merges st as T1 says.
func (g *layout2Gen) stateStore(id []byte, st vlpersistence.SessionState) {
	g.t.Helper()
	g.check("StateStore", id, g.s.StateStore(id, &st))
	m := g.session(id)
	if len(st.Subscriptions) > 0 {
		m.st.Subscriptions = st.Subscriptions
	}
	if st.Expire != nil {
		m.st.Expire = st.Expire
	}
	if st.Timestamp != "" {
		m.st.Timestamp = st.Timestamp
	}
	if st.Version != 0 {
		m.st.Version = st.Version
	}
}

func (g *layout2Gen) stateDelete(id []byte) {
	g.t.Helper()
	g.check("StateDelete", id, g.s.StateDelete(id))
	g.session(id).st = vlpersistence.SessionState{}
}

func (g *layout2Gen) expiry(id []byte, d vlpersistence.SessionDelays) {
	g.t.Helper()
	g.check("ExpiryStore", id, g.s.ExpiryStore(id, &d))
	g.session(id).st.Expire = &d
}

func (g *layout2Gen) expiryDelete(id []byte) {
	g.t.Helper()
	g.check("ExpiryDelete", id, g.s.ExpiryDelete(id))
	g.session(id).st.Expire = nil
}

// store appends pk to queue q with PacketStoreQoS0 or PacketStoreQoS12.
func (g *layout2Gen) store(id []byte, q int, pk *vlpersistence.PersistedPacket) {
	g.t.Helper()
	m := g.session(id)
	switch q {
	case l2QoS0:
		g.check("PacketStoreQoS0", id, g.s.PacketStoreQoS0(id, pk))
	case l2QoS12:
		g.check("PacketStoreQoS12", id, g.s.PacketStoreQoS12(id, pk))
	default:
		g.t.Fatalf("no single store for queue %d", q)
	}
	m.q[q] = append(m.q[q], pk)
}

// storeAll appends the packets of every queue in one PacketsStore call.
func (g *layout2Gen) storeAll(id []byte, pks vlpersistence.PersistedPackets) {
	g.t.Helper()
	m := g.session(id)
	g.check("PacketsStore", id, g.s.PacketsStore(id, pks))
	for q, list := range [][]*vlpersistence.PersistedPacket{pks.QoS0, pks.QoS12, pks.UnAck} {
		for _, pk := range list {
			if pk != nil {
				m.q[q] = append(m.q[q], pk)
			}
		}
	}
}

// remove visits queue q of id, removes the packets whose position drop says, and checks
// that the visit saw the model's queue.
func (g *layout2Gen) remove(id []byte, q int, drop func(i int) bool) {
	g.t.Helper()
	m := g.session(id)
	var seen []layout2Packet
	i := 0
	err := layout2Queues[q].forEach(g.s, id, nil, func(_ interface{}, pk *vlpersistence.PersistedPacket) (bool, error) {
		seen = append(seen, layout2PacketOf(pk))
		i++
		return drop(i - 1), nil
	})
	g.check("PacketsForEach"+layout2Queues[q].name, id, err)
	if d := diffLayout2Packets("visit", layout2PacketsOf(m.q[q]), seen); len(d) > 0 {
		g.t.Fatalf("PacketsForEach%s(%s) does not visit what the generator stored:\n\t%s", layout2Queues[q].name, layout2Bytes(id), strings.Join(d, "\n\t"))
	}
	var kept []*vlpersistence.PersistedPacket
	for i, pk := range m.q[q] {
		if !drop(i) {
			kept = append(kept, pk)
		}
	}
	m.q[q] = kept
}

func (g *layout2Gen) packetsDelete(id []byte) {
	g.t.Helper()
	g.check("PacketsDelete", id, g.s.PacketsDelete(id))
	g.session(id).q = [3][]*vlpersistence.PersistedPacket{}
}

func (g *layout2Gen) retain(list []*vlpersistence.PersistedPacket) {
	g.t.Helper()
	if err := g.r.Store(list); err != nil {
		g.t.Fatalf("Retained().Store: %v", err)
	}
	g.retained = nil
	for _, pk := range list {
		if pk != nil {
			g.retained = append(g.retained, layout2PacketOf(pk))
		}
	}
}

func layout2PacketsOf(list []*vlpersistence.PersistedPacket) []layout2Packet {
	var out []layout2Packet
	for _, pk := range list {
		out = append(out, layout2PacketOf(pk))
	}
	return out
}

// expected is the model as a layout2Fixture (CreatedAt left to the caller).
func (g *layout2Gen) expected() layout2Fixture {
	var f layout2Fixture
	for _, m := range g.model {
		f.Sessions = append(f.Sessions, layout2Session{
			ID:    m.id,
			State: layout2StateOf(&m.st),
			QoS0:  layout2PacketsOf(m.q[l2QoS0]),
			QoS12: layout2PacketsOf(m.q[l2QoS12]),
			UnAck: layout2PacketsOf(m.q[l2UnAck]),
		})
	}
	slices.SortFunc(f.Sessions, func(a, b layout2Session) int { return bytes.Compare(a.ID, b.ID) })
	f.Count = uint64(len(f.Sessions))
	for id := range g.deleted {
		f.Absent = append(f.Absent, layout2Bytes(id))
	}
	slices.SortFunc(f.Absent, func(a, b layout2Bytes) int { return bytes.Compare(a, b) })
	f.Retained = g.retained
	return f
}

// checkShape fails unless the bucket holds what the fixture is for: objects of every
// kind and nothing else, and journal segments of two writers (B's, replayed and sealed
// by C, and C's).
func (g *layout2Gen) checkShape(keys []string) {
	g.t.Helper()
	kinds := layout2Kinds(keys)
	for _, k := range layout2KindNames {
		if kinds[k] == 0 {
			g.t.Fatalf("the bucket holds no object of kind %s: %v", k, kinds)
		}
	}
	if kinds["other"] > 0 {
		g.t.Fatalf("the bucket holds objects of no kind of layout 2: %v", keys)
	}
	epochs := map[string]bool{}
	for _, k := range keys {
		if rest, ok := strings.CutPrefix(k, "j/"); ok {
			epoch, _, _ := strings.Cut(rest[3:], "-")
			epochs[epoch] = true
		}
	}
	if len(epochs) != 2 {
		g.t.Fatalf("the journal segments are of %d writers, want 2 (B and C): %v", len(epochs), keys)
	}
}

// Ids. l2Sensor(i) are the ordinary sessions; the others are ids of every form the
// layout maps (escaped bytes, hashed forms, the limit between them).
func l2Sensor(i int) []byte { return fmt.Appendf(nil, "sensor-%02d", i) }

var (
	l2IDCar        = []byte("Car/1")
	l2IDSpaces     = []byte("kitchen light 3")
	l2IDAccents    = []byte("capteur-température/salle 2")
	l2IDCJK        = []byte("温度センサー")
	l2IDBinary     = []byte("\x00\x01bin\xfe\xff")
	l2IDDots       = []byte("..")
	l2IDRetained   = []byte("retained")
	l2IDLimit      = bytes.Repeat([]byte("a"), 160) // the longest readable segment
	l2IDLimitPlus  = bytes.Repeat([]byte("a"), 161) // hashed
	l2IDLong       = append([]byte("fleet/"), bytes.Repeat([]byte("vehicle-"), 25)...)
	l2IDLongBinary = layout2Bytes300()
	l2IDSub        = []byte("created-by-subscribe")
	l2IDB1         = []byte("journal-only/b1") // created by B before its checkpoint
	l2IDB2         = []byte("journal-only/b2") // created by B after it: only in B's journal
	l2IDB3         = []byte("journal-only/b3")
	l2IDC1         = []byte("journal-only/c1")
)

func layout2Bytes300() []byte {
	out := make([]byte, 0, 300)
	for i := 0; len(out) < 300; i++ {
		sum := sha256.Sum256([]byte{byte(i)})
		out = append(out, sum[:]...)
	}
	return out[:300]
}

var layout2Specials = [][]byte{l2IDCar, l2IDSpaces, l2IDAccents, l2IDCJK, l2IDBinary, l2IDDots, l2IDRetained, l2IDLimit, l2IDLimitPlus, l2IDLong, l2IDLongBinary}

// l2Subs is a 64-byte subscriptions blob of id.
func l2Subs(id []byte) []byte {
	sum := sha512.Sum512(append([]byte("subscriptions of "), id...))
	return sum[:]
}

func l2Time(day, minute int) string {
	return fmt.Sprintf("2025-05-%02dT%02d:%02d:00Z", day, 8+minute/60, minute%60)
}

// l2Pk is a text packet; l2PkBin a binary one shaped like an MQTT PUBLISH.
func l2Pk(format string, args ...any) *vlpersistence.PersistedPacket {
	return &vlpersistence.PersistedPacket{Data: fmt.Appendf(nil, format, args...)}
}

func l2PkBin(tag string, n int) *vlpersistence.PersistedPacket {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d", tag, n))
	topic := "sensors/" + tag
	data := []byte{0x32, byte(2 + len(topic) + 2 + len(sum)), 0, byte(len(topic))}
	data = append(data, topic...)
	data = append(data, 0, byte(n))
	return &vlpersistence.PersistedPacket{Data: append(data, sum[:]...)}
}

func l2Expiring(p *vlpersistence.PersistedPacket, at string) *vlpersistence.PersistedPacket {
	p.ExpireAt = at
	return p
}

const l2Sensors = 28

// phaseA: Sync. Sessions, packets, a checkpoint; changes; a second checkpoint.
func (g *layout2Gen) phaseA() {
	for i := range l2Sensors {
		id := l2Sensor(i)
		g.create(id, l2Time(1, i), byte(3+i%3))
		if i%3 != 0 {
			g.subscribe(id, l2Subs(id))
		}
		if i%4 == 1 {
			d := vlpersistence.SessionDelays{Since: l2Time(2, i), ExpireIn: fmt.Sprint(300 * (i + 1))}
			if i%8 == 1 {
				d.Will = append([]byte{0x30, 0x0c, 0x00, 0x04}, fmt.Appendf(nil, "will%02d", i)...)
			}
			g.expiry(id, d)
		}
		for k := range i % 3 {
			g.store(id, l2QoS0, l2Pk("qos0 %s #%d", id, k))
		}
		for k := range 1 + i%4 {
			p := l2PkBin(string(id), k)
			if k%2 == 1 {
				p = l2Expiring(l2Pk("qos12 %s #%d", id, k), l2Time(20, k))
			}
			g.store(id, l2QoS12, p)
		}
		if i%5 == 0 {
			g.storeAll(id, vlpersistence.PersistedPackets{
				QoS12: []*vlpersistence.PersistedPacket{l2Pk("qos12 %s batch", id)},
				UnAck: []*vlpersistence.PersistedPacket{l2PkBin(string(id)+"/unack", 0), l2Expiring(l2Pk("unack %s #1", id), l2Time(21, i)), l2Pk("unack %s #2", id)},
			})
		}
	}
	for n, id := range layout2Specials {
		g.create(id, l2Time(3, n), byte(4+n%2))
		g.subscribe(id, l2Subs(id))
		g.store(id, l2QoS12, l2Pk("qos12 to special %d", n))
		g.store(id, l2QoS0, l2PkBin("special", n))
	}
	// No packet with empty Data: PacketsStore accepts one, but the layout-2 decoders
	// refuse it, so that a bucket holding one has lost state already (README.md).
	g.storeAll(l2IDCar, vlpersistence.PersistedPackets{UnAck: []*vlpersistence.PersistedPacket{l2Expiring(l2Pk("unack 0"), l2Time(22, 0)), nil, l2Pk("unack 1, after a nil element")}})
	g.expiry(l2IDLong, vlpersistence.SessionDelays{Since: l2Time(4, 0), ExpireIn: ""})
	g.retain([]*vlpersistence.PersistedPacket{l2Pk("retained by A")})
	g.checkpoint() // #1

	// Packets for a second batch of l2Sensors 0..9, interleaved over the queues.
	for i := range 10 {
		id := l2Sensor(i)
		g.store(id, l2QoS12, l2Pk("qos12 %s after checkpoint 1", id))
		g.store(id, l2QoS0, l2Pk("qos0 %s after checkpoint 1", id))
		g.store(id, l2QoS12, l2Expiring(l2PkBin(string(id)+"/after1", i), l2Time(23, i)))
	}
	// Removals: the head of a queue, every other packet across both batches, all of batch
	// 1's QoS 1/2 packets (that batch becomes garbage), the middle and the tail of UnAck,
	// every packet of a session.
	g.remove(l2Sensor(1), l2QoS12, func(i int) bool { return i == 0 })
	g.remove(l2Sensor(2), l2QoS12, func(i int) bool { return i%2 == 0 })
	g.remove(l2Sensor(3), l2QoS12, func(i int) bool { return i < 4 })
	g.remove(l2Sensor(5), l2UnAck, func(i int) bool { return i == 1 })
	g.remove(l2Sensor(10), l2UnAck, func(i int) bool { return i == 2 })
	g.remove(l2Sensor(4), l2QoS0, func(int) bool { return true })
	g.remove(l2Sensor(4), l2QoS12, func(int) bool { return true })
	// A delete whose objects checkpoint 2 deletes, and a new incarnation.
	g.delete(l2Sensor(6))
	g.delete(l2Sensor(7))
	g.create(l2Sensor(7), l2Time(5, 7), 5)
	g.store(l2Sensor(7), l2QoS12, l2Pk("qos12 %s, second incarnation", l2Sensor(7)))
	g.packetsDelete(l2Sensor(8))
	g.stateStore(l2Sensor(9), vlpersistence.SessionState{SessionBase: vlpersistence.SessionBase{Timestamp: l2Time(6, 9)}})
	g.expiry(l2Sensor(11), vlpersistence.SessionDelays{Since: l2Time(6, 11), ExpireIn: "60", Will: []byte("a will set after checkpoint 1")})
	g.expiryDelete(l2Sensor(13))
	g.checkpoint() // #2
}

// phaseB: Async. Changes in flight at a checkpoint, then changes only its journal holds.
func (g *layout2Gen) phaseB() {
	g.create(l2IDB1, l2Time(7, 1), 5)
	g.store(l2IDB1, l2QoS0, l2Pk("qos0 %s #0", l2IDB1))
	g.store(l2IDB1, l2QoS12, l2Pk("qos12 %s #0", l2IDB1))
	for i := 12; i < 18; i++ {
		g.store(l2Sensor(i), l2QoS12, l2Pk("qos12 %s from B", l2Sensor(i)))
	}
	// Not flushed: the checkpoint writes these changes into the shards before their
	// segments are durable, so the segments outlive it with records the shards hold.
	g.checkpoint() // #3
	g.flush()

	g.create(l2IDB2, l2Time(7, 2), 4)
	g.storeAll(l2IDB2, vlpersistence.PersistedPackets{
		QoS0:  []*vlpersistence.PersistedPacket{l2Pk("qos0 %s", l2IDB2)},
		QoS12: []*vlpersistence.PersistedPacket{l2PkBin(string(l2IDB2), 0), l2PkBin(string(l2IDB2), 1)},
		UnAck: []*vlpersistence.PersistedPacket{l2Pk("unack %s", l2IDB2)},
	})
	g.create(l2IDB3, l2Time(7, 3), 5)
	g.store(l2IDB3, l2QoS12, l2Pk("qos12 %s", l2IDB3))
	g.remove(l2Sensor(12), l2QoS12, func(i int) bool { return i == 0 }) // from an epoch-1 batch
	g.remove(l2Sensor(13), l2QoS12, func(i int) bool { return i == 2 }) // from the epoch-2 batch
	g.remove(l2Sensor(15), l2QoS12, func(i int) bool { return i == 0 })
	g.store(l2Sensor(15), l2QoS12, l2Pk("qos12 %s after a removal", l2Sensor(15)))
	g.delete(l2Sensor(14)) // its record and batches stay in the bucket: only the journal deletes them
	g.delete(l2Sensor(16)) // a new incarnation in the journal only: no packet of the old one comes back
	g.create(l2Sensor(16), l2Time(8, 16), 4)
	g.subscribe(l2Sensor(16), l2Subs([]byte("new incarnation")))
	g.stateStore(l2Sensor(17), vlpersistence.SessionState{Subscriptions: l2Subs([]byte("replaced by B")), SessionBase: vlpersistence.SessionBase{Timestamp: l2Time(8, 17), Version: 5}})
	g.flush()

	g.unsubscribe(l2Sensor(19))
	g.stateDelete(l2Sensor(20))
	g.expiry(l2Sensor(18), vlpersistence.SessionDelays{Since: l2Time(8, 18), ExpireIn: "7200", Will: []byte{0x30, 0x03, 0x00, 0x01, 'w'}})
	g.expiryDelete(l2Sensor(21))
	g.subscribe(l2IDSub, l2Subs(l2IDSub))
	g.store(l2IDCar, l2QoS12, l2Pk("qos12 to Car/1 from B"))
	g.store(l2IDLimitPlus, l2QoS0, l2PkBin("hashed", 1))
	g.remove(l2IDLongBinary, l2QoS0, func(int) bool { return true })
	g.packetsDelete(l2Sensor(22))
	g.retain([]*vlpersistence.PersistedPacket{
		l2Pk("retained: sensors/1"),
		l2Expiring(l2PkBin("retained", 2), l2Time(30, 0)),
		nil,
		l2Pk("retained: sensors/1"), // duplicates are kept
		{Data: []byte{0xff, 0x00, 0xfe}},
	})
	// Shutdown flushes the rest.
}

// phaseC: Sync, checkpoints refused. It replays B's journal and adds to it.
func (g *layout2Gen) phaseC() {
	g.store(l2IDB1, l2QoS12, l2Pk("qos12 %s from C", l2IDB1))
	g.remove(l2IDB2, l2QoS12, func(i int) bool { return i == 0 }) // a packet only B's journal holds
	g.delete(l2IDB3)                                              // a session only B's journal holds
	g.create(l2IDC1, l2Time(9, 1), 5)
	g.storeAll(l2IDC1, vlpersistence.PersistedPackets{
		QoS12: []*vlpersistence.PersistedPacket{l2Pk("qos12 %s", l2IDC1)},
		UnAck: []*vlpersistence.PersistedPacket{l2Expiring(l2Pk("unack %s", l2IDC1), l2Time(24, 0))},
	})
	g.stateStore(l2Sensor(23), vlpersistence.SessionState{Expire: &vlpersistence.SessionDelays{Since: l2Time(9, 23), ExpireIn: "10"}})
	g.store(l2Sensor(24), l2QoS0, l2Pk("qos0 %s from C", l2Sensor(24)))
	g.store(l2IDLong, l2QoS12, l2Pk("qos12 to the long id from C"))
	g.remove(l2IDCJK, l2QoS12, func(int) bool { return true })
}

package persistencetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/VolantMQ/vlapi/vlpersistence"
)

type packet = vlpersistence.PersistedPacket

// errStop is what the suite's loaders return to stop an iteration, like the broker's
// errors.New("exit").
var errStop = errors.New("persistencetest: stop")

// ts is a timestamp as the broker writes it into SessionBase and SessionDelays.
const ts = "2024-05-06T07:08:09Z"

func id(s string) []byte { return []byte(s) }

func base(timestamp string, version byte) *vlpersistence.SessionBase {
	return &vlpersistence.SessionBase{Timestamp: timestamp, Version: version}
}

// pk returns a packet whose Data and ExpireAt both carry tag, so that a packet assembled
// from two different writes is visible.
func pk(tag string) *packet {
	return &packet{Data: []byte("data:" + tag), ExpireAt: "expire:" + tag}
}

// pks returns pk(prefix-0) ... pk(prefix-(n-1)).
func pks(prefix string, n int) []*packet {
	out := make([]*packet, n)
	for i := range out {
		out[i] = pk(fmt.Sprintf("%s-%03d", prefix, i))
	}
	return out
}

// allBytes is every byte value once, for byte-exact round trips.
func allBytes() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// pattern returns n bytes that differ from one position to the next and from one seed to
// the next, so that a shifted, truncated or swapped buffer never compares equal.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func clonePacket(p *packet) *packet {
	if p == nil {
		return nil
	}
	return &packet{Data: bytes.Clone(p.Data), ExpireAt: p.ExpireAt}
}

func clonePackets(ps []*packet) []*packet {
	if ps == nil {
		return nil
	}
	out := make([]*packet, len(ps))
	for i, p := range ps {
		out[i] = clonePacket(p)
	}
	return out
}

func equalPacket(a, b *packet) bool {
	if a == nil || b == nil {
		return a == b
	}
	return bytes.Equal(a.Data, b.Data) && a.ExpireAt == b.ExpireAt
}

// describe formats a packet for a failure message; long data is summarised.
func describe(p *packet) string {
	if p == nil {
		return "<nil packet>"
	}
	return fmt.Sprintf("{Data: %s, ExpireAt: %s}", describeBytes(p.Data), describeBytes([]byte(p.ExpireAt)))
}

func describeBytes(b []byte) string {
	if len(b) <= 48 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("<%d bytes %q... sha256 %x>", len(b), b[:16], sha256.Sum256(b))
}

func describeAll(ps []*packet) string {
	if len(ps) > 12 {
		return fmt.Sprintf("%d packets [%s ... %s]", len(ps), describe(ps[0]), describe(ps[len(ps)-1]))
	}
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = describe(p)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// diffPackets describes the first difference between got and want, or returns "".
func diffPackets(got, want []*packet) string {
	for i := 0; i < len(got) && i < len(want); i++ {
		if !equalPacket(got[i], want[i]) {
			return fmt.Sprintf("packet %d is %s, want %s (got %s, want %s)", i, describe(got[i]), describe(want[i]), describeAll(got), describeAll(want))
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("got %d packets, want %d (got %s, want %s)", len(got), len(want), describeAll(got), describeAll(want))
	}
	return ""
}

// --- Queues ---

// queue names one of the three packet queues of a session.
type queue int

const (
	q0 queue = iota
	q12
	qUA
)

var queues = []queue{q0, q12, qUA}

func (q queue) String() string {
	return [...]string{"QoS0", "QoS12", "UnAck"}[q]
}

func (q queue) forEach(s vlpersistence.Sessions, id []byte, ctx any, l vlpersistence.PacketLoader) error {
	switch q {
	case q0:
		return s.PacketsForEachQoS0(id, ctx, l)
	case q12:
		return s.PacketsForEachQoS12(id, ctx, l)
	default:
		return s.PacketsForEachUnAck(id, ctx, l)
	}
}

func (q queue) count(s vlpersistence.Sessions, id []byte) (uint64, error) {
	switch q {
	case q0:
		return s.PacketCountQoS0(id)
	case q12:
		return s.PacketCountQoS12(id)
	default:
		return s.PacketCountUnAck(id)
	}
}

// in returns a PersistedPackets holding ps in q's list only.
func (q queue) in(ps ...*packet) vlpersistence.PersistedPackets {
	var pp vlpersistence.PersistedPackets
	switch q {
	case q0:
		pp.QoS0 = ps
	case q12:
		pp.QoS12 = ps
	default:
		pp.UnAck = ps
	}
	return pp
}

// store appends p to q: PacketStoreQoS0/QoS12, and PacketsStore for UnAck, which has no
// single-packet method.
func (q queue) store(s vlpersistence.Sessions, id []byte, p *packet) error {
	switch q {
	case q0:
		return s.PacketStoreQoS0(id, p)
	case q12:
		return s.PacketStoreQoS12(id, p)
	default:
		return s.PacketsStore(id, q.in(p))
	}
}

// visit runs PacketsForEach on q with decide, and returns copies of the visited packets
// (nil for a nil packet) in visit order. decide gets the index of the visit.
func visit(s vlpersistence.Sessions, id []byte, q queue, decide func(i int, p *packet) (bool, error)) ([]*packet, error) {
	var seen []*packet
	err := q.forEach(s, id, nil, func(_ any, p *packet) (bool, error) {
		seen = append(seen, clonePacket(p))
		return decide(len(seen)-1, p)
	})
	return seen, err
}

// drainE removes every packet of q, returning copies in visit order.
func drainE(s vlpersistence.Sessions, id []byte, q queue) ([]*packet, error) {
	got, err := visit(s, id, q, func(int, *packet) (bool, error) { return true, nil })
	if err != nil {
		return got, fmt.Errorf("PacketsForEach%s(%q) with a loader removing every packet: %w", q, id, err)
	}
	return got, nil
}

// drain is drainE that ends the case on an error.
func (h *harness) drain(s vlpersistence.Sessions, sid []byte, q queue) []*packet {
	h.t.Helper()
	got, err := drainE(s, sid, q)
	h.noErr(err, "draining")
	return got
}

// wantQueue drains q of id and fails the case unless it held exactly want, in order.
func (h *harness) wantQueue(s vlpersistence.Sessions, sid []byte, q queue, want []*packet, context string) {
	h.t.Helper()
	got := h.drain(s, sid, q)
	if d := diffPackets(got, want); d != "" {
		h.t.Errorf("%s: queue %s of %q: %s", context, q, sid, d)
	}
}

// wantQueues drains the three queues of id and compares them with want (indexed by queue).
func (h *harness) wantQueues(s vlpersistence.Sessions, sid []byte, want [3][]*packet, context string) {
	h.t.Helper()
	for _, q := range queues {
		h.wantQueue(s, sid, q, want[q], context)
	}
}

// store stores p in q of id and ends the case on an error.
func (h *harness) store(s vlpersistence.Sessions, sid []byte, q queue, ps ...*packet) {
	h.t.Helper()
	for _, p := range ps {
		h.noErr(q.store(s, sid, p), "storing %s in queue %s of %q", describe(p), q, sid)
	}
}

// create creates a session and ends the case on an error.
func (h *harness) create(s vlpersistence.Sessions, sid []byte, b *vlpersistence.SessionBase) {
	h.t.Helper()
	h.noErr(s.Create(sid, b), "Create(%q)", sid)
}

// wantCount fails the case unless Count() is n.
func (h *harness) wantCount(s vlpersistence.Sessions, n uint64, context string) {
	h.t.Helper()
	if got := s.Count(); got != n {
		h.t.Errorf("%s: Count() = %d, want %d", context, got, n)
	}
}

// wantExists fails the case unless Exists(id) is want.
func (h *harness) wantExists(s vlpersistence.Sessions, sid []byte, want bool, context string) {
	h.t.Helper()
	if got := s.Exists(sid); got != want {
		h.t.Errorf("%s: Exists(%q) = %v, want %v", context, sid, got, want)
	}
}

// --- Sessions as LoadForEach shows them ---

// view is a copy of what LoadSession got for one session.
type view struct {
	nilState      bool
	Timestamp     string
	Version       byte
	Subscriptions []byte
	Expire        *vlpersistence.SessionDelays
	Errors        []string
}

func viewOf(st *vlpersistence.SessionState) *view {
	if st == nil {
		return &view{nilState: true}
	}
	v := &view{
		Timestamp:     st.Timestamp,
		Version:       st.Version,
		Subscriptions: bytes.Clone(st.Subscriptions),
		Expire:        cloneDelays(st.Expire),
	}
	for _, e := range st.Errors {
		v.Errors = append(v.Errors, fmt.Sprint(e))
	}
	return v
}

func cloneDelays(d *vlpersistence.SessionDelays) *vlpersistence.SessionDelays {
	if d == nil {
		return nil
	}
	return &vlpersistence.SessionDelays{Since: d.Since, ExpireIn: d.ExpireIn, Will: bytes.Clone(d.Will)}
}

func equalDelays(a, b *vlpersistence.SessionDelays) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Since == b.Since && a.ExpireIn == b.ExpireIn && bytes.Equal(a.Will, b.Will)
}

func describeDelays(d *vlpersistence.SessionDelays) string {
	if d == nil {
		return "nil"
	}
	return fmt.Sprintf("{Since: %q, ExpireIn: %q, Will: %s}", d.Since, d.ExpireIn, describeBytes(d.Will))
}

// diff describes how v differs from want, or returns "". Subscriptions compare as bytes
// (nil and empty are the same: no subscriptions).
func (v *view) diff(want *view) string {
	var d []string
	if v.nilState != want.nilState {
		if v.nilState {
			return "LoadSession got a nil state (S5: state is never nil)"
		}
		return "LoadSession got a non-nil state, want nil"
	}
	if v.Timestamp != want.Timestamp {
		d = append(d, fmt.Sprintf("Timestamp %q, want %q", v.Timestamp, want.Timestamp))
	}
	if v.Version != want.Version {
		d = append(d, fmt.Sprintf("Version %d, want %d", v.Version, want.Version))
	}
	if !bytes.Equal(v.Subscriptions, want.Subscriptions) {
		d = append(d, fmt.Sprintf("Subscriptions %s, want %s", describeBytes(v.Subscriptions), describeBytes(want.Subscriptions)))
	}
	if !equalDelays(v.Expire, want.Expire) {
		d = append(d, fmt.Sprintf("Expire %s, want %s", describeDelays(v.Expire), describeDelays(want.Expire)))
	}
	if len(v.Errors) != len(want.Errors) {
		d = append(d, fmt.Sprintf("Errors %q, want %q", v.Errors, want.Errors))
	}
	return strings.Join(d, "; ")
}

// clone returns a deep copy of v.
func (v *view) clone() *view {
	c := *v
	c.Subscriptions = bytes.Clone(v.Subscriptions)
	c.Expire = cloneDelays(v.Expire)
	c.Errors = append([]string(nil), v.Errors...)
	return &c
}

// sessionLoader adapts a function to vlpersistence.SessionLoader.
type sessionLoader func(ctx any, id []byte, st *vlpersistence.SessionState) error

func (f sessionLoader) LoadSession(ctx any, id []byte, st *vlpersistence.SessionState) error {
	return f(ctx, id, st)
}

// loadE runs LoadForEach with a loader that copies every state. It fails if a session is
// visited twice. The loader is safe for concurrent calls.
func loadE(s vlpersistence.Sessions) (map[string]*view, error) {
	var mu sync.Mutex
	got := make(map[string]*view)
	var twice []string
	err := s.LoadForEach(sessionLoader(func(_ any, sid []byte, st *vlpersistence.SessionState) error {
		v := viewOf(st)
		mu.Lock()
		defer mu.Unlock()
		if _, ok := got[string(sid)]; ok {
			twice = append(twice, fmt.Sprintf("%q", sid))
		}
		got[string(sid)] = v
		return nil
	}), nil)
	if err != nil {
		return got, fmt.Errorf("LoadForEach: %w", err)
	}
	if len(twice) > 0 {
		return got, fmt.Errorf("LoadForEach visited sessions more than once (S5: exactly once): %s", strings.Join(twice, ", "))
	}
	return got, nil
}

// load is loadE that ends the case on an error.
func (h *harness) load(s vlpersistence.Sessions) map[string]*view {
	h.t.Helper()
	got, err := loadE(s)
	h.noErr(err, "loading sessions")
	return got
}

// stateOf loads the sessions and returns the view of id, ending the case if it was not
// visited.
func (h *harness) stateOf(s vlpersistence.Sessions, sid []byte) *view {
	h.t.Helper()
	got := h.load(s)
	v, ok := got[string(sid)]
	if !ok {
		h.t.Fatalf("LoadForEach did not visit %q (visited %s)", sid, idsOf(got))
	}
	return v
}

// wantState fails the case unless LoadForEach shows id with the state want.
func (h *harness) wantState(s vlpersistence.Sessions, sid []byte, want *view, context string) {
	h.t.Helper()
	if d := h.stateOf(s, sid).diff(want); d != "" {
		h.t.Errorf("%s: session %q: %s", context, sid, d)
	}
}

// wantIDs fails the case unless LoadForEach visits exactly ids.
func (h *harness) wantIDs(s vlpersistence.Sessions, ids [][]byte, context string) {
	h.t.Helper()
	got := h.load(s)
	if d := diffIDs(got, ids); d != "" {
		h.t.Errorf("%s: LoadForEach %s", context, d)
	}
}

// diffIDs describes how the visited ids differ from want, or returns "".
func diffIDs(got map[string]*view, want [][]byte) string {
	wantSet := make(map[string]bool)
	for _, w := range want {
		wantSet[string(w)] = true
	}
	var missing, extra []string
	for w := range wantSet {
		if _, ok := got[w]; !ok {
			missing = append(missing, fmt.Sprintf("%q", short(w)))
		}
	}
	for g := range got {
		if !wantSet[g] {
			extra = append(extra, fmt.Sprintf("%q", short(g)))
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		return ""
	}
	sort.Strings(missing)
	sort.Strings(extra)
	return fmt.Sprintf("did not visit %v and visited unexpected %v", missing, extra)
}

func idsOf(m map[string]*view) string {
	var ids []string
	for k := range m {
		ids = append(ids, fmt.Sprintf("%q", short(k)))
	}
	sort.Strings(ids)
	return "[" + strings.Join(ids, " ") + "]"
}

// short shortens long ids for messages.
func short(s string) string {
	if len(s) <= 64 {
		return s
	}
	return fmt.Sprintf("%s...(%d bytes)", s[:32], len(s))
}

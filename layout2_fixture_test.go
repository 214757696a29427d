package s3persist_test

// A bucket written by the layout-2 release (testdata/layout2, see its README.md) must
// open with every later release with nothing lost. The fixture is compared with the
// state that layout-2 code itself read from it (expected.json) through the public API
// only: nothing here depends on the object layout a release writes, so the test keeps
// its meaning when the layout changes.

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/s3store"
)

// layout2Dir holds the fixture: objects/ (one file per object, its path the key) and
// expected.json (a layout2Fixture).
const layout2Dir = "testdata/layout2"

// layout2Fixture is the state of a bucket as the public API shows it: expected.json.
// Internal numbers (incarnations, packet numbers, epochs) are not part of it.
type layout2Fixture struct {
	// Comment says what the file is, for a reader who opens it first.
	Comment string `json:"comment,omitempty"`
	// CreatedAt is System().GetInfo().CreatedAt: the time the bucket was initialised,
	// stable across restarts (contract Y1), so across a change of layout too.
	CreatedAt string `json:"created_at"`
	// Count is Sessions().Count().
	Count uint64 `json:"count"`
	// Sessions are every session LoadForEach shows, in byte order of id.
	Sessions []layout2Session `json:"sessions"`
	// Absent are ids deleted (and not created again) while the bucket was written:
	// Exists must say false and no queue may hold anything of theirs.
	Absent []layout2Bytes `json:"absent"`
	// Retained is Retained().Load(), in order.
	Retained []layout2Packet `json:"retained"`
}

type layout2Session struct {
	ID    layout2Bytes    `json:"id"`
	State layout2State    `json:"state"`
	QoS0  []layout2Packet `json:"qos0"`
	QoS12 []layout2Packet `json:"qos12"`
	UnAck []layout2Packet `json:"unack"`
}

// layout2State is a vlpersistence.SessionState. Errors is never in expected.json: the
// reader sets it when LoadForEach reports the session unreadable.
type layout2State struct {
	Timestamp     layout2Bytes   `json:"timestamp"`
	Version       byte           `json:"version"`
	Subscriptions layout2Bytes   `json:"subscriptions"`
	Expire        *layout2Expiry `json:"expire"`
	Errors        []string       `json:"errors,omitempty"`
}

type layout2Expiry struct {
	Since    layout2Bytes `json:"since"`
	ExpireIn layout2Bytes `json:"expire_in"`
	Will     layout2Bytes `json:"will"`
}

type layout2Packet struct {
	ExpireAt layout2Bytes `json:"expire_at"`
	Data     layout2Bytes `json:"data"`
}

// layout2Bytes is an opaque broker value (id, timestamp, payload...). In JSON it is a
// string when it is printable UTF-8, and {"hex": "..."} otherwise. nil and empty are the
// same value: the contract lets them differ (G7).
type layout2Bytes []byte

func (b layout2Bytes) MarshalJSON() ([]byte, error) {
	if layout2Printable(b) {
		return layout2JSON(string(b))
	}
	return layout2JSON(map[string]string{"hex": hex.EncodeToString(b)})
}

func (b *layout2Bytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*b = layout2Bytes(s)
		return nil
	}
	var h struct {
		Hex *string `json:"hex"`
	}
	if err := json.Unmarshal(data, &h); err != nil || h.Hex == nil {
		return fmt.Errorf("layout2Bytes: want a string or {\"hex\": ...}, got %s", data)
	}
	v, err := hex.DecodeString(*h.Hex)
	*b = v
	return err
}

func (b layout2Bytes) String() string {
	s, _ := b.MarshalJSON()
	return string(s)
}

func layout2Printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// layout2JSON marshals v without HTML escapes, so that expected.json reads as written.
func layout2JSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func layout2StateOf(st *vlpersistence.SessionState) layout2State {
	out := layout2State{
		Timestamp:     layout2Bytes(st.Timestamp),
		Version:       st.Version,
		Subscriptions: layout2Bytes(bytes.Clone(st.Subscriptions)),
	}
	if x := st.Expire; x != nil {
		out.Expire = &layout2Expiry{Since: layout2Bytes(x.Since), ExpireIn: layout2Bytes(x.ExpireIn), Will: bytes.Clone(x.Will)}
	}
	for _, err := range st.Errors {
		out.Errors = append(out.Errors, fmt.Sprint(err))
	}
	return out
}

func layout2PacketOf(pk *vlpersistence.PersistedPacket) layout2Packet {
	return layout2Packet{ExpireAt: layout2Bytes(pk.ExpireAt), Data: bytes.Clone(pk.Data)}
}

// layout2Kinds counts the objects of a layout-2 bucket by kind, in the order of the
// table in docs/layout.md; a key of no kind counts as "other".
func layout2Kinds(keys []string) map[string]int {
	n := map[string]int{}
	for _, k := range keys {
		parts := strings.Split(k, "/")
		switch {
		case k == "system" || k == "owner" || k == "retained":
			n[k]++
		case parts[0] == "i" && len(parts) == 2:
			n["i/"]++
		case parts[0] == "j" && len(parts) == 3:
			n["j/"]++
		case parts[0] == "c" && len(parts) == 4 && parts[3] == "session":
			n["c/.../session"]++
		case parts[0] == "c" && len(parts) == 5 && parts[3] == "b":
			n["c/.../b/"]++
		default:
			n["other"]++
		}
	}
	return n
}

// layout2KindNames are the kinds the fixture must hold at least one object of.
var layout2KindNames = []string{"system", "owner", "retained", "i/", "c/.../session", "c/.../b/", "j/"}

// loadLayout2Fixture returns a new memory store holding every object under dir/objects,
// each under its path relative to it (with "/" separators) as key. It fails the test if
// the fixture lacks an object of any kind of layout 2, so that a fixture emptied by
// accident cannot pass.
func loadLayout2Fixture(t testing.TB, dir string) *s3store.Memory {
	t.Helper()
	root := filepath.Join(dir, "objects")
	mem := s3store.NewMemory()
	ctx := context.Background()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		_, err = mem.Put(ctx, filepath.ToSlash(rel), data, s3store.PutOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("load the fixture %s: %v", root, err)
	}
	kinds := layout2Kinds(mem.Keys())
	for _, k := range layout2KindNames {
		if kinds[k] == 0 {
			t.Fatalf("the fixture %s holds no object of kind %s (it holds %v): files are missing", root, k, kinds)
		}
	}
	return mem
}

func readLayout2Expected(t testing.TB, dir string) layout2Fixture {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want layout2Fixture
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&want); err != nil {
		t.Fatalf("%s/expected.json: %v", dir, err)
	}
	return want
}

// layout2Loader collects what LoadForEach shows.
type layout2Loader map[string]*vlpersistence.SessionState

func (l layout2Loader) LoadSession(_ interface{}, id []byte, st *vlpersistence.SessionState) error {
	if _, dup := l[string(id)]; dup {
		return fmt.Errorf("LoadForEach showed %s twice", layout2Bytes(id))
	}
	l[string(id)] = st
	return nil
}

var layout2Queues = []struct {
	name    string
	count   func(vlpersistence.Sessions, []byte) (uint64, error)
	forEach func(vlpersistence.Sessions, []byte, interface{}, vlpersistence.PacketLoader) error
}{
	{"QoS0", vlpersistence.Sessions.PacketCountQoS0, vlpersistence.Sessions.PacketsForEachQoS0},
	{"QoS12", vlpersistence.Sessions.PacketCountQoS12, vlpersistence.Sessions.PacketsForEachQoS12},
	{"UnAck", vlpersistence.Sessions.PacketCountUnAck, vlpersistence.Sessions.PacketsForEachUnAck},
}

// readLayout2 reads the whole state of p through the public API, removing nothing. It
// reports through t what the fixture cannot express: a count that differs from the
// packets visited, an id in absent that still exists.
func readLayout2(t testing.TB, p *s3persist.Persistence, absent []layout2Bytes) layout2Fixture {
	t.Helper()
	s, err := p.Sessions()
	if err != nil {
		t.Fatal(err)
	}
	// Empty lists, not nil: expected.json then says [] rather than null.
	got := layout2Fixture{Sessions: []layout2Session{}, Absent: []layout2Bytes{}, Retained: []layout2Packet{}}
	sys, err := p.System()
	if err != nil {
		t.Fatal(err)
	}
	info, err := sys.GetInfo()
	if err != nil {
		t.Fatal(err)
	}
	if info.Version == "" {
		t.Error("System().GetInfo().Version is empty")
	}
	got.CreatedAt = info.CreatedAt
	got.Count = s.Count()

	loaded := layout2Loader{}
	if err := s.LoadForEach(loaded, nil); err != nil {
		t.Fatalf("LoadForEach: %v", err)
	}
	for id, st := range loaded {
		if st == nil {
			t.Errorf("LoadForEach gave %s a nil state", layout2Bytes(id))
			st = &vlpersistence.SessionState{}
		}
		if !s.Exists([]byte(id)) {
			t.Errorf("LoadForEach showed %s, but Exists says false", layout2Bytes(id))
		}
		ses := layout2Session{ID: layout2Bytes(id), State: layout2StateOf(st)}
		queues := [][]layout2Packet{{}, {}, {}}
		for i, q := range layout2Queues {
			err := q.forEach(s, []byte(id), nil, func(_ interface{}, pk *vlpersistence.PersistedPacket) (bool, error) {
				queues[i] = append(queues[i], layout2PacketOf(pk))
				return false, nil
			})
			if err != nil {
				t.Errorf("PacketsForEach%s(%s): %v", q.name, layout2Bytes(id), err)
			}
			n, err := q.count(s, []byte(id))
			if err != nil || n != uint64(len(queues[i])) {
				t.Errorf("PacketCount%s(%s) = %d, %v; visiting the queue found %d packets", q.name, layout2Bytes(id), n, err, len(queues[i]))
			}
		}
		ses.QoS0, ses.QoS12, ses.UnAck = queues[0], queues[1], queues[2]
		got.Sessions = append(got.Sessions, ses)
	}
	slices.SortFunc(got.Sessions, func(a, b layout2Session) int { return bytes.Compare(a.ID, b.ID) })

	for _, id := range absent {
		gone := !s.Exists(id)
		for _, q := range layout2Queues {
			if _, err := q.count(s, id); !errors.Is(err, vlpersistence.ErrNotFound) {
				gone = false
			}
			err := q.forEach(s, id, nil, func(interface{}, *vlpersistence.PersistedPacket) (bool, error) {
				gone = false
				return false, nil
			})
			if err != nil {
				t.Errorf("PacketsForEach%s(%s), a deleted id: %v", q.name, id, err)
			}
		}
		if gone {
			got.Absent = append(got.Absent, id)
		}
	}

	r, err := p.Retained()
	if err != nil {
		t.Fatal(err)
	}
	retained, err := r.Load()
	if err != nil {
		t.Fatalf("Retained().Load(): %v", err)
	}
	for _, pk := range retained {
		got.Retained = append(got.Retained, layout2PacketOf(pk))
	}
	return got
}

// diffLayout2 lists every difference between want and got, one line each, sessions
// matched by id, so that a lost packet reads as such rather than as a shifted list.
func diffLayout2(want, got layout2Fixture) []string {
	var d []string
	add := func(format string, args ...any) { d = append(d, fmt.Sprintf(format, args...)) }
	if want.CreatedAt != got.CreatedAt {
		add("System().GetInfo().CreatedAt = %q, want %q", got.CreatedAt, want.CreatedAt)
	}
	if want.Count != got.Count {
		add("Count() = %d, want %d", got.Count, want.Count)
	}
	gotByID := map[string]layout2Session{}
	for _, s := range got.Sessions {
		gotByID[string(s.ID)] = s
	}
	for _, w := range want.Sessions {
		g, ok := gotByID[string(w.ID)]
		delete(gotByID, string(w.ID))
		if !ok {
			add("session %s is missing (want state %s and %d+%d+%d packets)", w.ID, layout2Show(w.State), len(w.QoS0), len(w.QoS12), len(w.UnAck))
			continue
		}
		if ws, gs := layout2Show(w.State), layout2Show(g.State); ws != gs {
			add("session %s: state %s, want %s", w.ID, gs, ws)
		}
		d = append(d, diffLayout2Packets(fmt.Sprintf("session %s: QoS0", w.ID), w.QoS0, g.QoS0)...)
		d = append(d, diffLayout2Packets(fmt.Sprintf("session %s: QoS12", w.ID), w.QoS12, g.QoS12)...)
		d = append(d, diffLayout2Packets(fmt.Sprintf("session %s: UnAck", w.ID), w.UnAck, g.UnAck)...)
	}
	for _, g := range got.Sessions {
		if _, extra := gotByID[string(g.ID)]; extra {
			add("session %s is not expected (state %s, %d+%d+%d packets)", g.ID, layout2Show(g.State), len(g.QoS0), len(g.QoS12), len(g.UnAck))
		}
	}
	gotAbsent := map[string]bool{}
	for _, id := range got.Absent {
		gotAbsent[string(id)] = true
	}
	for _, id := range want.Absent {
		if !gotAbsent[string(id)] {
			add("deleted session %s exists again, or a queue of it holds packets", id)
		}
	}
	d = append(d, diffLayout2Packets("retained", want.Retained, got.Retained)...)
	return d
}

// diffLayout2Packets compares two queues in order. When their lengths differ it names
// the first packet that differs and what is missing or extra at the end.
func diffLayout2Packets(what string, want, got []layout2Packet) []string {
	var d []string
	for i := range min(len(want), len(got)) {
		if ws, gs := layout2Show(want[i]), layout2Show(got[i]); ws != gs {
			d = append(d, fmt.Sprintf("%s[%d] = %s, want %s", what, i, gs, ws))
			if len(want) != len(got) {
				break // the rest is shifted: the lines below say what
			}
		}
	}
	if len(want) != len(got) {
		d = append(d, fmt.Sprintf("%s has %d packets, want %d", what, len(got), len(want)))
		for i := len(got); i < len(want); i++ {
			d = append(d, fmt.Sprintf("%s: missing at the end: [%d] %s", what, i, layout2Show(want[i])))
		}
		for i := len(want); i < len(got); i++ {
			d = append(d, fmt.Sprintf("%s: extra at the end: [%d] %s", what, i, layout2Show(got[i])))
		}
	}
	return d
}

func layout2Show(v any) string {
	s, err := layout2JSON(v)
	if err != nil {
		return fmt.Sprintf("%#v", v)
	}
	return string(s)
}

// reportLayout2 fails t with every difference between want and got, at most 60 lines.
func reportLayout2(t testing.TB, when string, want, got layout2Fixture) {
	t.Helper()
	d := diffLayout2(want, got)
	if len(d) == 0 {
		return
	}
	if len(d) > 60 {
		d = append(d[:60], fmt.Sprintf("... and %d more", len(d)-60))
	}
	t.Errorf("%s: the state differs from %s/expected.json in %d ways:\n\t%s", when, layout2Dir, len(d), strings.Join(d, "\n\t"))
}

// TestABucketWrittenByLayout2OpensWithNothingLost opens the layout-2 fixture and
// requires every session, state, queued packet (in order) and retained message that
// layout-2 code read from it; then checkpoints (which writes the state in this release's
// layout), shuts down, opens the bucket again and requires the same state.
func TestABucketWrittenByLayout2OpensWithNothingLost(t *testing.T) {
	want := readLayout2Expected(t, layout2Dir)
	if len(want.Sessions) == 0 || uint64(len(want.Sessions)) != want.Count {
		t.Fatalf("%s/expected.json holds %d sessions and a count of %d", layout2Dir, len(want.Sessions), want.Count)
	}
	mem := loadLayout2Fixture(t, layout2Dir)
	ctx := context.Background()

	p, err := s3persist.New(ctx, s3persist.Config{Store: mem})
	if err != nil {
		t.Fatalf("New on the layout-2 bucket: %v", err)
	}
	reportLayout2(t, "opened", want, readLayout2(t, p, want.Absent))
	if err := p.Checkpoint(ctx); err != nil {
		t.Fatalf("Checkpoint on the layout-2 bucket: %v", err)
	}
	reportLayout2(t, "after a checkpoint", want, readLayout2(t, p, want.Absent))
	if err := p.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	p, err = s3persist.New(ctx, s3persist.Config{Store: mem})
	if err != nil {
		t.Fatalf("New after the first instance shut down: %v", err)
	}
	reportLayout2(t, "opened again after a shutdown", want, readLayout2(t, p, want.Absent))
	if err := p.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

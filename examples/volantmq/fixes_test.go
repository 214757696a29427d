package main

import (
	"testing"

	"github.com/VolantMQ/vlapi/mqttp"
	"github.com/VolantMQ/vlapi/vlpersistence"
)

// memRetained is a Retained that keeps copies of what it was given.
type memRetained struct {
	list []*vlpersistence.PersistedPacket
}

func (m *memRetained) Store(l []*vlpersistence.PersistedPacket) error {
	m.list = nil
	for _, p := range l {
		if p == nil {
			continue
		}
		m.list = append(m.list, &vlpersistence.PersistedPacket{Data: append([]byte(nil), p.Data...)})
	}
	return nil
}
func (m *memRetained) Load() ([]*vlpersistence.PersistedPacket, error) { return m.list, nil }
func (m *memRetained) Wipe() error                                     { m.list = nil; return nil }

// brokerStore and brokerLoad are what VolantMQ v0.3.2 does with retained messages at
// shutdown (topics/memLockFree/topics.go:211) and at start (:82).
func brokerStore(t *testing.T, r vlpersistence.Retained, pkts ...*mqttp.Publish) {
	t.Helper()
	var list []*vlpersistence.PersistedPacket
	for _, p := range pkts {
		buf, err := mqttp.Encode(p)
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, &vlpersistence.PersistedPacket{Data: buf})
	}
	if err := r.Store(append(list, nil)); err != nil {
		t.Fatal(err)
	}
}

func brokerLoad(t *testing.T, r vlpersistence.Retained) []*mqttp.Publish {
	t.Helper()
	list, err := r.Load()
	if err != nil {
		t.Fatal(err)
	}
	var out []*mqttp.Publish
	for _, d := range list {
		pkt, _, err := mqttp.Decode(mqttp.ProtocolV50, d.Data)
		if err != nil {
			t.Fatalf("the broker cannot decode a retained message: %v", err)
		}
		out = append(out, pkt.(*mqttp.Publish))
	}
	return out
}

func retainedPublish(t *testing.T, topic, payload string) *mqttp.Publish {
	t.Helper()
	p := mqttp.NewPublish(mqttp.ProtocolV311)
	if err := p.Set(topic, []byte(payload), mqttp.QoS1, true, false); err != nil {
		t.Fatal(err)
	}
	p.SetPacketID(7)
	return p
}

func wantRetained(t *testing.T, got []*mqttp.Publish, want ...string) {
	t.Helper()
	if len(got) != len(want)/2 {
		t.Fatalf("%d retained messages, want %d", len(got), len(want)/2)
	}
	for i, p := range got {
		if p.Topic() != want[2*i] || string(p.Payload()) != want[2*i+1] || p.QoS() != mqttp.QoS1 {
			t.Fatalf("retained %d: %s %q QoS %d, want %s %q QoS 1", i, p.Topic(), p.Payload(), p.QoS(), want[2*i], want[2*i+1])
		}
	}
}

// Retained messages of 3.1.1 clients survive one restart and the next (the second
// shutdown stores the 5.0 packets loaded at start next to a new 3.1.1 one).
func TestRetainedV5SurvivesRestartsThroughTheBrokersCodec(t *testing.T) {
	mem := &memRetained{}
	fixed := func() vlpersistence.Retained {
		r, err := brokerFixes{IFace: fakeIFace{mem}}.Retained()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r1 := fixed()
	brokerStore(t, r1, retainedPublish(t, "a/b", "kept"), retainedPublish(t, "a/c", "\x00zero first"))

	r2 := fixed()
	loaded := brokerLoad(t, r2)
	wantRetained(t, loaded, "a/b", "kept", "a/c", "\x00zero first")
	brokerStore(t, r2, append(loaded, retainedPublish(t, "a/d", "new"))...)

	wantRetained(t, brokerLoad(t, fixed()), "a/b", "kept", "a/c", "\x00zero first", "a/d", "new")

	// Without the fix the broker cannot read what it stored.
	raw := &memRetained{}
	brokerStore(t, raw, retainedPublish(t, "a/b", "kept"))
	if _, _, err := mqttp.Decode(mqttp.ProtocolV50, raw.list[0].Data); err == nil {
		t.Fatalf("the broker decodes its own 3.1.1 bytes: the fix is no longer needed")
	}
}

// fakeIFace serves only Retained.
type fakeIFace struct{ r vlpersistence.Retained }

func (f fakeIFace) Sessions() (vlpersistence.Sessions, error) { return nil, vlpersistence.ErrNotOpen }
func (f fakeIFace) Retained() (vlpersistence.Retained, error) { return f.r, nil }
func (f fakeIFace) System() (vlpersistence.System, error)     { return nil, vlpersistence.ErrNotOpen }
func (f fakeIFace) Shutdown() error                           { return nil }

package main

import (
	"fmt"
	"sync"

	"github.com/VolantMQ/vlapi/mqttp"
	"github.com/VolantMQ/vlapi/vlpersistence"
)

// brokerFixes wraps the persistence handed to VolantMQ v0.3.2 to correct two of its
// behaviours that no persistence backend can correct on its own. s3persist itself
// stores and returns the broker's bytes unchanged.
//
//   - Retained messages never survive a restart of v0.3.2, on any backend: at shutdown
//     it stores each one as mqttp.Encode(packet), in the version of the client that
//     published it (topics/memLockFree/topics.go:211), and at start it decodes every
//     one as MQTT 5.0 (topics/memLockFree/topics.go:82), so a 3.1.1 packet fails with
//     "Malformed Packet" and is dropped. retainedV5 stores them as 5.0 packets.
//   - Its offlineQoS0 option only applies to QoS 0 messages still queued in a closing
//     connection (connection/writer.go:549-553); a QoS 0 message routed to a session that
//     is already offline is stored whatever the option says (clients/sessions.go:1078).
//     With -offline-qos0=false, noOfflineQoS0 drops those stores, so the flag means what
//     it says.
type brokerFixes struct {
	vlpersistence.IFace
	dropOfflineQoS0 bool
}

func (f brokerFixes) Retained() (vlpersistence.Retained, error) {
	r, err := f.IFace.Retained()
	if err != nil {
		return nil, err
	}
	return &retainedV5{Retained: r, loaded: map[string]bool{}}, nil
}

func (f brokerFixes) Sessions() (vlpersistence.Sessions, error) {
	s, err := f.IFace.Sessions()
	if err != nil || !f.dropOfflineQoS0 {
		return s, err
	}
	return noOfflineQoS0{s}, nil
}

// retainedV5 converts the retained packets that the broker stores to MQTT 5.0, the
// version its loader decodes them with. A packet that the broker stores is either one it
// loaded at start (already 5.0: Load remembers their bytes) or one a client published;
// this broker accepts MQTT 3.1.1 clients only (run checks it), so the others are 3.1.1.
// The bytes alone cannot tell: a 5.0 PUBLISH also decodes as a 3.1.1 one.
type retainedV5 struct {
	vlpersistence.Retained
	mu     sync.Mutex
	loaded map[string]bool // the encodings Load returned; guarded by mu
}

func (r *retainedV5) Load() ([]*vlpersistence.PersistedPacket, error) {
	list, err := r.Retained.Load()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range list {
		if p != nil {
			r.loaded[string(p.Data)] = true
		}
	}
	return list, err
}

func (r *retainedV5) Store(list []*vlpersistence.PersistedPacket) error {
	out := make([]*vlpersistence.PersistedPacket, 0, len(list))
	r.mu.Lock()
	for _, p := range list {
		if p == nil {
			continue
		}
		q := *p
		if !r.loaded[string(p.Data)] {
			if v5, err := publishV311ToV5(p.Data); err == nil {
				q.Data = v5
			} // else keep the bytes: the broker reports them at its next start
		}
		out = append(out, &q)
	}
	r.mu.Unlock()
	return r.Retained.Store(out)
}

// publishV311ToV5 re-encodes an MQTT 3.1.1 PUBLISH as 5.0 (3.1.1 has no properties, so
// nothing is lost).
func publishV311ToV5(data []byte) ([]byte, error) {
	pkt, _, err := mqttp.Decode(mqttp.ProtocolV311, data)
	if err != nil {
		return nil, err
	}
	p, ok := pkt.(*mqttp.Publish)
	if !ok {
		return nil, fmt.Errorf("a retained %s packet", pkt.Type().Name())
	}
	v5 := mqttp.NewPublish(mqttp.ProtocolV50)
	if err := v5.Set(p.Topic(), p.Payload(), p.QoS(), p.Retain(), false); err != nil {
		return nil, err
	}
	if id, err := p.ID(); err == nil {
		v5.SetPacketID(id)
	}
	return mqttp.Encode(v5)
}

// noOfflineQoS0 drops QoS 0 messages routed to an offline session.
type noOfflineQoS0 struct{ vlpersistence.Sessions }

func (noOfflineQoS0) PacketStoreQoS0([]byte, *vlpersistence.PersistedPacket) error { return nil }

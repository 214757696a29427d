package s3persist

import (
	"context"
	"fmt"

	"github.com/s3persist/s3persist/batching"
)

// One place where a session's state changes.
//
// Every change to a session in memory is a journal record, and apply is the only
// function that applies one: a live call validates its arguments, builds the record and
// hands it to commit, which journals it and then applies it under the session's lock;
// New replays the durable records, in number order, through the same apply. So what a
// process had in memory and what its successor rebuilds from the bucket can only differ
// by records that never became durable.
//
// The rules apply enforces are those the layout documents (docs/layout.md, "Records
// and recovery"):
//
//   - a record at or below the session's watermark is already in its state (replay over
//     the index);
//   - a state record whose number equals its incarnation creates that incarnation; every
//     other record only modifies an existing incarnation and is ignored when that
//     incarnation does not exist, so a record that a checkpoint has forgotten about
//     (its session deleted since) never brings the session back;
//   - a session whose durable state could not be read takes only its Delete.

// recordJournal is what commit needs of the journal: it appends one encoded record of a
// session and returns its ticket (see journal.add for the contract). Tests wrap it to
// act between a record's append and its application.
type recordJournal interface {
	add(ctx context.Context, hh int, prev batching.Ticket, prevStream int, rec []byte, urgent bool) (batching.Ticket, int, error)
}

// commit journals rec, a change of e, and applies it. e is locked and attached. The
// change is in memory once commit returns nil; in Sync mode the caller then waits on
// the ticket (await), with no lock held.
//
// The record's session is marked dirty before the record can become durable: a
// checkpoint that finds the record's segment durable and deletes it must write the
// session to the index as it is after the record (see checkpoint.go). e's lock, held
// from before the mark until the record is applied, makes that checkpoint's snapshot of
// e include it.
func (p *Persistence) commit(ctx context.Context, e *entry, rec *journalRecord) (batching.Ticket, error) {
	if err := p.lease.fencedErr(); err != nil {
		return batching.Ticket{}, err
	}
	data := encodeJournalRecord(rec) // from here on, rec's packets alias data
	p.markDirty(e)
	t, stream, err := p.records.add(ctx, int(e.hh), e.tail, int(e.tailStream), data, p.syncing())
	if err != nil {
		return t, fmt.Errorf("s3persist: journal a change of %q: %w", e.id, err)
	}
	e.tail, e.tailStream = t, uint8(stream) // JournalStreams is at most numShards (256)
	p.apply(e, rec)
	if p.journal.checkpointDue.Load() {
		p.kickCheckpoint() // the journal a restart would replay has reached its bound
	}
	return t, nil
}

// syncing reports whether calls wait for their records to be durable: Sync mode until
// BeginShutdown.
func (p *Persistence) syncing() bool {
	return p.cfg.Durability == Sync && !p.shuttingDown.Load()
}

// apply applies journal record rec to e (see above). e is locked, or New is loading on
// one goroutine. It may take rec's packets (the pinned copies of a live call).
func (p *Persistence) apply(e *entry, rec *journalRecord) {
	switch {
	case e.exists && rec.Seq <= e.lastRec:
		return
	}
	switch rec.Kind {
	case recState:
		if rec.Seq == rec.Inc {
			switch {
			case e.exists && rec.Inc < e.inc:
				return // an incarnation deleted before the current one was created
			case e.exists && rec.Inc > e.inc:
				// Only in replay: the Delete of the earlier incarnation was not durable,
				// and the creation of this one was.
				p.dropSession(e)
			}
			if !e.exists {
				e.exists, e.inc, e.q, e.indexFull = true, rec.Inc, nil, true
				p.live.Add(1)
			}
		} else if !e.holds(rec.Inc) {
			return
		}
		var st stateRecord
		if rec.State != nil {
			st = *rec.State
		}
		e.state, e.stateDirty = st.state(), true
	case recDelete:
		if !e.holds(rec.Inc) {
			return
		}
		p.dropSession(e)
	case recPackets:
		if !e.holds(rec.Inc) {
			return
		}
		p.queuePinned(e, rec.Packets, rec.refs)
	case recRemove:
		if !e.holds(rec.Inc) {
			return
		}
		p.applyRemoval(e, rec.Removed)
	default:
		return // decodeSegment refuses other kinds
	}
	e.lastRec = rec.Seq
}

// holds reports whether e is incarnation inc of its session. e is locked.
func (e *entry) holds(inc uint64) bool { return e.exists && e.inc == inc }

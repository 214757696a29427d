package s3persist

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"
	"golang.org/x/sync/errgroup"

	"github.com/s3persist/s3persist/s3store"
)

// maxEpochAttempts bounds the read-modify-write of the system record's epoch when other
// processes bump it at the same moment.
const maxEpochAttempts = 8

// load reads the system record, the retained set and every session, then takes a new
// boot epoch above every sequence number found, and deletes garbage batches.
func (p *Persistence) load(ctx context.Context) error {
	start := time.Now()
	sys, sysETag, err := p.loadSystem(ctx)
	if err != nil {
		return err
	}
	p.sys = vlpersistence.SystemState{Version: sys.Layout, CreatedAt: sys.CreatedAt}
	p.loadRetained(ctx)

	scan, err := p.scanClients(ctx)
	if err != nil {
		return err
	}
	if err := p.readSessions(ctx, scan); err != nil {
		return err
	}
	garbage, highest := p.index(scan)

	epoch, err := p.bumpEpoch(ctx, sys, sysETag, highest)
	if err != nil {
		return err
	}
	p.seq = newSequencer(epoch)

	if len(garbage) > 0 {
		if err := p.store.DeleteMany(ctx, garbage); err != nil {
			p.log.Warn("s3persist: garbage batches left for the next start", "count", len(garbage), "err", err)
		}
	}
	p.log.Info("s3persist: loaded", "sessions", p.live.Load(), "retained", len(p.retained.packets),
		"garbage_deleted", len(garbage), "foreign_objects", scan.foreign, "epoch", epoch, "took", time.Since(start))
	return nil
}

// loadSystem reads the system record, creating it on first use.
func (p *Persistence) loadSystem(ctx context.Context) (systemRecord, string, error) {
	for range maxEpochAttempts {
		data, info, err := p.store.Get(ctx, keySystem)
		if errors.Is(err, s3store.ErrNotFound) {
			rec := systemRecord{Format: formatVersion, Layout: LayoutVersion, CreatedAt: time.Now().UTC().Format(time.RFC3339)}
			enc, err := encode(rec)
			if err != nil {
				return rec, "", err
			}
			info, err := p.store.Put(ctx, keySystem, enc, s3store.PutOptions{IfNoneMatch: true})
			if errors.Is(err, s3store.ErrPreconditionFailed) {
				continue // another process initialised it first: read theirs
			}
			if err != nil {
				return rec, "", fmt.Errorf("s3persist: initialise the bucket: %w", err)
			}
			p.log.Info("s3persist: initialised an empty bucket prefix", "layout", LayoutVersion)
			return rec, info.ETag, nil
		}
		if err != nil {
			return systemRecord{}, "", fmt.Errorf("s3persist: read the system record: %w", err)
		}
		rec, err := decodeSystem(keySystem, data)
		if err != nil {
			return rec, "", fmt.Errorf("s3persist: the bucket prefix holds an unreadable system record (is it used by something else?): %w", err)
		}
		if rec.Layout != LayoutVersion {
			return rec, "", fmt.Errorf("s3persist: the bucket prefix holds layout %q; this release reads %q only", rec.Layout, LayoutVersion)
		}
		return rec, info.ETag, nil
	}
	return systemRecord{}, "", errors.New("s3persist: the system record keeps changing under concurrent starts; retry")
}

// bumpEpoch stores an epoch above the stored one and above every number in use, with an
// if-match put so that two processes starting at once never share an epoch.
func (p *Persistence) bumpEpoch(ctx context.Context, rec systemRecord, etag string, highest uint64) (uint64, error) {
	for range maxEpochAttempts {
		next := max(rec.Epoch+1, highest>>counterBits+1)
		if next > maxEpoch {
			return 0, fmt.Errorf("s3persist: boot epoch %d exceeds %d", next, maxEpoch)
		}
		rec.Epoch = next
		data, err := encode(rec)
		if err != nil {
			return 0, err
		}
		_, err = p.store.Put(ctx, keySystem, data, s3store.PutOptions{IfMatch: etag})
		if err == nil {
			return next, nil
		}
		if !errors.Is(err, s3store.ErrPreconditionFailed) {
			return 0, fmt.Errorf("s3persist: store the boot epoch: %w", err)
		}
		if rec, etag, err = p.loadSystem(ctx); err != nil {
			return 0, err
		}
	}
	return 0, errors.New("s3persist: the system record keeps changing under concurrent starts; retry")
}

func (p *Persistence) loadRetained(ctx context.Context) {
	st := &p.retained
	data, _, err := p.store.Get(ctx, keyRetained)
	switch {
	case errors.Is(err, s3store.ErrNotFound):
	case err != nil:
		st.loadErr = fmt.Errorf("s3persist: read the retained set: %w", err)
	default:
		rec, derr := decodeRetained(keyRetained, data)
		if derr != nil {
			st.loadErr = fmt.Errorf("s3persist: the retained set cannot be loaded; delete or repair it: %w", derr)
			break
		}
		st.packets = rec.Packets
	}
	if st.loadErr != nil {
		p.log.Error("s3persist: retained set not loaded", "err", st.loadErr)
	}
}

// clientScan is what one listing of clientsRoot found.
type clientScan struct {
	clients map[string]*scannedClient // by client prefix
	foreign int
}

type scannedClient struct {
	parsed     parsedKey // of any key of the client: prefix and readable id
	hasSession bool
	record     sessionRecord
	broken     error
	batches    []batchMeta // ascending seq (listing order)
}

func (p *Persistence) scanClients(ctx context.Context) (*clientScan, error) {
	scan := &clientScan{clients: make(map[string]*scannedClient)}
	err := s3store.ListAll(ctx, p.store, clientsRoot, func(o s3store.ObjectInfo) error {
		pk, err := parseClientKey(o.Key)
		if err != nil {
			scan.foreign++
			p.log.Warn("s3persist: left alone an object this layout does not write", "err", err)
			return nil
		}
		c := scan.clients[pk.prefix]
		if c == nil {
			c = &scannedClient{parsed: pk}
			scan.clients[pk.prefix] = c
		}
		switch pk.kind {
		case keySession:
			c.hasSession = true
		case keyBatch:
			c.batches = append(c.batches, batchMeta{seq: pk.seq, counts: pk.counts})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("s3persist: list sessions: %w", err)
	}
	return scan, nil
}

// readSessions gets every session record, LoadConcurrency at a time.
func (p *Persistence) readSessions(ctx context.Context, scan *clientScan) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.cfg.LoadConcurrency)
	for prefix, c := range scan.clients {
		if !c.hasSession {
			continue
		}
		g.Go(func() error {
			key := prefix + sessionKeySuffix
			data, _, err := p.store.Get(gctx, key)
			if errors.Is(err, s3store.ErrNotFound) {
				c.hasSession = false // deleted since the listing
				return nil
			}
			if err != nil {
				return fmt.Errorf("s3persist: read session record %q: %w", key, err)
			}
			rec, err := decodeSession(key, data)
			if err == nil && clientPrefix(rec.ID) != prefix {
				err = brokenEntry(key, "holds client id %q, which belongs under another key", rec.ID)
			}
			c.record, c.broken = rec, err
			return nil
		})
	}
	return g.Wait()
}

// index builds the table from a scan. It returns the batch keys that are garbage (of no
// session, or with every packet removed) and the highest sequence number in use.
func (p *Persistence) index(scan *clientScan) (garbage []string, highest uint64) {
	// index runs before New returns: nothing else sees the entries yet.
	for prefix, c := range scan.clients {
		for _, b := range c.batches {
			first, n := b.queueRange(numQueues - 1)
			highest = max(highest, first+n-1)
		}
		if !c.hasSession {
			for _, b := range c.batches {
				garbage = append(garbage, b.key(prefix))
			}
			continue
		}
		e := &entry{prefix: prefix, exists: true}
		if c.broken != nil {
			e.broken = c.broken
			e.batches = c.batches // unknown marks: keep everything, delete nothing
			e.id = c.parsed.readableID
			if e.id == nil {
				e.id = []byte(prefix) // hashed key: the id is in the unreadable record
			}
			p.log.Error("s3persist: session record cannot be read; the session is reported and left alone", "err", c.broken)
		} else {
			r := c.record
			highest = max(highest, r.Incarnation)
			e.id, e.incarnation, e.timestamp, e.version = r.ID, r.Incarnation, string(r.Timestamp), r.Version
			e.subs, e.removed = r.Subscriptions, r.Removed
			if x := r.Expiry; x != nil {
				e.expiry = &vlpersistence.SessionDelays{Since: string(x.Since), ExpireIn: string(x.ExpireIn), Will: x.Will}
			}
			for q := range numQueues {
				highest = max(highest, e.removed[q].Below)
				if n := len(e.removed[q].Also); n > 0 {
					highest = max(highest, e.removed[q].Also[n-1])
				}
			}
			for _, b := range c.batches {
				if e.consumed(b) {
					garbage = append(garbage, b.key(prefix))
				} else {
					e.batches = append(e.batches, b)
				}
			}
		}
		if old := p.table[string(e.id)]; old != nil {
			// Two keys claim one id: only a foreign or tampered object can do that.
			p.log.Error("s3persist: two session records claim one client id; the second is left alone",
				"first", old.prefix, "second", prefix)
			continue
		}
		p.table[string(e.id)] = e
		p.live.Add(1)
	}
	slices.Sort(garbage)
	return garbage, highest
}

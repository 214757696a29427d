package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/s3store"
)

// churnExpectation is what the live data needs in the bucket, from docs/layout.md,
// for ids made of [a-z0-9] only (their client segment is the id itself). The one place
// to add a new kind of object (the ownership object of fencing, say).
type churnExpectation struct {
	required map[string]bool            // system, owner (fencing), retained
	live     map[string]map[string]bool // client prefix -> markers of its live payloads
}

func churnExpected(queues map[string][]string, retained bool) churnExpectation {
	e := churnExpectation{required: map[string]bool{"system": true, "owner": true}, live: map[string]map[string]bool{}}
	if retained {
		e.required["retained"] = true
	}
	for id, q := range queues {
		sum := sha256.Sum256([]byte(id))
		prefix := fmt.Sprintf("c/%02x/%s/", sum[0], id)
		e.live[prefix] = map[string]bool{}
		for _, d := range q {
			e.live[prefix][marker(d)] = true
		}
	}
	return e
}

// marker is the unique head of a churn payload ("p0000042-").
func marker(d string) string { return d[:strings.IndexByte(d, '-')+1] }

type churnReport struct {
	objects, bytes, shards, batches, deadBatches int
	garbage, missing                             []string
}

// inspect lists the bucket and sorts every object into needed and garbage.
func (e churnExpectation) inspect(t *testing.T, store s3store.Store) churnReport {
	t.Helper()
	ctx := context.Background()
	var r churnReport
	seen := map[string]bool{}
	err := s3store.ListAll(ctx, store, "", func(o s3store.ObjectInfo) error {
		r.objects++
		r.bytes += int(o.Size)
		seen[o.Key] = true
		switch {
		case e.required[o.Key]:
		case strings.HasPrefix(o.Key, "i/") && len(o.Key) == 4, strings.HasPrefix(o.Key, "d/"):
			r.shards++ // an index object: base shards (at most 256) and a few deltas
		case strings.HasPrefix(o.Key, "p/"):
			data, _, err := store.Get(ctx, o.Key)
			if err != nil {
				return err
			}
			needed := false
			for _, live := range e.live {
				for m := range live {
					needed = needed || bytes.Contains(data, []byte(m))
				}
			}
			if needed {
				r.batches++
			} else {
				r.garbage = append(r.garbage, o.Key+" (a pack with no live packet)")
			}
		case strings.Contains(o.Key, "/b/") && e.live[o.Key[:strings.Index(o.Key, "/b/")+1]] != nil:
			data, _, err := store.Get(ctx, o.Key)
			if err != nil {
				return err
			}
			needed := false
			for m := range e.live[o.Key[:strings.Index(o.Key, "/b/")+1]] {
				if bytes.Contains(data, []byte(m)) {
					needed = true
					break
				}
			}
			if needed {
				r.batches++
			} else {
				r.garbage = append(r.garbage, o.Key+" (no live packet)")
			}
		default:
			r.garbage = append(r.garbage, o.Key)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("list the bucket: %v", err)
	}
	for k := range e.required {
		if !seen[k] {
			r.missing = append(r.missing, k)
		}
	}
	slices.Sort(r.garbage)
	return r
}

// The churn of the root package's TestChurnLeavesOnlyWhatTheLiveDataNeeds on MinIO,
// shorter: rounds of sessions created, filled, drained and deleted, with checkpoints,
// restarts and crashes (the old instance cut off from the network) in between; after a
// final checkpoint and the garbage collection of a restart, the bucket holds what the
// live data needs and nothing else. S3PERSIST_CHURN_ROUNDS sets the rounds.
func TestChurnOnMinioLeavesOnlyWhatTheLiveDataNeeds(t *testing.T) {
	rounds := 3
	if v := os.Getenv("S3PERSIST_CHURN_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("S3PERSIST_CHURN_ROUNDS=%q is not a positive number", v)
		}
		rounds = n
	}
	tgt := srv.NewTarget(t)
	plain, err := s3store.NewMinio(context.Background(), minioConfig(tgt.Bucket))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plain.Close() })
	var view s3store.Store = plain
	if tgt.Prefix != "" {
		if view, err = s3store.WithPrefix(plain, tgt.Prefix); err != nil {
			t.Fatal(err)
		}
	}
	var ft *s3store.FaultTransport
	open := func() *s3persist.Persistence {
		ft = s3store.NewFaultTransport(http.DefaultTransport.(*http.Transport).Clone(), 1)
		t.Cleanup(ft.CloseIdleConnections)
		cfg := minioConfig(tgt.Bucket)
		cfg.Transport = ft
		p, err := s3persist.New(context.Background(), s3persist.Config{S3: cfg, Prefix: tgt.Prefix,
			CheckpointInterval: time.Hour, CheckpointTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := open()
	rng := rand.New(rand.NewPCG(uint64(rounds), 11))
	queues := map[string][]string{}
	retained := false
	next := 0
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var restarts, crashes int
	for round := range rounds {
		s, _ := p.Sessions()
		for i := range 6 {
			id := fmt.Sprintf("r%ds%d", round, i)
			must(s.Create([]byte(id), &vlpersistence.SessionBase{Timestamp: "t", Version: 4}))
			queues[id] = nil
		}
		ids := make([]string, 0, len(queues))
		for id := range queues {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for range 60 {
			id := ids[rng.IntN(len(ids))]
			next++
			d := fmt.Sprintf("p%07d-%s", next, strings.Repeat("x", rng.IntN(300)))
			must(s.PacketStoreQoS12([]byte(id), &vlpersistence.PersistedPacket{Data: []byte(d)}))
			queues[id] = append(queues[id], d)
		}
		must(p.Flush(context.Background()))
		must(p.Checkpoint(context.Background()))
		for _, id := range ids {
			switch rng.IntN(4) {
			case 0:
				odd := false
				var kept []string
				must(s.PacketsForEachQoS12([]byte(id), nil, func(_ interface{}, pk *vlpersistence.PersistedPacket) (bool, error) {
					odd = !odd
					if odd {
						kept = append(kept, string(pk.Data))
					}
					return !odd, nil
				}))
				queues[id] = kept
			case 1:
				must(s.Delete([]byte(id)))
				delete(queues, id)
			}
		}
		if round%2 == 0 {
			r, _ := p.Retained()
			must(r.Store([]*vlpersistence.PersistedPacket{{Data: []byte("retained")}}))
			retained = true
		}
		must(p.Flush(context.Background()))
		if rng.IntN(2) == 0 {
			ft.SetDown(true) // the process is gone: nothing of it lands any more
			p.Shutdown()     // releases its goroutines; it can write nothing
			crashes++
		} else {
			must(p.Shutdown())
			restarts++
		}
		p = open()
	}
	must(p.Flush(context.Background()))
	must(p.Checkpoint(context.Background()))
	must(p.Shutdown())
	p = open() // its garbage collection runs in the background
	defer p.Shutdown()
	exp := churnExpected(queues, retained)
	var rep churnReport
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		rep = exp.inspect(t, view)
		if len(rep.garbage) == 0 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("after %d rounds (%d restarts, %d crashes), %d sessions live: %d objects of %d bytes: %d required, %d index objects, %d batches and packs with live packets; garbage %d %q; missing %q",
		rounds, restarts, crashes, len(queues), rep.objects, rep.bytes, len(exp.required), rep.shards, rep.batches, len(rep.garbage), rep.garbage, rep.missing)
	if len(rep.garbage) > 0 || len(rep.missing) > 0 {
		t.Fatal("the bucket does not hold exactly what the live data needs")
	}
	s, _ := p.Sessions()
	for id, want := range queues {
		var got []string
		must(s.PacketsForEachQoS12([]byte(id), nil, func(_ interface{}, pk *vlpersistence.PersistedPacket) (bool, error) {
			got = append(got, string(pk.Data))
			return false, nil
		}))
		if !slices.Equal(got, want) {
			t.Fatalf("queue of %s: %d packets, want %d", id, len(got), len(want))
		}
	}
}

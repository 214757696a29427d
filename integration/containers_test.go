package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	tcwait "github.com/testcontainers/testcontainers-go/wait"

	"github.com/s3persist/s3persist/integration/images"
	"github.com/s3persist/s3persist/integration/miniotest"
)

// Broker containers (issue 13, items 3 and 4): the example broker runs in a container of
// its image (package images: FROM scratch, no volume) beside a MinIO container, and the
// MQTT client (paho) on the host reaches it through a port published on 127.0.0.1. The
// tests kill, replace, overlap and partition broker containers and check what the
// persistent sessions get afterwards.
//
// # Networks
//
// Each test creates three user-defined bridge networks:
//
//	store  internal: MinIO (alias "minio") and every broker, which uses http://minio:9000.
//	       The only path between a broker and the store.
//	front  the brokers; their MQTT port is published on 127.0.0.1 through it.
//	admin  MinIO alone; its S3 port is published on 127.0.0.1 for the test's own client,
//	       which reads the bucket.
//
// Docker programs a container's published ports on its gateway network, and an internal
// network is never the gateway: so `docker network disconnect` of a broker from store
// cuts it off from MinIO while its MQTT port stays reachable. On a container with one
// network, disconnecting it removes the port mapping, and reconnecting publishes the
// port again on another host port (checked by hand on Docker 20.10).
//
// # Clean-up
//
// testcontainers-go's reaper cannot be pulled (package images disables it): every
// container and network is removed by a t.Cleanup of the test that made it, on failure
// too. They carry the label labelContainersTest and miniotest's owner labels: what a
// test process that was killed left behind is removed by miniotest's next start.

const (
	// ctrLease is the brokers' -lease-ttl: short, so that a takeover after a crash or a
	// partition costs a couple of seconds.
	ctrLease = 2 * time.Second
	// ctrFlush is the brokers' -flush-interval (Async: the window a crash may lose).
	ctrFlush = time.Second
	// ctrPartition is how long a broker stays cut off from the store.
	ctrPartition = 10 * time.Second
	// ctrSetupTimeout bounds building the images and starting MinIO.
	ctrSetupTimeout = 10 * time.Minute
	// ctrCallTimeout bounds one call to the engine (create, kill, stop, connect, remove).
	ctrCallTimeout = time.Minute
	// ctrExitTimeout bounds the wait for a broker container that must stop by itself: a
	// fenced broker learns it at its first renewal that reaches the store, one lease or
	// two after it is reconnected (see ctrSplitBrain); generous for a loaded machine.
	ctrExitTimeout = 30 * time.Second
	// minioCtrPort is MinIO's S3 port in its container.
	minioCtrPort = "9000/tcp"
	// labelContainersTest is on every container and network these tests create; its value
	// is the test's name.
	labelContainersTest = "org.s3persist.containers-test"
)

// TestBrokerContainerIsReplaced is item 3 of issue 13: a broker container that dies is
// replaced by a new container of the same image, with no volume, that finds the
// persistent sessions and their queued messages in the bucket.
func TestBrokerContainerIsReplaced(t *testing.T) {
	env := newCtrEnv(t)
	t.Run("Sync: a SIGKILLed container's replacement waits for the lease and delivers every queued message", func(t *testing.T) {
		ctrKill(t, env, "sync", false)
	})
	t.Run("Async: a SIGKILLed container's replacement loses at most the messages of the last flush window", func(t *testing.T) {
		ctrKill(t, env, "async", false)
	})
	t.Run("Sync: with -force-takeover the replacement of a SIGKILLed container starts at once and loses nothing", func(t *testing.T) {
		ctrKill(t, env, "sync", true)
	})
	t.Run("rolling update: the new container waits while the old one serves, starts when docker stop released the prefix, and loses nothing", func(t *testing.T) {
		ctrRollingUpdate(t, env)
	})
}

// TestBrokerContainerPartitionedFromTheStore is item 4 of issue 13: a broker container
// cut off from MinIO (docker network disconnect) while its clients still reach it.
func TestBrokerContainerPartitionedFromTheStore(t *testing.T) {
	env := newCtrEnv(t)
	for _, durability := range []string{"async", "sync"} {
		t.Run(durability+": a broker cut off from the store for 10 s mid-traffic loses nothing acknowledged", func(t *testing.T) {
			ctrPartitionHeals(t, env, durability)
		})
	}
	t.Run("split brain: a broker cut off while a replacement takes over stops when it reconnects, and nothing it accepted after the cut reaches the bucket", func(t *testing.T) {
		ctrSplitBrain(t, env)
	})
}

// ctrKill queues n QoS 1 messages for an offline persistent session, one at a time over
// about three flush intervals, kills the broker container with SIGKILL once the witness
// has them all (and a fence after them), removes it and starts a new container on the
// same prefix: it waits for the killed broker's lease, or with force starts at once.
// Sync must lose none of the messages whose store call returned (all but the last
// inFlight, see testKill); Async only the newest, accepted within the flush window.
func ctrKill(t *testing.T, env *ctrEnv, durability string, force bool) {
	const n = 200
	const inFlight = 2                  // as in testKill
	const uploadSlack = 3 * time.Second // as in testKill
	prefix := env.newPrefix()
	args := func(extra ...string) []string {
		return append(env.brokerArgs(prefix, "-durability", durability), extra...)
	}

	b1 := env.startBroker(t, "old", args()...)
	pub, start := queueForVictim(t, b1.addr, n, ctrFlush)
	env.kill(t, b1)
	killedAt := time.Now()
	pub.close()
	t.Logf("%s: %d messages published one at a time in %v, then docker kill (SIGKILL) and docker rm",
		durability, n, killedAt.Sub(start).Round(time.Millisecond))
	env.remove(t, b1)

	var extra []string
	if force {
		extra = append(extra, "-force-takeover")
	}
	b2 := env.startBroker(t, "new", args(extra...)...)
	takeover := b2.readyAt.Sub(killedAt)
	startup := b2.readyAt.Sub(b2.createdAt)
	switch {
	case force:
		t.Logf("%s, -force-takeover: the new container was ready %v after the kill (%v from its creation)",
			durability, takeover.Round(time.Millisecond), startup.Round(time.Millisecond))
	case takeover < ctrLease:
		t.Errorf("the new container took the prefix %v after the kill, before the killed broker's lease of %v could expire", takeover, ctrLease)
	default:
		t.Logf("%s: the new container was ready %v after the kill (%v from its creation; lease %v, which a successor waits plus a tenth after the last renewal)",
			durability, takeover.Round(time.Millisecond), startup.Round(time.Millisecond), ctrLease)
	}

	got := newCollector()
	sub, present := connectPresent(t, b2.addr, "victim", false, got.handler)
	if !present {
		t.Errorf("victim: CONNACK session present = false on the new container, want true")
	}
	drainWithMarker(t, b2.addr, sub, got, queueTopic)
	sub.Disconnect(250)
	env.stop(t, b2)

	recv := got.payloads(queueTopic)
	if len(recv) > 0 && recv[len(recv)-1] == fencePayload {
		recv = recv[:len(recv)-1]
	}
	wantLossWithinFlushWindow(t, durability, "by the new container", recv, n, inFlight, ctrFlush+uploadSlack, killedAt, pub)
}

// ctrRollingUpdate: the new container starts while the old one serves; it must wait (not
// serve) while the old one keeps accepting messages, and start once docker stop
// (SIGTERM) made the old one flush and release the prefix. Every message is delivered.
func ctrRollingUpdate(t *testing.T, env *ctrEnv) {
	const half = 50
	prefix := env.newPrefix()
	b1 := env.startBroker(t, "old", env.brokerArgs(prefix)...)
	goOffline(t, b1.addr, "victim", queueTopic)
	pub := newOrderedPublisher(t, b1.addr, queueTopic)
	pub.publish(t, queueTopic, 1, half)

	b2 := env.launchBroker(t, "new", env.brokerArgs(prefix)...)
	// The old broker keeps serving during the overlap: the second half goes through it.
	for i := half; i < 2*half; i++ {
		wait(t, fmt.Sprintf("publish #%d", i), pub.c.Publish(queueTopic, 1, false, payload(i)))
		pub.witness.waitFor(t, queueTopic, payload(i))
	}
	pub.close()
	// The old one renews every lease/3: two leases without the new one ready show it waits.
	if ready, exited := b2.readyWithin(t, 2*ctrLease); ready {
		t.Fatal("the new container started while the old one owned the prefix")
	} else if exited {
		t.Fatal("the new container exited while it waited")
	}
	sigterm := env.stop(t, b1)
	stopped := time.Since(sigterm)
	b2.waitReady(t)
	t.Logf("rolling update: the new container was ready %v after docker stop sent SIGTERM to the old one (which took %v to exit; lease %v)",
		b2.readyAt.Sub(sigterm).Round(time.Millisecond), stopped.Round(time.Millisecond), ctrLease)

	got := newCollector()
	sub := connect(t, b2.addr, "victim", false, got.handler)
	drainWithMarker(t, b2.addr, sub, got, queueTopic)
	sub.Disconnect(250)
	env.stop(t, b2)
	wantSequence(t, "victim "+queueTopic, got.payloads(queueTopic), 2*half)
}

// ctrPartitionHeals publishes QoS 1 messages one at a time for an offline session for
// about 16 s, while the broker is cut off from the store (docker network disconnect) from
// 2 s in for ctrPartition; its MQTT port stays reachable. Then the container is stopped
// (it must report a complete flush) and replaced: every message the publisher had a
// PUBACK for is delivered by the new container, in order.
func ctrPartitionHeals(t *testing.T, env *ctrEnv, durability string) {
	const (
		maxMessages = 400
		interval    = 40 * time.Millisecond
		cutAfter    = 2 * time.Second
		traffic     = cutAfter + ctrPartition + 4*time.Second
	)
	prefix := env.newPrefix()
	args := env.brokerArgs(prefix, "-durability", durability)
	b1 := env.startBroker(t, "partitioned", args...)
	goOffline(t, b1.addr, "victim", queueTopic)
	pub := newOrderedPublisher(t, b1.addr, queueTopic)

	// The partition runs on its own clock: in Sync, a publish waits for the store.
	type partition struct {
		cutAt, healedAt time.Time
		memBefore       uint64 // container memory just before the cut
		memPeak         uint64 // the most of the samples taken every second of the cut
		err             error
	}
	done := make(chan partition, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		var p partition
		defer func() { done <- p }()
		select {
		case <-time.After(cutAfter):
		case <-ctx.Done():
			return
		}
		if p.memBefore, p.err = env.memory(b1); p.err != nil {
			return
		}
		if p.err = env.connectStore(b1, false); p.err != nil {
			return
		}
		p.cutAt = time.Now()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		end := time.After(ctrPartition)
	sampling:
		for {
			select {
			case <-tick.C:
				if m, err := env.memory(b1); err == nil {
					p.memPeak = max(p.memPeak, m)
				}
			case <-end:
				break sampling
			case <-ctx.Done():
				break sampling
			}
		}
		p.err = env.connectStore(b1, true)
		p.healedAt = time.Now()
	}()

	start := time.Now()
	sentAt := make([]time.Time, 0, maxMessages)
	doneAt := make([]time.Time, 0, maxMessages) // when the witness had it
	var slowest time.Duration
	slowAt := 0
	for n := 0; n < maxMessages && time.Since(start) < traffic; n++ {
		sentAt = append(sentAt, time.Now())
		wait(t, fmt.Sprintf("publish #%d", n), pub.c.Publish(queueTopic, 1, false, payload(n)))
		pub.witness.waitFor(t, queueTopic, payload(n))
		doneAt = append(doneAt, time.Now())
		if d := doneAt[n].Sub(sentAt[n]); d > slowest {
			slowest, slowAt = d, n
		}
		time.Sleep(interval) // spreading the load over time, not synchronisation
	}
	n := len(sentAt)
	pub.close()
	p := <-done
	if p.err != nil {
		t.Fatal(p.err)
	}
	duringCut := 0 // published before the end of the cut and delivered after its start
	for i := range sentAt {
		if sentAt[i].Before(p.healedAt) && doneAt[i].After(p.cutAt) {
			duringCut++
		}
	}
	if b1.exited(t) {
		t.Fatalf("the broker exited after the partition healed")
	}
	t.Logf("%s: %d QoS 1 messages acknowledged in %v, %d of them in flight during a partition of %v; slowest publish-to-delivery %v (message %d)",
		durability, n, time.Since(start).Round(time.Millisecond), duringCut, p.healedAt.Sub(p.cutAt).Round(time.Millisecond),
		slowest.Round(time.Millisecond), slowAt)
	t.Logf("%s: container memory %.1f MiB before the cut, at most %.1f MiB during it (sampled every second)",
		durability, float64(p.memBefore)/(1<<20), float64(p.memPeak)/(1<<20))
	if p.memPeak > p.memBefore+maxPendingDefault {
		t.Errorf("%s: the container's memory grew by %d bytes during the cut, more than MaxPendingBytes (%d)",
			durability, p.memPeak-p.memBefore, maxPendingDefault)
	}
	logs := b1.logs(t)
	t.Logf("%s: the broker logged %d failed lease renewals and %d failed journal uploads, and kept the prefix",
		durability, strings.Count(logs, "could not renew the ownership lease"), strings.Count(logs, "journal segment could not be uploaded"))
	if strings.Contains(logs, "Couldn't persist") {
		t.Errorf("%s: the broker could not store messages (VolantMQ drops those)", durability)
	}
	env.stop(t, b1)

	b2 := env.startBroker(t, "replacement", args...)
	got := newCollector()
	sub := connect(t, b2.addr, "victim", false, got.handler)
	drainWithMarker(t, b2.addr, sub, got, queueTopic)
	sub.Disconnect(250)
	env.stop(t, b2)
	wantSequence(t, "victim "+queueTopic, got.payloads(queueTopic), n)
	t.Logf("%s: the replacement delivered %d of the %d acknowledged messages", durability, len(got.payloads(queueTopic)), n)
}

// ctrSplitBrain: the old broker (Async) is cut off from the store; a replacement on the
// same prefix takes over once the old one's lease has run out, while the old one, still
// reachable by its clients, accepts messages it can no longer store. When the old one is
// reconnected it must learn that it is fenced and stop (its container exits with status
// 1). Nothing it accepted after the cut may reach the new owner, the bucket, or the state
// a later broker loads from the bucket; what it stored before the cut, and what the new
// owner accepted, is delivered.
//
// Reconnected, the old broker has a new address on the store network (the new broker got
// its old one), so the keep-alive connections its S3 client pooled before the cut are
// dead without a reset. Each renewal used to spend its timeout on one of them, and the
// broker learnt it was fenced only when the pool was used up (66 to 77 s with the ~30
// connections that loading opened); the store now drops its idle connections when a
// request times out, so the next renewal dials anew.
func ctrSplitBrain(t *testing.T, env *ctrEnv) {
	const nBefore, nLate, nAfter = 50, 50, 20
	prefix := env.newPrefix()
	args := env.brokerArgs(prefix) // Async
	b1 := env.startBroker(t, "old", args...)
	epoch := b1.epoch(t)
	goOffline(t, b1.addr, "victim", queueTopic)

	pub1 := newOrderedPublisher(t, b1.addr, queueTopic)
	publishPhase(t, pub1, "before", nBefore)
	// Async: wait until the journal segment with the last message is in the bucket, so
	// that the cut loses nothing of these (a hook, not a sleep).
	env.waitForBytes(t, prefix, []byte(phasePayload("before", nBefore-1)), 10*time.Second)

	env.disconnect(t, b1)
	cutAt := time.Now()
	b2 := env.launchBroker(t, "new", args...)
	// The old broker still has its clients: it accepts these, and cannot store them.
	publishPhase(t, pub1, "late", nLate)
	pub1.close()
	b2.waitReady(t)
	t.Logf("split brain: the new container took the prefix over %v after the old one was cut off (lease %v)",
		b2.readyAt.Sub(cutAt).Round(time.Millisecond), ctrLease)
	if b1.exited(t) {
		t.Fatalf("the old broker exited while cut off, before it could learn it is fenced")
	}

	// The new owner delivers what the old one stored before the cut. The victim subscribes
	// again (VolantMQ v0.3.2 does not restore subscriptions) and goes offline, and the new
	// owner queues more messages for it.
	onNew := newCollector()
	sub := connect(t, b2.addr, "victim", false, onNew.handler)
	drainWithMarker(t, b2.addr, sub, onNew, queueTopic)
	sub.Disconnect(250)
	time.Sleep(offlineSettle) // see goOffline
	pub2 := newOrderedPublisher(t, b2.addr, queueTopic)
	publishPhase(t, pub2, "after", nAfter)
	pub2.close()

	env.reconnect(t, b1)
	healedAt := time.Now()
	code := b1.waitExit(t, ctrExitTimeout)
	t.Logf("split brain: the old broker exited with status %d %v after it was reconnected (cut off for %v)",
		code, time.Since(healedAt).Round(time.Millisecond), healedAt.Sub(cutAt).Round(time.Millisecond))
	if logs := b1.logs(t); code != 1 || !strings.Contains(logs, "fenced") {
		t.Errorf("the old broker exited with status %d; want 1 and a log that says it was fenced", code)
	} else {
		t.Logf("split brain: the old broker failed %d lease renewals before it learnt it was fenced",
			strings.Count(logs, "could not renew the ownership lease"))
	}

	// The bucket: no object under the prefix holds a message the old broker accepted
	// after the cut, and no journal segment of its epoch was written after the cut.
	objects, late, lateSegments := env.scanPrefix(t, prefix, []byte("late-"), epoch, cutAt)
	if len(late) > 0 {
		t.Errorf("messages the fenced broker accepted after the cut reached the bucket, in %v", late)
	}
	if len(lateSegments) > 0 {
		t.Errorf("journal segments of the fenced broker's epoch %d were written after the cut: %v", epoch, lateSegments)
	}
	t.Logf("split brain: %d objects under the prefix, none with the %d messages the fenced broker acknowledged after the cut", objects, nLate)

	// The state a broker loads from the bucket: the new owner stops (flushing), a third
	// container loads, and the victim gets what the new owner queued, and nothing else.
	env.stop(t, b2)
	b3 := env.startBroker(t, "third", args...)
	onThird := newCollector()
	sub = connect(t, b3.addr, "victim", false, onThird.handler)
	drainWithMarker(t, b3.addr, sub, onThird, queueTopic)
	sub.Disconnect(250)
	env.stop(t, b3)

	newOwner := countPhases(t, "new owner", onNew.payloads(queueTopic))
	third := countPhases(t, "broker loaded from the bucket", onThird.payloads(queueTopic))
	t.Logf("split brain: the new owner delivered %d messages from before the cut and %d of the fenced broker's late ones; "+
		"a broker loaded from the bucket then delivered the new owner's %d and %d late ones",
		newOwner["before"], newOwner["late"], third["after"], third["late"])
	if newOwner["before"] != nBefore || newOwner["late"] != 0 || len(newOwner) != 1 {
		t.Errorf("the new owner delivered %v; want %d before the cut and nothing else", newOwner, nBefore)
	}
	if third["after"] != nAfter || len(third) != 1 {
		t.Errorf("the broker loaded from the bucket delivered %v; want the new owner's %d and nothing else", third, nAfter)
	}
}

// countPhases counts the payloads "<phase>-<i>" by phase; a payload twice is an error.
func countPhases(t *testing.T, what string, payloads []string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	seen := map[string]bool{}
	for _, p := range payloads {
		if seen[p] {
			t.Errorf("%s: %q delivered twice", what, p)
		}
		seen[p] = true
		counts[strings.SplitN(p, "-", 2)[0]]++
	}
	return counts
}

// ctrEnv is a MinIO container on the test's networks, the broker image, and a client of
// the Docker engine and of MinIO (through its published port).
type ctrEnv struct {
	cli               *testcontainers.DockerClient
	brokerImage       string
	store, front      *testcontainers.DockerNetwork
	s3                *minio.Client
	bucket            string
	accessKey, secret string
	labels            map[string]string
	nextPrefix        int
}

// newCtrEnv skips t when no Docker engine answers; otherwise the images must build and
// MinIO must start, or t fails.
func newCtrEnv(t *testing.T) *ctrEnv {
	t.Helper()
	if err := images.DockerAvailable(t.Context()); err != nil {
		t.Skipf("no Docker engine reachable: the broker container tests need one (%v)", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), ctrSetupTimeout)
	defer cancel()
	minioImage, err := images.Minio(ctx, ctrMinioBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	brokerImage, err := images.Broker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := images.NewClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	env := &ctrEnv{cli: cli, brokerImage: brokerImage, labels: ctrLabels(t),
		accessKey: "s3p" + randomText(t, 10), secret: randomText(t, 20), bucket: "containers-" + randomText(t, 6)}
	env.store = env.network(ctx, t, true)
	env.front = env.network(ctx, t, false)
	admin := env.network(ctx, t, false)

	minioCtr := env.run(ctx, t, testcontainers.ContainerRequest{
		Image: minioImage,
		Cmd:   []string{"server", "/data"},
		Env: map[string]string{"MINIO_ROOT_USER": env.accessKey, "MINIO_ROOT_PASSWORD": env.secret,
			"MINIO_CI_CD": "1", "MINIO_UPDATE": "off"},
		ExposedPorts:       []string{minioCtrPort},
		HostConfigModifier: loopbackPorts(minioCtrPort),
		Networks:           []string{admin.Name, env.store.Name},
		NetworkAliases:     map[string][]string{env.store.Name: {"minio"}},
		WaitingFor:         tcwait.ForHTTP("/minio/health/ready").WithPort(minioCtrPort).WithStartupTimeout(miniotest.StartTimeout),
	})
	if t.Failed() {
		t.FailNow()
	}
	endpoint := env.loopbackAddr(ctx, t, minioCtr, minioCtrPort)
	env.s3, err = minio.New(endpoint, &minio.Options{Creds: credentials.NewStaticV4(env.accessKey, env.secret, ""),
		Region: miniotest.DefaultRegion})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.s3.MakeBucket(ctx, env.bucket, minio.MakeBucketOptions{Region: miniotest.DefaultRegion}); err != nil {
		t.Fatalf("create bucket %s on the MinIO container: %v", env.bucket, err)
	}
	return env
}

// ctrLabels are the labels of every container and network of t: labelContainersTest,
// and miniotest's owner labels, so that miniotest's start in a later test process on
// this host removes what a test process that died left behind.
func ctrLabels(t *testing.T) map[string]string {
	host, _ := os.Hostname()
	return map[string]string{labelContainersTest: t.Name(),
		miniotest.LabelMiniotest: "1", miniotest.LabelOwner: host + ":" + strconv.Itoa(os.Getpid())}
}

// ctrMinioBinary is the MinIO binary the MinIO image is made from: the one miniotest
// uses (S3PERSIST_MINIO_BIN, else where scripts/install-minio.sh puts it).
func ctrMinioBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(miniotest.EnvMinioBin); p != "" {
		return p
	}
	dir := os.Getenv(miniotest.EnvToolsDir)
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatalf("no MinIO binary for the MinIO image: %s is not set and %v", miniotest.EnvMinioBin, err)
		}
		dir = filepath.Join(home, ".cache", "s3persist", "tools")
	}
	p := filepath.Join(dir, "minio-"+miniotest.MinioVersion, "minio")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no MinIO binary for the MinIO image (%v): run `bash scripts/install-minio.sh` and set %s to the path it prints",
			err, miniotest.EnvMinioBin)
	}
	return p
}

// network creates a bridge network, removed when t ends.
func (e *ctrEnv) network(ctx context.Context, t *testing.T, internal bool) *testcontainers.DockerNetwork {
	t.Helper()
	opts := []tcnetwork.NetworkCustomizer{tcnetwork.WithLabels(e.labels)}
	if internal {
		opts = append(opts, tcnetwork.WithInternal())
	}
	nw, err := tcnetwork.New(ctx, opts...)
	if err != nil {
		t.Fatalf("create a Docker network: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ctrCallTimeout)
		defer cancel()
		if err := nw.Remove(ctx); err != nil {
			t.Errorf("remove Docker network %s: %v", nw.Name, err)
		}
	})
	return nw
}

// run creates and starts a container of req, removed (forcibly) when t ends. On failure
// it marks t failed and returns what was created, if anything.
func (e *ctrEnv) run(ctx context.Context, t *testing.T, req testcontainers.ContainerRequest) testcontainers.Container {
	t.Helper()
	req.Labels = e.labels
	ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{ContainerRequest: req, Started: true})
	if ctr != nil {
		id := ctr.GetContainerID()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), ctrCallTimeout)
			defer cancel()
			_, err := e.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			if err != nil && !cerrdefs.IsNotFound(err) {
				t.Errorf("remove container %s: %v", id, err)
			}
		})
	}
	if err != nil {
		t.Errorf("start a container of %s: %v", req.Image, err)
	}
	return ctr
}

// loopbackPorts publishes ports on 127.0.0.1 only, each on a port the engine chooses.
func loopbackPorts(ports ...string) func(*container.HostConfig) {
	return func(hc *container.HostConfig) {
		hc.PortBindings = network.PortMap{}
		for _, p := range ports {
			hc.PortBindings[network.MustParsePort(p)] = []network.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1")}}
		}
	}
}

// loopbackAddr is 127.0.0.1 and the host port that port of ctr is published on.
func (e *ctrEnv) loopbackAddr(ctx context.Context, t *testing.T, ctr testcontainers.Container, port string) string {
	t.Helper()
	p, err := ctr.MappedPort(ctx, port)
	if err != nil {
		t.Fatalf("published port of %s: %v", port, err)
	}
	return net.JoinHostPort("127.0.0.1", p.Port())
}

// newPrefix returns a key prefix of its own for t in the test's bucket.
func (e *ctrEnv) newPrefix() string {
	e.nextPrefix++
	return fmt.Sprintf("t%02d/", e.nextPrefix)
}

// brokerArgs are the flags of a broker container on prefix, then extra.
func (e *ctrEnv) brokerArgs(prefix string, extra ...string) []string {
	return append([]string{"-listen", "0.0.0.0:1883", "-s3-endpoint", "http://minio:9000", "-s3-bucket", e.bucket,
		"-prefix", prefix, "-lease-ttl", ctrLease.String(), "-flush-interval", ctrFlush.String()}, extra...)
}

// ctrBroker is a broker container.
type ctrBroker struct {
	env       *ctrEnv
	name      string // for messages
	ctr       testcontainers.Container
	id        string
	addr      string    // 127.0.0.1:<published MQTT port>
	createdAt time.Time // before the create request
	readyAt   time.Time // when its ready line was seen; zero before
}

// startBroker starts a broker container and waits for its ready line.
func (e *ctrEnv) startBroker(t *testing.T, name string, args ...string) *ctrBroker {
	t.Helper()
	b := e.launchBroker(t, name, args...)
	b.waitReady(t)
	return b
}

// launchBroker starts a broker container without waiting for it to be ready (it may
// wait for the prefix's owner). Its log is printed if t fails.
func (e *ctrEnv) launchBroker(t *testing.T, name string, args ...string) *ctrBroker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ctrCallTimeout)
	defer cancel()
	b := &ctrBroker{env: e, name: name, createdAt: time.Now()}
	b.ctr = e.run(ctx, t, testcontainers.ContainerRequest{
		Image:              e.brokerImage,
		Cmd:                args,
		Env:                map[string]string{"AWS_ACCESS_KEY_ID": e.accessKey, "AWS_SECRET_ACCESS_KEY": e.secret},
		ExposedPorts:       []string{images.BrokerPort},
		HostConfigModifier: loopbackPorts(images.BrokerPort),
		Networks:           []string{e.front.Name, e.store.Name},
	})
	if t.Failed() {
		t.FailNow()
	}
	b.id = b.ctr.GetContainerID()
	b.addr = e.loopbackAddr(ctx, t, b.ctr, images.BrokerPort)
	t.Cleanup(func() { // runs before the removal, registered earlier
		if t.Failed() {
			t.Logf("log of the %s broker container %.12s:\n%s", b.name, b.id, b.logs(t))
		}
	})
	return b
}

// logs is the container's output so far (stdout and stderr).
func (b *ctrBroker) logs(t *testing.T) string {
	ctx, cancel := context.WithTimeout(context.Background(), ctrCallTimeout)
	defer cancel()
	r, err := b.ctr.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		return string(out) + fmt.Sprintf("\n(log cut: %v)", err)
	}
	return string(out)
}

// state is the container's state.
func (b *ctrBroker) state(t *testing.T) *container.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ctrCallTimeout)
	defer cancel()
	res, err := b.env.cli.ContainerInspect(ctx, b.id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatalf("inspect the %s broker container: %v", b.name, err)
	}
	return res.Container.State
}

func (b *ctrBroker) exited(t *testing.T) bool {
	t.Helper()
	return !b.state(t).Running
}

// pollEvery is how often the tests look at a container's log or state while waiting.
const pollEvery = 50 * time.Millisecond

// readyWithin polls the log until the ready line appears (ready), the container exits,
// or d passes.
func (b *ctrBroker) readyWithin(t *testing.T, d time.Duration) (ready, exited bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if strings.Contains(b.logs(t), brokerReadyPrefix) {
			b.readyAt = time.Now()
			return true, false
		}
		if b.exited(t) {
			return false, true
		}
		if time.Now().After(deadline) {
			return false, false
		}
		time.Sleep(pollEvery) // polling the engine with a deadline
	}
}

// brokerReadyPrefix starts the line the example broker prints once it accepts
// connections (examples/volantmq ReadyPrefix).
const brokerReadyPrefix = "ready: mqtt listener on "

// waitReady waits for the ready line, or fails.
func (b *ctrBroker) waitReady(t *testing.T) {
	t.Helper()
	ready, exited := b.readyWithin(t, brokerTimeout)
	switch {
	case exited:
		t.Fatalf("the %s broker container exited before it was ready (status %d)", b.name, b.state(t).ExitCode)
	case !ready:
		t.Fatalf("the %s broker container was not ready after %v", b.name, brokerTimeout)
	}
}

// waitExit waits until the container has exited by itself and returns its status.
func (b *ctrBroker) waitExit(t *testing.T, d time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if s := b.state(t); !s.Running {
			return s.ExitCode
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %s broker container still runs %v later", b.name, d)
		}
		time.Sleep(pollEvery) // polling the engine with a deadline
	}
}

// epoch is the boot epoch the broker's s3persist logged at start.
func (b *ctrBroker) epoch(t *testing.T) int {
	t.Helper()
	m := regexp.MustCompile(`s3persist: loaded.* epoch=(\d+)`).FindStringSubmatch(b.logs(t))
	if m == nil {
		t.Fatalf("no epoch in the log of the %s broker", b.name)
	}
	e, _ := strconv.Atoi(m[1])
	return e
}

// kill is docker kill (SIGKILL); it returns once the container is gone.
func (e *ctrEnv) kill(t *testing.T, b *ctrBroker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ctrCallTimeout)
	defer cancel()
	if _, err := e.cli.ContainerKill(ctx, b.id, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatalf("docker kill the %s broker: %v", b.name, err)
	}
	b.waitExit(t, ctrCallTimeout)
}

// remove is docker rm.
func (e *ctrEnv) remove(t *testing.T, b *ctrBroker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ctrCallTimeout)
	defer cancel()
	if _, err := e.cli.ContainerRemove(ctx, b.id, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatalf("docker rm the %s broker: %v", b.name, err)
	}
}

// stop is docker stop (SIGTERM, SIGKILL after brokerTimeout) after stopSettle (see
// broker.stop); the broker must exit with status 0 and report a complete final flush.
// It returns when it asked the engine to stop the container.
func (e *ctrEnv) stop(t *testing.T, b *ctrBroker) (sigterm time.Time) {
	t.Helper()
	time.Sleep(stopSettle)
	sigterm = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), brokerTimeout+ctrCallTimeout)
	defer cancel()
	grace := int(brokerTimeout.Seconds())
	if _, err := e.cli.ContainerStop(ctx, b.id, client.ContainerStopOptions{Timeout: &grace}); err != nil {
		t.Fatalf("docker stop the %s broker: %v", b.name, err)
	}
	if code := b.state(t).ExitCode; code != 0 {
		t.Fatalf("the %s broker exited with status %d after docker stop", b.name, code)
	}
	out := b.logs(t)
	if !strings.Contains(out, "store flushed") || !strings.Contains(out, "not_durable_changes=0") {
		t.Fatalf("the %s broker did not report a complete final flush", b.name)
	}
	return sigterm
}

// disconnect cuts the broker off from MinIO: docker network disconnect from store.
func (e *ctrEnv) disconnect(t *testing.T, b *ctrBroker) {
	t.Helper()
	if err := e.connectStore(b, false); err != nil {
		t.Fatal(err)
	}
}

// reconnect is docker network connect to store.
func (e *ctrEnv) reconnect(t *testing.T, b *ctrBroker) {
	t.Helper()
	if err := e.connectStore(b, true); err != nil {
		t.Fatal(err)
	}
}

// connectStore connects the broker to the store network, or disconnects it.
func (e *ctrEnv) connectStore(b *ctrBroker, connected bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), ctrCallTimeout)
	defer cancel()
	if connected {
		if _, err := e.cli.NetworkConnect(ctx, e.store.ID, client.NetworkConnectOptions{Container: b.id}); err != nil {
			return fmt.Errorf("docker network connect the %s broker to the store network: %w", b.name, err)
		}
		return nil
	}
	if _, err := e.cli.NetworkDisconnect(ctx, e.store.ID, client.NetworkDisconnectOptions{Container: b.id}); err != nil {
		return fmt.Errorf("docker network disconnect the %s broker from the store network: %w", b.name, err)
	}
	return nil
}

// maxPendingDefault is s3persist's default MaxPendingBytes, the example broker's bound on
// journal records accepted but not durable.
const maxPendingDefault = 64 << 20

// memory is the container's memory use as its cgroup counts it, page cache excluded.
func (e *ctrEnv) memory(b *ctrBroker) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ctrCallTimeout)
	defer cancel()
	res, err := e.cli.ContainerStats(ctx, b.id, client.ContainerStatsOptions{})
	if err != nil {
		return 0, fmt.Errorf("docker stats of the %s broker: %w", b.name, err)
	}
	defer res.Body.Close()
	var st struct {
		MemoryStats struct {
			Usage uint64            `json:"usage"`
			Stats map[string]uint64 `json:"stats"`
		} `json:"memory_stats"`
	}
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		return 0, fmt.Errorf("docker stats of the %s broker: %w", b.name, err)
	}
	cache := st.MemoryStats.Stats["inactive_file"] // cgroup v2; v1 calls it total_inactive_file
	if c, ok := st.MemoryStats.Stats["total_inactive_file"]; ok {
		cache = c
	}
	return st.MemoryStats.Usage - min(cache, st.MemoryStats.Usage), nil
}

// waitForBytes polls the objects under prefix until one contains want, for at most d.
func (e *ctrEnv) waitForBytes(t *testing.T, prefix string, want []byte, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		_, found, _ := e.scanPrefix(t, prefix, want, -1, time.Time{})
		if len(found) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no object under %s holds %q after %v", prefix, want, d)
		}
		time.Sleep(pollEvery) // polling the bucket with a deadline
	}
}

// scanPrefix reads every object under prefix: it returns how many there are, the keys of
// those that contain needle, and the keys of journal segments of epoch (j/<ss>/<epoch>-<n>)
// modified after since (epoch < 0: none).
func (e *ctrEnv) scanPrefix(t *testing.T, prefix string, needle []byte, epoch int, since time.Time) (objects int, with, segments []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ctrCallTimeout)
	defer cancel()
	segment := fmt.Sprintf("%06x-", epoch)
	for obj := range e.s3.ListObjects(ctx, e.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			t.Fatalf("list %s: %v", prefix, obj.Err)
		}
		objects++
		rest := strings.TrimPrefix(obj.Key, prefix)
		if epoch >= 0 && strings.HasPrefix(rest, "j/") && strings.HasPrefix(rest[strings.LastIndex(rest, "/")+1:], segment) &&
			obj.LastModified.After(since) {
			segments = append(segments, obj.Key)
		}
		r, err := e.s3.GetObject(ctx, e.bucket, obj.Key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatalf("get %s: %v", obj.Key, err)
		}
		body, err := io.ReadAll(r)
		_ = r.Close()
		var resp minio.ErrorResponse
		if errors.As(err, &resp) && resp.Code == "NoSuchKey" {
			continue // deleted by a checkpoint since the listing
		} else if err != nil {
			t.Fatalf("read %s: %v", obj.Key, err)
		}
		if bytes.Contains(body, needle) {
			with = append(with, obj.Key)
		}
	}
	return objects, with, segments
}

// publishPhase publishes the QoS 1 messages "<phase>-<i>", i < n, through p, one at a
// time (see orderedPublisher).
func publishPhase(t *testing.T, p *orderedPublisher, phase string, n int) {
	t.Helper()
	for i := range n {
		m := phasePayload(phase, i)
		wait(t, "publish "+m, p.c.Publish(queueTopic, 1, false, m))
		p.witness.waitFor(t, queueTopic, m)
	}
}

func phasePayload(phase string, i int) string { return fmt.Sprintf("%s-%04d", phase, i) }

func randomText(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)[:n]
}

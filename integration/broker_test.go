package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// End-to-end tests of the example broker (examples/volantmq): a real VolantMQ broker
// process on s3persist and a real MinIO, driven by a real MQTT client (paho). Each phase
// runs a new broker process with a new, empty data directory on the same bucket prefix,
// so nothing but the bucket carries state from one phase to the next.
//
// VolantMQ v0.3.2 routes PUBLISH packets with two goroutines
// (topics/memLockFree/topics.go:103-110, :310-323), which hand a message to each
// matching subscriber in turn and, for an offline session, call PacketStoreQoS0/QoS12
// right there (subscriber/subscriber.go:165, clients/sessions.go:1079-1081). Two
// messages published back to back can therefore be stored (and delivered to online
// subscribers) in either order: the broker does not keep a publisher's order, whatever
// the persistence. To check that s3persist keeps the order the broker stored, the tests
// publish through an orderedPublisher: message i+1 is published only once a live
// "witness" subscriber received message i, so the broker routes one message at a time.

const (
	queueTopic    = "e2e/q"
	qos0Topic     = "e2e/q0"
	retainedTopic = "e2e/retained"
	markerTopic   = "e2e/marker"
	fencePayload  = "fence"
	// brokerTimeout bounds a broker's start (ready line) and its graceful stop.
	brokerTimeout = 90 * time.Second
	// mqttTimeout bounds one MQTT operation and the wait for an expected message.
	mqttTimeout = 60 * time.Second
)

func TestBrokerEndToEnd(t *testing.T) {
	bin := buildBroker(t)

	t.Run("offline QoS 1 messages, retained messages and QoS 0 queueing survive a graceful replacement", func(t *testing.T) {
		testGracefulReplacement(t, bin)
	})
	t.Run("QoS 0 messages are not queued for an offline session with -offline-qos0=false", func(t *testing.T) {
		testNoOfflineQoS0(t, bin)
	})
	t.Run("Sync: after SIGKILL nothing whose store call returned is lost", func(t *testing.T) {
		testKill(t, bin, "sync")
	})
	t.Run("Async: after SIGKILL the loss is a suffix accepted in the last flush window", func(t *testing.T) {
		testKill(t, bin, "async")
	})
	t.Run("rolling update: a second broker on the prefix waits until the first one stops", func(t *testing.T) {
		testRollingUpdate(t, bin)
	})
	t.Run("-force-takeover fences the running broker, which stops by itself", func(t *testing.T) {
		testForceTakeover(t, bin)
	})
	t.Run("reference bbolt plugin: a replacement with an empty disk loses everything", func(t *testing.T) {
		testBboltReplacement(t, bin)
	})
}

// testGracefulReplacement: a persistent subscriber goes offline, 1,000 QoS 1 and 10 QoS 0
// messages and a retained message are published, the broker is stopped with SIGTERM and
// replaced; the subscriber gets every message once, in order, and a clean-start client
// finds nothing of its old session.
func testGracefulReplacement(t *testing.T, bin string) {
	const n, n0 = 1000, 10
	s3 := newBrokerS3(t)

	b1 := startBroker(t, bin, s3.args(t)...)
	goOffline(t, b1.addr, "persistent-sub", queueTopic, qos0Topic)
	goOffline(t, b1.addr, "clean-later", queueTopic)
	pub := newOrderedPublisher(t, b1.addr, queueTopic, qos0Topic)
	pub.publish(t, queueTopic, 1, n)
	pub.publish(t, qos0Topic, 0, n0)
	wait(t, "publish retained", pub.c.Publish(retainedTopic, 1, true, "kept"))
	pub.close()
	b1.stop(t)

	b2 := startBroker(t, bin, s3.args(t)...)
	got := newCollector()
	sub, present := connectPresent(t, b2.addr, "persistent-sub", false, got.handler)
	if !present {
		t.Errorf("persistent-sub: CONNACK session present = false after the replacement, want true")
	}
	drainWithMarker(t, b2.addr, sub, got, queueTopic, qos0Topic, retainedTopic)
	wantSequence(t, "persistent-sub "+queueTopic, got.payloads(queueTopic), n)
	if q0 := got.payloads(qos0Topic); len(q0) != n0 {
		t.Errorf("persistent-sub: %d QoS 0 messages after the replacement, want %d (-offline-qos0 is on by default)", len(q0), n0)
	} else {
		wantSequence(t, "persistent-sub "+qos0Topic, q0, n0)
	}
	if r := got.retained(retainedTopic); len(r) != 1 || r[0] != "kept" {
		t.Errorf("retained messages on %s after the replacement: %q, want [kept]", retainedTopic, r)
	}
	sub.Disconnect(250)

	clean := newCollector()
	c, present := connectPresent(t, b2.addr, "clean-later", true, clean.handler)
	if present {
		t.Errorf("clean-later: CONNACK session present = true on a clean start, want false")
	}
	drainWithMarker(t, b2.addr, c, clean)
	if old := clean.payloads(queueTopic); len(old) != 0 {
		t.Errorf("clean-later: a clean start received %d messages of its old session, want none", len(old))
	}
	c.Disconnect(250)
	b2.stop(t)
}

// testNoOfflineQoS0: with the broker's offline-QoS0 option off, QoS 0 messages for an
// offline session are dropped, QoS 1 ones are kept.
func testNoOfflineQoS0(t *testing.T, bin string) {
	s3 := newBrokerS3(t)
	args := func() []string { return append(s3.args(t), "-offline-qos0=false") }

	b1 := startBroker(t, bin, args()...)
	goOffline(t, b1.addr, "sub", queueTopic, qos0Topic)
	pub := newOrderedPublisher(t, b1.addr, queueTopic, qos0Topic)
	pub.publish(t, qos0Topic, 0, 10)
	pub.publish(t, queueTopic, 1, 3)
	pub.close()
	b1.stop(t)

	b2 := startBroker(t, bin, args()...)
	got := newCollector()
	sub := connect(t, b2.addr, "sub", false, got.handler)
	drainWithMarker(t, b2.addr, sub, got, queueTopic, qos0Topic)
	wantSequence(t, "sub "+queueTopic, got.payloads(queueTopic), 3)
	if q0 := got.payloads(qos0Topic); len(q0) != 0 {
		t.Errorf("%d QoS 0 messages queued for an offline session with -offline-qos0=false, want 0", len(q0))
	}
	sub.Disconnect(250)
	b2.stop(t)
}

// testKill publishes 1,000 QoS 1 messages to an offline persistent session, one at a
// time, then kills the broker with SIGKILL once the witness has received them all and a
// fence after them, and replaces the broker. The moment of the kill: every store call
// for the messages has returned except, possibly, that of the last message or two: the
// witness may get a message before the other router goroutine stores it for the victim
// (see the top of this file). Sync must lose none of the others; the test reports the
// loss, which has been 0 in every run. Async may lose only the newest messages, those
// accepted within the flush interval plus the upload time before the kill; the test
// reports how many.
func testKill(t *testing.T, bin, durability string) {
	const n = 1000
	const flushInterval = time.Second
	// uploadSlack is the time a journal upload may take on top of the flush interval on
	// this busy machine (a MinIO PUT under -race with other tests around).
	const uploadSlack = 3 * time.Second
	// inFlight is how many of the last messages may still be in a store call at the kill.
	const inFlight = 2
	// The killed broker cannot release the prefix: its replacement waits for the lease
	// (plus a tenth) to expire, as it would in production without -force-takeover.
	const lease = 3 * time.Second
	s3 := newBrokerS3(t)
	args := func() []string {
		return append(s3.args(t), "-durability", durability, "-flush-interval", flushInterval.String(), "-lease-ttl", lease.String())
	}

	b1 := startBroker(t, bin, args()...)
	pub, start := queueForVictim(t, b1.addr, n, flushInterval)
	killedAt := time.Now()
	b1.kill(t)
	t.Logf("%s: %d messages published one at a time in %v, then SIGKILL", durability, n, killedAt.Sub(start).Round(time.Millisecond))
	pub.close()

	b2 := startBroker(t, bin, args()...)
	if waited := time.Since(killedAt); waited < lease {
		t.Errorf("the replacement took the prefix %v after the kill, before the killed broker's lease of %v could expire", waited, lease)
	} else {
		t.Logf("%s: the replacement took the prefix over %v after the kill (lease %v)", durability, waited.Round(time.Millisecond), lease)
	}
	got := newCollector()
	sub := connect(t, b2.addr, "victim", false, got.handler)
	drainWithMarker(t, b2.addr, sub, got, queueTopic)
	sub.Disconnect(250)
	b2.stop(t)

	recv := got.payloads(queueTopic)
	if len(recv) > 0 && recv[len(recv)-1] == fencePayload {
		recv = recv[:len(recv)-1] // the fence went to the victim too
	}
	wantLossWithinFlushWindow(t, durability, "after SIGKILL and replacement", recv, n, inFlight, flushInterval+uploadSlack, killedAt, pub)
}

// queueForVictim takes the victim's session offline on the broker at addr and publishes
// n QoS 1 messages to it, spread over about three flush intervals (so that Async has
// uploaded the older ones and not the newest when the broker is then killed), then a
// fence that the witness must receive: every message before it was routed. It returns
// the publisher and when publishing started.
func queueForVictim(t *testing.T, addr string, n int, flush time.Duration) (*orderedPublisher, time.Time) {
	t.Helper()
	goOffline(t, addr, "victim", queueTopic)
	pub := newOrderedPublisher(t, addr, queueTopic)
	pub.pace = 3 * flush / time.Duration(n/50)
	start := time.Now()
	pub.publish(t, queueTopic, 1, n)
	wait(t, "publish the fence", pub.c.Publish(queueTopic, 1, false, fencePayload))
	pub.witness.waitFor(t, queueTopic, fencePayload)
	return pub, start
}

// wantLossWithinFlushWindow checks what a broker replaced after a SIGKILL delivered of
// the n messages queued for the victim: recv holds them in order (up to maxSwap), Sync
// (durability "sync") loses at most the inFlight whose store call may not have returned,
// and Async loses only messages the broker accepted within window (the flush interval
// plus the upload time) before killedAt: nothing older is ever lost.
func wantLossWithinFlushWindow(t *testing.T, durability, how string, recv []string, n, inFlight int, window time.Duration, killedAt time.Time, pub *orderedPublisher) {
	t.Helper()
	wantPrefix(t, "victim "+queueTopic, recv, n, inFlight)
	lost := max(n-len(recv), 0)
	t.Logf("%s: %d of %d QoS 1 messages delivered %s, %d lost (window %v)", durability, min(len(recv), n), n, how, lost, window)
	if durability == "sync" && lost > inFlight {
		t.Errorf("sync: %d messages lost, more than the %d whose store call may not have returned at the kill", lost, inFlight)
	}
	if lost == 0 {
		return
	}
	oldest := pub.witness.receivedAt(queueTopic, len(recv))
	if age := killedAt.Sub(oldest); age > window {
		t.Errorf("%s: lost message %d was accepted %v before the kill, more than the flush window bound %v",
			durability, len(recv), age.Round(time.Millisecond), window)
	} else {
		t.Logf("%s: the oldest lost message was accepted %v before the kill (bound %v)", durability, age.Round(time.Millisecond), window)
	}
}

// testRollingUpdate: during a rolling update the new broker starts while the old one
// still serves. s3persist's ownership of the prefix makes it wait (it would otherwise
// load a state the old broker keeps changing) until the old one stops and releases the
// prefix; then it starts at once and finds the old broker's messages.
func testRollingUpdate(t *testing.T, bin string) {
	const lease = 3 * time.Second
	s3 := newBrokerS3(t)
	args := func() []string { return append(s3.args(t), "-lease-ttl", lease.String()) }
	b1 := startBroker(t, bin, args()...)
	goOffline(t, b1.addr, "victim", queueTopic)
	pub := newOrderedPublisher(t, b1.addr, queueTopic)
	pub.publish(t, queueTopic, 1, 20)
	pub.close()

	b2, ready := launchBroker(t, bin, args()...)
	select {
	case <-ready:
		t.Fatal("the second broker started while the first one owned the prefix")
	case <-b2.exited:
		t.Fatalf("the second broker exited while waiting: %v\n%s", b2.err, b2.output.String())
	case <-time.After(2 * lease): // the owner renews every lease/3: no takeover can be due
	}
	stoppedAt := time.Now()
	b1.stop(t)
	b2.waitReady(t, ready, brokerTimeout)
	t.Logf("the second broker started %v after the first one was asked to stop", time.Since(stoppedAt).Round(time.Millisecond))
	got := newCollector()
	sub := connect(t, b2.addr, "victim", false, got.handler)
	drainWithMarker(t, b2.addr, sub, got, queueTopic)
	sub.Disconnect(250)
	b2.stop(t)
	wantPrefix(t, "victim "+queueTopic, got.payloads(queueTopic), 20, 0)
}

// testForceTakeover: a broker started with -force-takeover takes the prefix from a live
// broker at once; the old broker is fenced by s3persist, notices within its renewal
// period, and stops with an error instead of serving clients it can no longer persist.
func testForceTakeover(t *testing.T, bin string) {
	const lease = 3 * time.Second
	s3 := newBrokerS3(t)
	b1 := startBroker(t, bin, append(s3.args(t), "-lease-ttl", lease.String())...)
	b2 := startBroker(t, bin, append(s3.args(t), "-lease-ttl", lease.String(), "-force-takeover")...)
	select {
	case <-b1.exited:
	case <-time.After(brokerTimeout):
		t.Fatalf("the fenced broker still runs %v after the takeover\n%s", brokerTimeout, b1.output.String())
	}
	if b1.err == nil || !strings.Contains(b1.output.String(), "fenced") {
		t.Fatalf("the fenced broker exited with %v; want an error that says it was fenced\n%s", b1.err, b1.output.String())
	}
	b2.stop(t)
}

// testBboltReplacement runs the graceful scenario on the reference bbolt plugin: its
// state is a file in the data directory, so a new broker with an empty disk has nothing.
func testBboltReplacement(t *testing.T, bin string) {
	const n = 100
	args := func() []string { return []string{"-store", "bbolt", "-data", t.TempDir()} }

	b1 := startBroker(t, bin, args()...)
	goOffline(t, b1.addr, "persistent-sub", queueTopic)
	pub := newOrderedPublisher(t, b1.addr, queueTopic)
	pub.publish(t, queueTopic, 1, n)
	wait(t, "publish retained", pub.c.Publish(retainedTopic, 1, true, "kept"))
	pub.close()
	b1.stop(t)

	b2 := startBroker(t, bin, args()...)
	got := newCollector()
	sub, present := connectPresent(t, b2.addr, "persistent-sub", false, got.handler)
	drainWithMarker(t, b2.addr, sub, got, queueTopic, retainedTopic)
	sub.Disconnect(250)
	b2.stop(t)
	q, r := got.payloads(queueTopic), got.retained(retainedTopic)
	t.Logf("bbolt, new broker on an empty disk: session present %v, %d of %d queued messages, %d retained", present, len(q), n, len(r))
	if present || len(q) != 0 || len(r) != 0 {
		t.Errorf("bbolt kept state across an empty disk (present %v, %d messages, %d retained): the comparison no longer shows what it should", present, len(q), len(r))
	}
}

// buildBroker builds the example broker into a temporary directory.
func buildBroker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "volantmq-s3persist")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join("..", "examples", "volantmq")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the example broker: %v\n%s", err, out)
	}
	return bin
}

// brokerS3 is the bucket prefix that the brokers of one test share.
type brokerS3 struct {
	endpoint, bucket, prefix string
}

func newBrokerS3(t *testing.T) brokerS3 {
	tgt := srv.NewTarget(t)
	scheme := "http://"
	if srv.Secure {
		scheme = "https://"
	}
	return brokerS3{endpoint: scheme + srv.Endpoint, bucket: tgt.Bucket, prefix: tgt.Prefix + "broker/"}
}

// args are the flags of a broker on s, with a new empty data directory.
func (s brokerS3) args(t *testing.T) []string {
	return []string{"-s3-endpoint", s.endpoint, "-s3-bucket", s.bucket, "-s3-region", srv.Region,
		"-prefix", s.prefix, "-data", t.TempDir()}
}

// broker is a running example broker process.
type broker struct {
	addr   string
	cmd    *exec.Cmd
	output *syncBuffer // stdout and stderr
	exited chan struct{}
	err    error // of Wait, set before exited is closed
}

// startBroker starts the broker on a free loopback port and waits for its ready line. A
// cleanup kills it if the test did not stop it.
func startBroker(t *testing.T, bin string, args ...string) *broker {
	t.Helper()
	b, ready := launchBroker(t, bin, args...)
	b.waitReady(t, ready, brokerTimeout)
	return b
}

// waitReady waits for the ready line of b, or fails.
func (b *broker) waitReady(t *testing.T, ready <-chan struct{}, timeout time.Duration) {
	t.Helper()
	select {
	case <-ready:
	case <-b.exited:
		t.Fatalf("the broker exited before it was ready: %v\n%s", b.err, b.output.String())
	case <-time.After(timeout):
		t.Fatalf("the broker was not ready after %v\n%s", timeout, b.output.String())
	}
}

// launchBroker starts a broker process; ready is closed when it prints its ready line.
func launchBroker(t *testing.T, bin string, args ...string) (*broker, <-chan struct{}) {
	t.Helper()
	b := &broker{addr: freeAddr(t), output: &syncBuffer{}, exited: make(chan struct{})}
	b.cmd = exec.Command(bin, append([]string{"-listen", b.addr}, args...)...)
	b.cmd.Env = append(os.Environ(),
		"AWS_ACCESS_KEY_ID="+srv.AccessKey, "AWS_SECRET_ACCESS_KEY="+srv.SecretKey,
		"S3_ENDPOINT=", "S3_BUCKET=")
	b.cmd.Stderr = b.output
	stdout, err := b.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start the broker: %v", err)
	}
	ready := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			b.output.Write([]byte(line + "\n"))
			if strings.HasPrefix(line, "ready: ") {
				once.Do(func() { close(ready) })
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		<-scanned // Wait closes the pipe: read it to the end first
		b.err = b.cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-b.exited:
		default:
			_ = b.cmd.Process.Kill()
			<-b.exited
		}
		if t.Failed() {
			t.Logf("output of the broker on %s:\n%s", b.addr, b.output.String())
		}
	})
	return b, ready
}

// stop gives the broker stopSettle to finish with the clients that just left, sends
// SIGTERM and waits for a clean exit. VolantMQ v0.3.2 has races in its shutdown with
// connections that are still closing or just accepted (clients/sessions.go:206 panics
// with a negative WaitGroup counter; transport/tcp.go:89-90 sets the listener to nil
// while an Accept task may still read it at :133), which crash the process; the settle
// time keeps the tests out of them.
func (b *broker) stop(t *testing.T) {
	t.Helper()
	time.Sleep(stopSettle)
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-b.exited:
	case <-time.After(brokerTimeout):
		_ = b.cmd.Process.Kill()
		<-b.exited
		t.Fatalf("the broker did not stop within %v of SIGTERM", brokerTimeout)
	}
	if b.err != nil {
		t.Fatalf("the broker exited with %v after SIGTERM\n%s", b.err, b.output.String())
	}
	out := b.output.String()
	flushed := strings.Contains(out, "store flushed") && strings.Contains(out, "not_durable_changes=0")
	if !flushed && !strings.Contains(out, "store closed") {
		t.Fatalf("the broker did not report a complete final flush:\n%s", out)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (b *broker) kill(t *testing.T) {
	t.Helper()
	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatalf("SIGKILL: %v", err)
	}
	<-b.exited
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// connect connects an MQTT 3.1.1 client; handler receives every message, also those of
// a stored session that arrive before any SUBSCRIBE.
func connect(t *testing.T, addr, id string, clean bool, handler mqtt.MessageHandler) mqtt.Client {
	t.Helper()
	c, _ := connectPresent(t, addr, id, clean, handler)
	return c
}

// connectPresent is connect, also returning CONNACK's session-present flag.
func connectPresent(t *testing.T, addr, id string, clean bool, handler mqtt.MessageHandler) (mqtt.Client, bool) {
	t.Helper()
	if handler == nil {
		handler = func(mqtt.Client, mqtt.Message) {}
	}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(clean).SetProtocolVersion(4).SetAutoReconnect(false).
		SetConnectTimeout(mqttTimeout).SetKeepAlive(time.Minute).SetOrderMatters(true).
		SetDefaultPublishHandler(handler)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	wait(t, "connect "+id, tok)
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(0)
		}
	})
	return c, tok.(*mqtt.ConnectToken).SessionPresent()
}

// stopSettle is how long stop waits before SIGTERM; see stop.
const stopSettle = time.Second

// offlineSettle is how long goOffline gives the broker to take a disconnected session
// offline; see goOffline.
const offlineSettle = time.Second

// goOffline creates a persistent session subscribed at QoS 1 to topics, disconnects, and
// gives the broker offlineSettle to take the session offline. On DISCONNECT, VolantMQ
// v0.3.2 switches the subscriber to its offline path in the connection's reader
// goroutine (connection/connection.go:631). A message routed before that switch is
// queued in the closing connection and stored later with PacketsStore
// (clients/session.go:314), after messages routed behind it, so a test that publishes
// at once sees them out of order (a broker behaviour, seen here under load). The broker
// offers no signal for the switch: its $SYS/.../clients/<id>/disconnected notification
// would be one, but v0.3.2 drops any connection that subscribes to a $SYS topic. So this
// waits on time, as stop does.
func goOffline(t *testing.T, addr, id string, topics ...string) {
	t.Helper()
	c := connect(t, addr, id, false, nil)
	subscribe(t, c, topics...)
	c.Disconnect(250)
	time.Sleep(offlineSettle)
}

func subscribe(t *testing.T, c mqtt.Client, topics ...string) {
	t.Helper()
	filters := map[string]byte{}
	for _, tp := range topics {
		filters[tp] = 1
	}
	tok := c.SubscribeMultiple(filters, nil)
	wait(t, "subscribe", tok)
	for tp, code := range tok.(*mqtt.SubscribeToken).Result() {
		if code > 2 {
			t.Fatalf("subscribe %s: return code %#x", tp, code)
		}
	}
}

// orderedPublisher publishes messages one at a time: each waits for its PUBACK and for
// the witness, a live subscriber to the same topics, to receive it. See the top of this
// file for why.
type orderedPublisher struct {
	c, w    mqtt.Client
	witness *collector
	pace    time.Duration // pause after every 50 messages
}

func newOrderedPublisher(t *testing.T, addr string, topics ...string) *orderedPublisher {
	t.Helper()
	p := &orderedPublisher{witness: newCollector()}
	p.w = connect(t, addr, "witness", true, p.witness.handler)
	subscribe(t, p.w, topics...)
	p.c = connect(t, addr, "publisher", true, nil)
	return p
}

// publish publishes payload(0) .. payload(n-1) at qos to topic.
func (p *orderedPublisher) publish(t *testing.T, topic string, qos byte, n int) {
	t.Helper()
	for i := range n {
		wait(t, fmt.Sprintf("publish %s #%d", topic, i), p.c.Publish(topic, qos, false, payload(i)))
		p.witness.waitFor(t, topic, payload(i))
		if p.pace > 0 && i%50 == 49 {
			time.Sleep(p.pace) // spreading the load over time, not synchronisation
		}
	}
}

func (p *orderedPublisher) close() {
	p.c.Disconnect(250)
	p.w.Disconnect(250)
}

func payload(i int) string { return fmt.Sprintf("m-%04d", i) }

func wait(t *testing.T, what string, tok mqtt.Token) {
	t.Helper()
	if !tok.WaitTimeout(mqttTimeout) {
		t.Fatalf("%s: no answer within %v", what, mqttTimeout)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// drainWithMarker subscribes c (again: VolantMQ v0.3.2 never restores subscriptions) to
// the marker topic and topics, then publishes a QoS 0 and a QoS 1 marker from another
// client and waits until c has both. The broker queues the messages of a stored session
// when it connects, before any later publish, in one queue per QoS class; so once both
// markers are in, everything restored has been delivered.
func drainWithMarker(t *testing.T, addr string, c mqtt.Client, got *collector, topics ...string) {
	t.Helper()
	subscribe(t, c, append([]string{markerTopic}, topics...)...)
	p := connect(t, addr, "marker-publisher", true, nil)
	wait(t, "publish marker", p.Publish(markerTopic, 0, false, "marker-0"))
	wait(t, "publish marker", p.Publish(markerTopic, 1, false, "marker-1"))
	p.Disconnect(250)
	got.waitFor(t, markerTopic, "marker-0")
	got.waitFor(t, markerTopic, "marker-1")
}

// maxSwap is how far from its place a message may arrive: VolantMQ's two router
// goroutines can store message i+1 before message i even when i+1 is published only
// after the witness got i (the witness may be served before the offline session; see
// the top of this file), and while one of them is descheduled the other can route more
// than one message ahead of it (2 places seen in CI, in the rolling update of
// containers_test.go, with nothing lost). s3persist itself keeps the order it was given;
// a displacement beyond this would be its fault.
const maxSwap = 3

// wantSequence checks that got is payload(0) .. payload(n-1): all, each once, in order
// up to maxSwap.
func wantSequence(t *testing.T, what string, got []string, n int) {
	t.Helper()
	if len(got) != n {
		t.Errorf("%s: %d messages, want %d", what, len(got), n)
	}
	wantPrefix(t, what, got, n, 0)
}

// wantPrefix checks that got holds payload(0) .. payload(len(got)-1), except that up
// to holes of the newest may be missing (replaced by as many newer ones), each at most
// once, in order up to maxSwap.
func wantPrefix(t *testing.T, what string, got []string, n, holes int) {
	t.Helper()
	seen := map[string]int{}
	swapped := 0
	for pos, p := range got {
		if prev, dup := seen[p]; dup {
			t.Errorf("%s: %q received twice (at %d and %d); %s", what, p, prev, pos, summarize(got))
			return
		}
		seen[p] = pos
		var i int
		if _, err := fmt.Sscanf(p, "m-%d", &i); err != nil || i < 0 || i >= n || payload(i) != p {
			t.Errorf("%s: unexpected message %q at %d", what, p, pos)
			return
		}
		if d := pos - i; d != 0 {
			swapped++
			if d > maxSwap || -d > maxSwap {
				t.Errorf("%s: %q arrived at %d, %d places from its own (more than the broker's reordering explains); %s",
					what, p, pos, d, summarize(got))
				return
			}
		}
	}
	for i := range max(len(got)-holes, 0) {
		if _, ok := seen[payload(i)]; !ok {
			t.Errorf("%s: %q is missing, and %d newer messages arrived; %s", what, payload(i), len(got)-i, summarize(got))
			return
		}
	}
	if swapped > 0 {
		t.Logf("%s: %d messages arrived one place from their own (VolantMQ's concurrent routing)", what, swapped)
	}
}

// summarize lists got briefly: its first 12 and last 3 payloads.
func summarize(got []string) string {
	if len(got) <= 15 {
		return strings.Join(got, " ")
	}
	return strings.Join(got[:12], " ") + " ... " + strings.Join(got[len(got)-3:], " ")
}

// collector records the messages a client receives, per topic, in order.
type collector struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every message; guarded by mu
	msgs    map[string][]received
}

type received struct {
	payload  string
	retained bool
	at       time.Time
}

func newCollector() *collector {
	return &collector{changed: make(chan struct{}), msgs: map[string][]received{}}
}

func (c *collector) handler(_ mqtt.Client, m mqtt.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs[m.Topic()] = append(c.msgs[m.Topic()], received{string(m.Payload()), m.Retained(), time.Now()})
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *collector) payloads(topic string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, r := range c.msgs[topic] {
		out = append(out, r.payload)
	}
	return out
}

// retained lists the payloads that arrived with the retain flag on topic.
func (c *collector) retained(topic string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, r := range c.msgs[topic] {
		if r.retained {
			out = append(out, r.payload)
		}
	}
	return out
}

// receivedAt is when the i-th message on topic arrived.
func (c *collector) receivedAt(topic string, i int) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.msgs[topic][i].at
}

// waitFor waits until a message with payload p arrived on topic.
func (c *collector) waitFor(t *testing.T, topic, p string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	for {
		c.mu.Lock()
		for _, r := range c.msgs[topic] {
			if r.payload == p {
				c.mu.Unlock()
				return
			}
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("no %q on %s within %v (got %d messages there)", p, topic, mqttTimeout, len(c.payloads(topic)))
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

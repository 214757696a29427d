package miniotest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/moby/client"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"

	"github.com/s3persist/s3persist/integration/images"
)

// needEngine skips the test when no Docker engine answers, saying so.
func needEngine(t *testing.T) {
	t.Helper()
	if err := images.DockerAvailable(t.Context()); err != nil {
		t.Skipf("no Docker engine reachable, the container path is not tested: %v", err)
	}
}

// labelled lists the ids of the containers (all states) and networks with the label
// key=value.
func labelled(t *testing.T, key, value string) (ctrs, nws []string) {
	t.Helper()
	cli, err := images.NewClient(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	f := client.Filters{}.Add("label", key+"="+value)
	cl, err := cli.ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cl.Items {
		ctrs = append(ctrs, c.ID)
	}
	nl, err := cli.NetworkList(t.Context(), client.NetworkListOptions{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nl.Items {
		nws = append(nws, n.ID)
	}
	return ctrs, nws
}

// TestDockerLifecycle: the container publishes on 127.0.0.1; restart, pause (docker kill)
// and resume keep the endpoint and the data; Stop removes the container and its network.
func TestDockerLifecycle(t *testing.T) {
	needEngine(t)
	bin, err := binaryPath()
	if err != nil {
		t.Fatal(err)
	}
	s, err := startDocker(t.Context(), bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	t.Logf("server: %v", s)
	if s.Kind != KindDocker || !strings.HasPrefix(s.Endpoint, "127.0.0.1:") || s.Secure {
		t.Fatalf("unexpected server %v", s)
	}
	if !strings.HasPrefix(s.ctr.image, images.MinioRepository+":") {
		t.Fatalf("image %q, want the local %s image", s.ctr.image, images.MinioRepository)
	}
	// Main's server has the same labels: look for this one's.
	ctrID, nwID := s.ctr.containerID(), s.ctr.network.ID
	if ctrs, nws := labelled(t, LabelOwner, ownerLabel()); !slices.Contains(ctrs, ctrID) || !slices.Contains(nws, nwID) {
		t.Fatalf("labelled containers %q and networks %q, want %s and %s among them", ctrs, nws, ctrID, nwID)
	}
	c := newClient(t, s)
	tgt := s.NewTarget(t)
	putString(t, c, tgt.Bucket, "k", "before restart")

	endpoint := s.Endpoint
	if err := s.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s.Endpoint != endpoint {
		t.Fatalf("endpoint changed from %s to %s", endpoint, s.Endpoint)
	}
	mustGet(t, c, tgt.Bucket, "k", "before restart")

	if err := s.Pause(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := health(s); err == nil {
		t.Fatal("the server answers while paused")
	}
	checkPausedThenResumed(t, s, c, tgt)

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := health(s); err == nil {
		t.Fatal("the server answers after Stop")
	}
	if ctrs, nws := labelled(t, LabelOwner, ownerLabel()); slices.Contains(ctrs, ctrID) || slices.Contains(nws, nwID) {
		t.Fatalf("after Stop: labelled containers %q and networks %q still hold %s or %s", ctrs, nws, ctrID, nwID)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

// TestDockerLeftoversOfDeadProcessesAreRemoved: a network labelled by a test process
// that has exited is removed by the next start; one of a live process is kept.
func TestDockerLeftoversOfDeadProcessesAreRemoved(t *testing.T) {
	needEngine(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	deadOwner := host + ":" + strconv.Itoa(dead.Process.Pid)
	ctx := context.Background()
	stale, err := tcnetwork.New(ctx, tcnetwork.WithLabels(map[string]string{LabelMiniotest: "1", LabelOwner: deadOwner}))
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Remove(ctx)
	live, err := tcnetwork.New(ctx, tcnetwork.WithLabels(map[string]string{LabelMiniotest: "1", LabelOwner: ownerLabel()}))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Remove(ctx)
	removeStaleContainers(ctx)
	if _, nws := labelled(t, LabelOwner, deadOwner); len(nws) != 0 {
		t.Fatalf("the network of a dead process is still there: %q", nws)
	}
	if _, nws := labelled(t, LabelOwner, ownerLabel()); !slices.Contains(nws, live.ID) {
		t.Fatalf("the networks of this process %q do not hold %s: want it kept", nws, live.ID)
	}
}

// TestModeSelection: S3PERSIST_MINIO_MODE forces a kind; a bad value is an error.
func TestModeSelection(t *testing.T) {
	bin, err := binaryPath()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvEndpoint, "")
	t.Setenv(EnvMinioBin, bin)
	t.Setenv(EnvMinioMode, "sideways")
	if _, err := Start(t.Context()); err == nil || !strings.Contains(err.Error(), EnvMinioMode) {
		t.Fatalf("Start with a bad mode: %v, want an error naming %s", err, EnvMinioMode)
	}
	t.Setenv(EnvMinioMode, KindBinary)
	s, err := Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if s.Kind != KindBinary {
		t.Fatalf("%s=%s started %v", EnvMinioMode, KindBinary, s)
	}
}

// TestNoEngineRunsTheBinaryAndSaysSoOnce: without an engine, Start runs the binary and
// says why, once per process.
func TestNoEngineRunsTheBinaryAndSaysSoOnce(t *testing.T) {
	bin, err := binaryPath()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvEndpoint, "")
	t.Setenv(EnvMinioBin, bin)
	t.Setenv(EnvMinioMode, "")
	report := filepath.Join(t.TempDir(), "report")
	t.Setenv(EnvReport, report)
	saved := dockerAvailable
	t.Cleanup(func() { dockerAvailable = saved })
	dockerAvailable = func(context.Context) error { return errors.New("no engine in this test") }
	for range 2 {
		s, err := Start(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
		if s.Kind != KindBinary {
			t.Fatalf("without an engine Start started %v", s)
		}
	}
	data, _ := os.ReadFile(report)
	// Another test of this process may have printed the note already; then there is none.
	if n := strings.Count(string(data), "no Docker engine reachable (no engine in this test); running MinIO from the binary"); n > 1 {
		t.Fatalf("the note was printed %d times:\n%s", n, data)
	}

	t.Setenv(EnvMinioMode, KindDocker)
	if _, err := Start(t.Context()); err == nil || !strings.Contains(err.Error(), "no engine in this test") {
		t.Fatalf("%s=%s without an engine: %v, want the engine's error", EnvMinioMode, KindDocker, err)
	}
}

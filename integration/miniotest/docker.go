package miniotest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/s3persist/s3persist/integration/images"
)

const (
	// dockerStartTimeout bounds building the image and starting the container.
	dockerStartTimeout = 5 * time.Minute
	// dockerCallTimeout bounds one call to the engine (kill, remove, list).
	dockerCallTimeout = time.Minute
	minioPort         = "9000/tcp"
)

// Labels of the containers and networks of the Docker mode. LabelOwner is "<host>:<pid>"
// of the test process, so that the next Start (on the same host) removes what a test
// process left when it died without Stop.
const (
	LabelMiniotest = "org.s3persist.miniotest" // "1"
	LabelOwner     = "org.s3persist.owner"
)

// dockerServer is a MinIO container on a network of its own. Its host port is chosen at
// the first start and kept across Pause and Resume, so that the endpoint does not change.
// mu guards state; it is never held while waiting for the engine or the network.
type dockerServer struct {
	ctr     testcontainers.Container
	network *testcontainers.DockerNetwork
	image   string
	addr    string // 127.0.0.1:port, published

	mu    sync.Mutex
	state int // stateRunning, stateBusy, statePaused or stateStopped (binary.go)
}

// dockerUnavailableNote is printed once per process when the Docker mode is not used
// because no engine answered.
var dockerUnavailableNote sync.Once

// ownerLabel is the LabelOwner value of this process.
func ownerLabel() string {
	host, _ := os.Hostname()
	return host + ":" + strconv.Itoa(os.Getpid())
}

// startDocker runs a MinIO container of the local image (built from minioBin by package
// images, or EnvMinioImage) with random root credentials on a new network, publishes its
// port on 127.0.0.1, and waits until it is healthy.
func startDocker(ctx context.Context, minioBin string) (*Server, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerStartTimeout)
	defer cancel()
	removeStaleContainers(ctx)
	image := strings.TrimSpace(os.Getenv(EnvMinioImage))
	if image == "" {
		var err error
		if image, err = images.Minio(ctx, minioBin); err != nil {
			return nil, fmt.Errorf("miniotest: the MinIO image: %w", err)
		}
	}
	user, err := randomHex(10)
	if err != nil {
		return nil, err
	}
	password, err := randomHex(20)
	if err != nil {
		return nil, err
	}
	user = "s3p" + user
	labels := map[string]string{LabelMiniotest: "1", LabelOwner: ownerLabel()}
	nw, err := tcnetwork.New(ctx, tcnetwork.WithLabels(labels))
	if err != nil {
		return nil, fmt.Errorf("miniotest: create a Docker network: %w", err)
	}
	d := &dockerServer{network: nw, image: image, state: stateStopped}

	// The host port is chosen here rather than by the engine so that it can be kept
	// across Pause and Resume (an engine-chosen port changes at each start). It is only
	// free when checked: if the engine cannot bind it, another is tried.
	for attempt := 1; ; attempt++ {
		if d.addr, err = freeAddr(); err != nil {
			return nil, fmt.Errorf("%w%s", err, d.cleanupAfterFailure())
		}
		_, port, _ := net.SplitHostPort(d.addr)
		d.ctr, err = testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
			ContainerRequest: testcontainers.ContainerRequest{
				Image:        image,
				ExposedPorts: []string{minioPort},
				Env: map[string]string{
					"MINIO_ROOT_USER":     user,
					"MINIO_ROOT_PASSWORD": password,
					"MINIO_CI_CD":         "1",
					"MINIO_UPDATE":        "off",
				},
				Cmd:            []string{"server", "/data"},
				Labels:         labels,
				Networks:       []string{nw.Name},
				NetworkAliases: map[string][]string{nw.Name: {"minio"}},
				HostConfigModifier: func(hc *container.HostConfig) {
					hc.PortBindings = network.PortMap{
						network.MustParsePort(minioPort): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: port}},
					}
					// An anonymous volume: the data stays on the engine's disk rather than
					// in the container's layered file system (fuse-overlayfs here, slow
					// for MinIO's many small writes and fsyncs). It survives docker kill
					// and start, and goes with the container (removed with its volumes).
					hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeVolume, Target: "/data"})
				},
				WaitingFor: wait.ForHTTP("/minio/health/live").WithPort(minioPort).WithStartupTimeout(StartTimeout),
			},
			Started: true,
		})
		if err == nil {
			break
		}
		if d.ctr != nil {
			_ = testcontainers.TerminateContainer(d.ctr)
			d.ctr = nil
		}
		msg := err.Error()
		if attempt == 3 || !(strings.Contains(msg, "port is already allocated") || strings.Contains(msg, "address already in use")) {
			return nil, fmt.Errorf("miniotest: start a MinIO container of %s: %w%s", image, err, d.cleanupAfterFailure())
		}
	}
	// Live is not ready: wait until S3 requests are served.
	if err := waitHealthy(ctx, "http://"+d.addr, nil); err != nil {
		return nil, fmt.Errorf("miniotest: MinIO container %s at %s: %w%s", image, d.addr, err, d.cleanupAfterFailure())
	}
	d.state = stateRunning
	return &Server{
		Endpoint:  d.addr,
		AccessKey: user,
		SecretKey: password,
		Region:    DefaultRegion,
		Kind:      KindDocker,
		ctr:       d,
	}, nil
}

// cleanupAfterFailure removes the container and network of a failed start; it returns ""
// or, to append to the start error, the removal's error.
func (d *dockerServer) cleanupAfterFailure() string {
	d.state = stateRunning // stop removes whatever exists
	if err := d.stop(); err != nil {
		return fmt.Sprintf(" (and %v)", err)
	}
	return ""
}

// containerID is the container's id, or "" before it exists.
func (d *dockerServer) containerID() string {
	if d.ctr == nil {
		return ""
	}
	return d.ctr.GetContainerID()
}

func (d *dockerServer) begin(op string, from int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state != from {
		return fmt.Errorf("miniotest: %s: the server is %s", op, stateName(d.state))
	}
	d.state = stateBusy
	return nil
}

func (d *dockerServer) end(to int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.state = to
}

func (d *dockerServer) isStopped() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state == stateStopped
}

// pause kills the container (SIGKILL, as `docker kill`); it keeps its file system, so
// the data, and its port binding.
func (d *dockerServer) pause(ctx context.Context) error {
	if err := d.begin("Pause", stateRunning); err != nil {
		return err
	}
	if err := d.kill(ctx); err != nil {
		d.end(stateRunning)
		return err
	}
	d.end(statePaused)
	return nil
}

func (d *dockerServer) kill(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dockerCallTimeout)
	defer cancel()
	cli, err := images.NewClient(ctx)
	if err != nil {
		return fmt.Errorf("miniotest: %w", err)
	}
	defer cli.Close()
	id := d.containerID()
	if _, err := cli.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return fmt.Errorf("miniotest: kill the MinIO container %.12s: %w", id, err)
	}
	// Wait until the engine reports it stopped, so that Resume can start it.
	for {
		st, err := d.ctr.State(ctx)
		if err != nil {
			return fmt.Errorf("miniotest: MinIO container %.12s: %w", id, err)
		}
		if !st.Running {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("miniotest: MinIO container %.12s still runs after SIGKILL: %w", id, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// start starts the stopped container again (same port, same file system) and waits
// until it serves S3 requests.
func (d *dockerServer) start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	if err := d.ctr.Start(ctx); err != nil {
		return fmt.Errorf("miniotest: start the MinIO container %.12s again: %w", d.containerID(), err)
	}
	if err := waitHealthy(ctx, "http://"+d.addr, nil); err != nil {
		return fmt.Errorf("miniotest: MinIO container %.12s at %s: %w", d.containerID(), d.addr, err)
	}
	return nil
}

func (d *dockerServer) resume(ctx context.Context) error {
	if err := d.begin("Resume", statePaused); err != nil {
		return err
	}
	if err := d.start(ctx); err != nil {
		d.end(statePaused)
		return err
	}
	d.end(stateRunning)
	return nil
}

// restart stops the container gracefully (SIGTERM, SIGKILL after StopGrace) and starts it
// again.
func (d *dockerServer) restart(ctx context.Context) error {
	if err := d.begin("Restart", stateRunning); err != nil {
		return err
	}
	grace := StopGrace
	if err := d.ctr.Stop(ctx, &grace); err != nil {
		d.end(stateRunning)
		return fmt.Errorf("miniotest: stop the MinIO container %.12s: %w", d.containerID(), err)
	}
	if err := d.start(ctx); err != nil {
		d.end(statePaused)
		return err
	}
	d.end(stateRunning)
	return nil
}

// stop removes the container and the network; calling it again does nothing.
func (d *dockerServer) stop() error {
	d.mu.Lock()
	switch d.state {
	case stateStopped:
		d.mu.Unlock()
		return nil
	case stateBusy:
		d.mu.Unlock()
		return fmt.Errorf("miniotest: Stop: the server is %s", stateName(stateBusy))
	}
	d.state = stateBusy
	d.mu.Unlock()

	var errs []error
	if d.ctr != nil {
		if err := testcontainers.TerminateContainer(d.ctr, testcontainers.StopTimeout(StopGrace)); err != nil {
			errs = append(errs, fmt.Errorf("miniotest: remove the MinIO container: %w", err))
		}
	}
	if d.network != nil {
		ctx, cancel := context.WithTimeout(context.Background(), dockerCallTimeout)
		defer cancel()
		if err := d.network.Remove(ctx); err != nil {
			errs = append(errs, fmt.Errorf("miniotest: remove the Docker network %s: %w", d.network.Name, err))
		}
	}
	d.end(stateStopped)
	return errors.Join(errs...)
}

// removeStaleContainers removes the containers and networks labelled by test processes
// of this host that no longer exist (they died without Stop). Failures are ignored: the
// leftovers do no harm to this run.
func removeStaleContainers(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, dockerCallTimeout)
	defer cancel()
	cli, err := images.NewClient(ctx)
	if err != nil {
		return
	}
	defer cli.Close()
	filters := client.Filters{}.Add("label", LabelMiniotest+"=1")
	ctrs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filters})
	if err == nil {
		for _, c := range ctrs.Items {
			if staleOwner(c.Labels[LabelOwner]) {
				_, _ = cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			}
		}
	}
	nws, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: filters})
	if err == nil {
		for _, n := range nws.Items {
			if staleOwner(n.Labels[LabelOwner]) {
				_, _ = cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{})
			}
		}
	}
}

// staleOwner reports whether owner ("<host>:<pid>") is a process of this host that no
// longer exists.
func staleOwner(owner string) bool {
	host, pidText, ok := strings.Cut(owner, ":")
	if me, _ := os.Hostname(); !ok || host != me {
		return false
	}
	pid, err := strconv.Atoi(pidText)
	return err == nil && pid > 0 && pid != os.Getpid() && !processExists(pid)
}

package miniotest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

const (
	// dockerPingTimeout bounds the check for a Docker engine.
	dockerPingTimeout = 5 * time.Second
	// dockerStartTimeout bounds pulling the image and starting the container.
	dockerStartTimeout = 5 * time.Minute
	minioPort          = "9000/tcp"
)

// dockerServer is a MinIO container.
type dockerServer struct {
	ctr     testcontainers.Container
	stopped atomic.Bool
}

// dockerAvailable returns nil if a Docker engine answers a ping within dockerPingTimeout.
func dockerAvailable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dockerPingTimeout)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		return err
	}
	return nil
}

// startDocker runs a MinIO container (image DefaultImage, or EnvMinioImage) with random
// root credentials, and waits until it is healthy. Testcontainers' reaper removes the
// container if the test process dies without Stop.
func startDocker(ctx context.Context) (*Server, error) {
	image := strings.TrimSpace(os.Getenv(EnvMinioImage))
	if image == "" {
		image = DefaultImage
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
	ctx, cancel := context.WithTimeout(ctx, dockerStartTimeout)
	defer cancel()
	ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        image,
			ExposedPorts: []string{minioPort},
			Env: map[string]string{
				"MINIO_ROOT_USER":     user,
				"MINIO_ROOT_PASSWORD": password,
				"MINIO_CI_CD":         "1",
				"MINIO_UPDATE":        "off",
			},
			Cmd:        []string{"server", "/data"},
			WaitingFor: wait.ForHTTP("/minio/health/live").WithPort(minioPort).WithStartupTimeout(StartTimeout),
		},
		Started: true,
	})
	d := &dockerServer{ctr: ctr}
	if err != nil {
		return nil, fmt.Errorf("miniotest: start MinIO container %s: %w%s (to use a MinIO binary instead of Docker, "+
			"run `bash scripts/install-minio.sh` and set %s to the path it prints)", image, err, d.cleanupAfterFailure(), EnvMinioBin)
	}
	endpoint, err := ctr.PortEndpoint(ctx, minioPort, "")
	if err != nil {
		return nil, fmt.Errorf("miniotest: MinIO container %s: mapped port: %w%s", image, err, d.cleanupAfterFailure())
	}
	// Live is not ready: wait until S3 requests are served.
	if err := waitHealthy(ctx, "http://"+endpoint, nil); err != nil {
		return nil, fmt.Errorf("miniotest: MinIO container %s at %s: %w%s", image, endpoint, err, d.cleanupAfterFailure())
	}
	return &Server{
		Endpoint:  endpoint,
		AccessKey: user,
		SecretKey: password,
		Region:    DefaultRegion,
		Kind:      KindDocker,
		ctr:       d,
	}, nil
}

// cleanupAfterFailure removes the container of a failed start; it returns "" or, to
// append to the start error, the removal's error.
func (d *dockerServer) cleanupAfterFailure() string {
	if err := d.stop(); err != nil {
		return fmt.Sprintf(" (and %v)", err)
	}
	return ""
}

// stop removes the container; calling it again does nothing.
func (d *dockerServer) stop() error {
	if d.stopped.Swap(true) {
		return nil
	}
	if err := testcontainers.TerminateContainer(d.ctr, testcontainers.StopTimeout(StopGrace)); err != nil {
		return fmt.Errorf("miniotest: remove MinIO container: %w", err)
	}
	return nil
}

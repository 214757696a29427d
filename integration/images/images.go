// Package images builds the container images of the integration tests on the local Docker
// engine. The project's machines have no container registry: nothing can be pulled, so
// every image is built here, FROM scratch, from a statically linked binary.
//
// # Images
//
//	s3persist-minio:<hash>     the MinIO server binary (scripts/install-minio.sh builds it
//	                           with CGO_ENABLED=0) as /minio, ENTRYPOINT ["/minio"]
//	s3persist-volantmq:<hash>  the example broker (examples/volantmq, built here with
//	                           CGO_ENABLED=0) as /volantmq-s3persist, with an empty /data
//	                           and /tmp, ENTRYPOINT the broker, CMD listening on
//	                           0.0.0.0:1883 with -data /data
//
// <hash> is the first 12 hex digits of the SHA-256 of the binary, so an image is built
// only when its binary changed; an existing tag is used as it is. Both images carry the
// label LabelImage. Nothing else is in them: no shell, no CA certificates, no user
// database (the processes run as root in the container).
//
// # testcontainers-go settings
//
// Importing this package sets two of testcontainers-go's variables, each unless it is
// already set:
//
//   - TESTCONTAINERS_RYUK_DISABLED=true: the reaper (ryuk) is an image that cannot be
//     pulled here; the tests remove their containers and networks themselves.
//   - TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1: the tests publish container ports on
//     127.0.0.1 only and reach containers only there. Without it, a test process that
//     itself runs in a container would be told to use the bridge's gateway address.
package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/go-archive"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// Image names (the tag is the binary's hash) and the label every image built here has.
const (
	MinioRepository  = "s3persist-minio"
	BrokerRepository = "s3persist-volantmq"
	LabelImage       = "org.s3persist.image" // "minio" or "volantmq"
)

// BrokerPort is the MQTT port the broker image listens on by default (its CMD).
const BrokerPort = "1883/tcp"

// BrokerBinary is the path of the broker in its image, its ENTRYPOINT. A container that
// sets its own command (flags only) must pass -listen 0.0.0.0:<port>, or the broker
// listens on the container's loopback alone.
const BrokerBinary = "/volantmq-s3persist"

// testcontainers-go's variables that this package sets (see the package documentation).
const (
	EnvRyukDisabled = "TESTCONTAINERS_RYUK_DISABLED"
	EnvHostOverride = "TESTCONTAINERS_HOST_OVERRIDE"
)

const (
	// pingTimeout bounds the check for a Docker engine.
	pingTimeout = 5 * time.Second
	// buildTimeout bounds the build of one image (the broker's compilation included).
	buildTimeout = 10 * time.Minute
	hashDigits   = 12
)

func init() {
	// Before testcontainers-go reads its configuration (once, at its first use).
	if _, ok := os.LookupEnv(EnvRyukDisabled); !ok {
		_ = os.Setenv(EnvRyukDisabled, "true")
	}
	if _, ok := os.LookupEnv(EnvHostOverride); !ok {
		_ = os.Setenv(EnvHostOverride, "127.0.0.1")
	}
}

// NewClient returns a client of the Docker engine that testcontainers-go uses (DOCKER_HOST,
// its configuration file, the default socket). Close it after use.
func NewClient(ctx context.Context) (*testcontainers.DockerClient, error) {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return nil, fmt.Errorf("images: Docker client: %w", err)
	}
	return cli, nil
}

// DockerAvailable returns nil if a Docker engine answers a ping within a few seconds,
// else an error saying why not.
func DockerAvailable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	cli, err := NewClient(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("images: ping the Docker engine: %w", err)
	}
	return nil
}

// Minio returns the reference of the MinIO image made from minioBin, a statically linked
// MinIO server binary, building the image if that tag does not exist yet.
func Minio(ctx context.Context, minioBin string) (string, error) {
	hash, err := fileHash(minioBin)
	if err != nil {
		return "", fmt.Errorf("images: MinIO binary: %w", err)
	}
	ref := MinioRepository + ":" + hash
	dockerfile := `FROM scratch
COPY minio /minio
EXPOSE 9000
ENTRYPOINT ["/minio"]
`
	err = ensure(ctx, ref, "minio", dockerfile, func(dir string) error {
		return copyFile(minioBin, filepath.Join(dir, "minio"))
	})
	return ref, err
}

var broker struct {
	mu  sync.Mutex
	ref string // set once built in this process
}

// Broker returns the reference of the image of the example broker (examples/volantmq),
// building the broker with CGO_ENABLED=0 (the Go build cache makes this quick after the
// first time) and then the image if its tag does not exist yet. Within a process the
// broker is built once.
func Broker(ctx context.Context) (string, error) {
	broker.mu.Lock()
	defer broker.mu.Unlock()
	if broker.ref != "" {
		return broker.ref, nil
	}
	src, err := brokerSource()
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp("", "s3persist-broker-build-*")
	if err != nil {
		return "", fmt.Errorf("images: %w", err)
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "volantmq-s3persist")
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("images: build the example broker in %s (CGO_ENABLED=0 go build): %w\n%s", src, err, out)
	}
	hash, err := fileHash(bin)
	if err != nil {
		return "", fmt.Errorf("images: broker binary: %w", err)
	}
	ref := BrokerRepository + ":" + hash
	dockerfile := `FROM scratch
COPY volantmq-s3persist ` + BrokerBinary + `
COPY empty /data
COPY empty /tmp
EXPOSE 1883
ENTRYPOINT ["` + BrokerBinary + `"]
CMD ["-listen", "0.0.0.0:1883", "-data", "/data"]
`
	err = ensure(ctx, ref, "volantmq", dockerfile, func(dir string) error {
		if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
			return err
		}
		return os.Rename(bin, filepath.Join(dir, "volantmq-s3persist"))
	})
	if err != nil {
		return "", err
	}
	broker.ref = ref
	return ref, nil
}

// brokerSource finds examples/volantmq: beside this package's source (integration/images),
// else above the working directory (a test binary runs in its package's directory).
func brokerSource() (string, error) {
	rel := filepath.Join("examples", "volantmq")
	var tried []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		dir := filepath.Join(filepath.Dir(file), "..", "..", rel)
		if isFile(filepath.Join(dir, "go.mod")) {
			return filepath.Clean(dir), nil
		}
		tried = append(tried, dir)
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			if isFile(filepath.Join(dir, rel, "go.mod")) {
				return filepath.Join(dir, rel), nil
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
		tried = append(tried, "above "+wd)
	}
	return "", fmt.Errorf("images: cannot find the example broker's source %s (looked %s)", rel, strings.Join(tried, ", "))
}

// ensure builds ref from dockerfile and the files that fill writes into the build
// context directory, unless an image ref exists.
func ensure(ctx context.Context, ref, kind, dockerfile string, fill func(dir string) error) error {
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	cli, err := NewClient(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	if _, err := cli.ImageInspect(ctx, ref); err == nil {
		return nil
	} else if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("images: inspect %s: %w", ref, err)
	}

	dir, err := os.MkdirTemp("", "s3persist-image-*")
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	if err := fill(dir); err != nil {
		return fmt.Errorf("images: build context of %s: %w", ref, err)
	}
	tarball, err := archive.TarWithOptions(dir, &archive.TarOptions{})
	if err != nil {
		return fmt.Errorf("images: build context of %s: %w", ref, err)
	}
	defer tarball.Close()
	res, err := cli.ImageBuild(ctx, tarball, client.ImageBuildOptions{
		Tags:        []string{ref},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{LabelImage: kind},
	})
	if err != nil {
		return fmt.Errorf("images: build %s: %w", ref, err)
	}
	defer res.Body.Close()
	if err := readBuildOutput(res.Body); err != nil {
		return fmt.Errorf("images: build %s: %w", ref, err)
	}
	if _, err := cli.ImageInspect(ctx, ref); err != nil {
		return fmt.Errorf("images: build %s: the image is missing after the build: %w", ref, err)
	}
	return nil
}

// readBuildOutput reads the engine's JSON stream of a build to its end and returns the
// build's error, with the end of its output.
func readBuildOutput(r io.Reader) error {
	var out bytes.Buffer
	dec := json.NewDecoder(r)
	for {
		var msg struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read the build output: %w", err)
		}
		out.WriteString(msg.Stream)
		if msg.ErrorDetail != nil || msg.Error != "" {
			text := msg.Error
			if msg.ErrorDetail != nil && msg.ErrorDetail.Message != "" {
				text = msg.ErrorDetail.Message
			}
			tail := out.String()
			if len(tail) > 2000 {
				tail = tail[len(tail)-2000:]
			}
			return fmt.Errorf("%s\n--- build output ---\n%s", text, strings.TrimRight(tail, "\n"))
		}
	}
}

// fileHash returns the first hashDigits hex digits of the SHA-256 of the file.
func fileHash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:hashDigits], nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

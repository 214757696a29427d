package miniotest

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/s3persist/s3persist/integration/images"
)

// Kinds of [Server].
const (
	KindExternal = "external" // an existing S3 service given by environment variables
	KindDocker   = "docker"   // a MinIO container of a local image, run with testcontainers-go
	KindBinary   = "binary"   // a MinIO server process run from a local binary
)

// MinioVersion is the version of github.com/minio/minio that scripts/install-minio.sh
// installs; the binary lookup uses it to find the installed binary.
const MinioVersion = "v0.0.0-20260212201848-7aac2a2c5b7c"

// Values of EnvMinioMode besides KindDocker and KindBinary.
const ModeAuto = "auto" // the default: Docker if an engine answers, else the binary

// DefaultRegion is the region of the servers that this package starts.
const DefaultRegion = "us-east-1"

// Environment variables read by [Start]; see the package documentation.
const (
	EnvEndpoint      = "S3PERSIST_TEST_S3_ENDPOINT"
	EnvAccessKey     = "S3PERSIST_TEST_S3_ACCESS_KEY"
	EnvSecretKey     = "S3PERSIST_TEST_S3_SECRET_KEY"
	EnvSecure        = "S3PERSIST_TEST_S3_SECURE"
	EnvRegion        = "S3PERSIST_TEST_S3_REGION"
	EnvBucket        = "S3PERSIST_TEST_S3_BUCKET"
	EnvAllowNonEmpty = "S3PERSIST_TEST_S3_ALLOW_NONEMPTY"
	EnvMinioBin      = "S3PERSIST_MINIO_BIN"
	EnvToolsDir      = "S3PERSIST_TOOLS_DIR"
	EnvMinioImage    = "S3PERSIST_MINIO_IMAGE"
	EnvMinioMode     = "S3PERSIST_MINIO_MODE"
	EnvReport        = "S3PERSIST_MINIOTEST_REPORT"
)

// Timeouts.
const (
	// StartTimeout bounds how long Start, Resume and Restart wait for a started server
	// to become healthy (less if the context's deadline is earlier).
	StartTimeout = 60 * time.Second
	// StopGrace is how long a server gets to exit after SIGTERM before SIGKILL.
	StopGrace = 10 * time.Second
	// cleanupTimeout bounds the removal of a test's objects and bucket.
	cleanupTimeout = 2 * time.Minute
)

// Server is an S3 endpoint for tests. Its exported fields are set by [Start] and never
// change afterwards, also across [Server.Pause] and [Server.Resume]; read them freely.
// Its methods are safe for concurrent use, but lifecycle calls (Pause, Resume, Restart,
// Stop) must not overlap: one that finds another in progress returns an error.
//
// Printing a Server (with %v, %+v or %#v) never shows the secret key.
type Server struct {
	Endpoint  string // host:port
	AccessKey string
	SecretKey string
	Secure    bool // HTTPS
	Region    string
	Kind      string // KindExternal, KindDocker or KindBinary

	// RootCAs holds the CA of a server started with Options.TLS; nil otherwise (the
	// system roots verify an external HTTPS service).
	RootCAs *x509.CertPool

	// sharedBucket is the existing bucket of the external mode (EnvBucket), or "".
	sharedBucket string

	bin *binaryServer // KindBinary
	ctr *dockerServer // KindDocker
}

// String describes the server without its secret key.
func (s *Server) String() string {
	scheme := "http"
	if s.Secure {
		scheme = "https"
	}
	d := fmt.Sprintf("%s S3 at %s://%s (region %s, access key %s)", s.Kind, scheme, s.Endpoint, s.Region, s.AccessKey)
	if s.sharedBucket != "" {
		d += fmt.Sprintf(", shared bucket %q", s.sharedBucket)
	}
	if s.ctr != nil {
		d += fmt.Sprintf(", image %s, container %.12s, network %s", s.ctr.image, s.ctr.containerID(), s.ctr.network.Name)
	}
	return d
}

// GoString is String, so that %#v does not print the secret key either.
func (s *Server) GoString() string { return s.String() }

// Start starts (or, for the external mode, checks) an S3 server as described in the
// package documentation. ctx bounds the start; the server itself runs until Stop.
func Start(ctx context.Context) (*Server, error) {
	if os.Getenv(EnvEndpoint) != "" {
		return startExternal(ctx)
	}
	mode := strings.TrimSpace(os.Getenv(EnvMinioMode))
	switch mode {
	case "", ModeAuto, KindDocker, KindBinary:
	default:
		return nil, fmt.Errorf("miniotest: %s=%q: want %s, %s or %s (or unset)", EnvMinioMode, mode, ModeAuto, KindDocker, KindBinary)
	}
	if mode == KindBinary {
		bin, err := minioBinary()
		if err != nil {
			return nil, fmt.Errorf("%w (%s=%s)", err, EnvMinioMode, KindBinary)
		}
		return startBinary(ctx, bin)
	}
	dockerErr := dockerAvailable(ctx)
	if dockerErr == nil || mode == KindDocker {
		if dockerErr != nil {
			return nil, fmt.Errorf("miniotest: %s=%s, but %w", EnvMinioMode, KindDocker, dockerErr)
		}
		// An engine answers: the container path must work. Falling back to the binary
		// here would hide a broken container path from CI.
		var bin string
		if os.Getenv(EnvMinioImage) == "" {
			var err error
			if bin, err = minioBinary(); err != nil {
				return nil, fmt.Errorf("%w (a Docker engine answers, and the MinIO image is built from the MinIO binary)", err)
			}
		}
		return startDocker(ctx, bin)
	}
	bin, err := minioBinary()
	if err != nil {
		return nil, fmt.Errorf("%w; and no Docker engine is reachable (%v)", err, dockerErr)
	}
	dockerUnavailableNote.Do(func() {
		announce(fmt.Sprintf("miniotest: no Docker engine reachable (%v); running MinIO from the binary %s", dockerErr, bin))
	})
	return startBinary(ctx, bin)
}

// dockerAvailable is images.DockerAvailable; a test replaces it to act as if no engine
// answered.
var dockerAvailable = images.DockerAvailable

// minioBinary returns the MinIO binary: EnvMinioBin, else the one that
// scripts/install-minio.sh installs, else "minio" on PATH.
func minioBinary() (string, error) {
	if bin := os.Getenv(EnvMinioBin); bin != "" {
		return bin, nil
	}
	bin, err := findBinary()
	if err != nil {
		return "", fmt.Errorf("miniotest: no MinIO binary: %v; %s is not set. Run the tests with "+
			"`bash scripts/test.sh` (it installs MinIO), or run `bash scripts/install-minio.sh` and set %s to "+
			"the path it prints, or set %s and its credentials to use an existing S3 service",
			err, EnvMinioBin, EnvMinioBin, EnvEndpoint)
	}
	return bin, nil
}

// announce writes a line about the server choice to stderr and, if EnvReport names a
// file, appends it there (go test shows a passing package's output only with -v; the
// test command prints that file).
func announce(line string) {
	fmt.Fprintln(os.Stderr, line)
	path := os.Getenv(EnvReport)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "miniotest: %s: %v\n", EnvReport, err)
		return
	}
	defer f.Close()
	// One write per line: appends of a few hundred bytes from parallel test binaries do
	// not interleave.
	if _, err := f.WriteString(line + "\n"); err != nil {
		fmt.Fprintf(os.Stderr, "miniotest: %s: %v\n", EnvReport, err)
	}
}

// Stop stops and removes what Start started: the binary server (and its temporary
// directory) or the container. For the external mode it does nothing. Calling Stop again
// returns nil.
func (s *Server) Stop() error {
	switch {
	case s.bin != nil:
		return s.bin.stop()
	case s.ctr != nil:
		return s.ctr.stop()
	}
	return nil
}

// Pause takes the server down abruptly (SIGKILL), as in a crash or an outage: requests in
// flight fail, new connections are refused. The data and the port are kept for Resume.
// The binary server's process is killed; the container is killed (`docker kill`) and
// kept, with its file system and its host port. The external server does not support
// it: the error wraps errors.ErrUnsupported. It returns within a few seconds.
func (s *Server) Pause(ctx context.Context) error {
	switch {
	case s.bin != nil:
		return s.bin.pause()
	case s.ctr != nil:
		return s.ctr.pause(ctx)
	}
	return s.unsupported("Pause")
}

// Resume starts a paused server again on the same port and data, and waits until it is
// healthy (see Pause for the kinds of server that support it).
func (s *Server) Resume(ctx context.Context) error {
	switch {
	case s.bin != nil:
		return s.bin.resume(ctx)
	case s.ctr != nil:
		return s.ctr.resume(ctx)
	}
	return s.unsupported("Resume")
}

// Restart stops a running server gracefully (SIGTERM, SIGKILL after StopGrace) and starts
// it again on the same port and data, and waits until it is healthy. If it stopped but
// cannot start again, it is left paused (Resume may be tried). The container is stopped
// (`docker stop`) and started. See Pause for the kinds of server that support it.
func (s *Server) Restart(ctx context.Context) error {
	switch {
	case s.bin != nil:
		return s.bin.restart(ctx)
	case s.ctr != nil:
		return s.ctr.restart(ctx)
	}
	return s.unsupported("Restart")
}

func (s *Server) unsupported(op string) error {
	return fmt.Errorf("miniotest: %s is supported only by the %s and %s servers, this one is %s: %w",
		op, KindBinary, KindDocker, s.Kind, errors.ErrUnsupported)
}

// Client returns a new minio-go client for the server, with a transport of its own.
func (s *Server) Client() (*minio.Client, error) {
	c, _, err := s.newClient()
	return c, err
}

// newClient is Client that also returns the client's transport, so that a caller that
// is done with the client can close its idle connections: leak checks count them.
func (s *Server) newClient() (*minio.Client, *http.Transport, error) {
	tr, err := minio.DefaultTransport(s.Secure)
	if err != nil {
		return nil, nil, fmt.Errorf("miniotest: transport for %s: %w", s.Endpoint, err)
	}
	if s.RootCAs != nil {
		tr.TLSClientConfig = tlsConfig(s.RootCAs)
	}
	c, err := minio.New(s.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Secure:    s.Secure,
		Region:    s.Region,
		Transport: tr,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("miniotest: minio client for %s: %w", s.Endpoint, err)
	}
	return c, tr, nil
}

// Target is the place in the server that belongs to one test: every key the test writes
// must start with Prefix, in Bucket.
type Target struct {
	Bucket string
	// Prefix is "" when Bucket is the test's own (a fresh bucket). With a shared bucket
	// (S3PERSIST_TEST_S3_BUCKET) it is a fresh "s3p-<random hex>/".
	Prefix string
}

// NewTarget gives t a place of its own in the server: a fresh, empty bucket named
// "s3p-<random hex>", or, if S3PERSIST_TEST_S3_BUCKET names a shared bucket, a fresh key
// prefix in it. A cleanup registered with t removes every object (all versions) and
// incomplete upload under the target, and the bucket if it was created here. NewTarget
// calls t.Fatal if it cannot create the bucket; a failing cleanup is a test error. A test
// that pauses the server must resume it before it ends, or its cleanup fails (after Stop
// the cleanup does nothing: the binary server's data is gone).
func (s *Server) NewTarget(t testing.TB) Target {
	t.Helper()
	client, tr, err := s.newClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections) // runs after the cleanup below: cleanups are LIFO
	suffix, err := randomHex(8)
	if err != nil {
		t.Fatal(err)
	}
	if s.sharedBucket != "" {
		tgt := Target{Bucket: s.sharedBucket, Prefix: "s3p-" + suffix + "/"}
		t.Cleanup(func() { s.cleanup(t, client, tgt, false) })
		return tgt
	}
	tgt := Target{Bucket: "s3p-" + suffix}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := client.MakeBucket(ctx, tgt.Bucket, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		t.Fatalf("miniotest: create bucket %q on %s: %v", tgt.Bucket, s.Endpoint, err)
	}
	t.Cleanup(func() { s.cleanup(t, client, tgt, true) })
	return tgt
}

// TargetPrefixLen is the length of the Prefix of every Target of s: 0 with a bucket per
// test, len("s3p-<16 hex digits>/") in a shared bucket. Key-length tests subtract it.
func (s *Server) TargetPrefixLen() int {
	if s.sharedBucket != "" {
		return len("s3p-") + 16 + len("/")
	}
	return 0
}

// cleanup removes everything under tgt and, if removeBucket, the bucket.
func (s *Server) cleanup(t testing.TB, client *minio.Client, tgt Target, removeBucket bool) {
	t.Helper()
	if (s.bin != nil && s.bin.isStopped()) || (s.ctr != nil && s.ctr.isStopped()) {
		return // the data went with the server's directory or container
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := emptyPrefix(ctx, client, tgt.Bucket, tgt.Prefix); err != nil {
		t.Errorf("miniotest: cleanup of %s: %v", tgt, err)
		return
	}
	if removeBucket {
		if err := client.RemoveBucket(ctx, tgt.Bucket); err != nil {
			t.Errorf("miniotest: cleanup: remove bucket %q: %v", tgt.Bucket, err)
		}
	}
}

// String returns "bucket/prefix".
func (tgt Target) String() string { return tgt.Bucket + "/" + tgt.Prefix }

// emptyPrefix removes all object versions and incomplete uploads under prefix in bucket.
func emptyPrefix(ctx context.Context, client *minio.Client, bucket, prefix string) error {
	// minio-go's listing goroutine can block forever unless its channel is read to the
	// end, so read it all before removing anything.
	var uploads []string
	var listErr error
	for up := range client.ListIncompleteUploads(ctx, bucket, prefix, true) {
		if up.Err != nil {
			listErr = cmp.Or(listErr, up.Err)
			continue
		}
		uploads = append(uploads, up.Key)
	}
	if listErr != nil {
		return fmt.Errorf("list incomplete uploads: %w", listErr)
	}
	for _, key := range uploads {
		if err := client.RemoveIncompleteUpload(ctx, bucket, key); err != nil {
			return fmt.Errorf("remove incomplete upload %q: %w", key, err)
		}
	}

	// The iterator forms stop cleanly when the consumer stops; ctx is cancelled on return
	// as ListObjectsIter asks.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	listing := client.ListObjectsIter(ctx, bucket, minio.ListObjectsOptions{
		Prefix:       prefix,
		Recursive:    true,
		WithVersions: true,
	})
	objects := func(yield func(minio.ObjectInfo) bool) {
		for obj := range listing {
			if obj.Err != nil {
				listErr = obj.Err
				return
			}
			if !yield(obj) {
				return
			}
		}
	}
	results, err := client.RemoveObjectsWithIter(ctx, bucket, objects, minio.RemoveObjectsOptions{})
	if err != nil {
		return fmt.Errorf("remove objects: %w", err)
	}
	for res := range results {
		if res.Err != nil {
			return fmt.Errorf("remove %q (version %q): %w", res.ObjectName, res.ObjectVersionID, res.Err)
		}
	}
	if listErr != nil {
		return fmt.Errorf("list objects: %w", listErr)
	}
	return nil
}

// randomHex returns 2n random lowercase hex digits.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("miniotest: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// envBool reports whether the variable is set to a true value ("1", "true", ...).
func envBool(name string) (bool, error) {
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("miniotest: %s=%q is not a boolean", name, v)
	}
	return b, nil
}

// Main is the body of a TestMain that runs the package's tests against one server: it
// starts the server, stores it in *srv, runs the tests, stops the server, and exits with
// the tests' status (1 if the server cannot be started or stopped).
//
//	var srv *miniotest.Server
//
//	func TestMain(m *testing.M) { miniotest.Main(m, &srv) }
func Main(m *testing.M, srv **Server) {
	os.Exit(run(m, srv))
}

func run(m *testing.M, srv **Server) (code int) {
	s, err := Start(context.Background()) // every way of starting has its own time limit
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	announce(fmt.Sprintf("miniotest: %s: using %s", filepath.Base(os.Args[0]), s))
	*srv = s
	defer func() {
		if err := s.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if code == 0 {
				code = 1
			}
		}
	}()
	return m.Run()
}

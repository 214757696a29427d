package miniotest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// srv is the server of this test binary, started by Main.
var srv *Server

// helperEnv makes the test binary a helper process instead of running the tests; see
// TestServerDiesWithTestProcess.
const helperEnv = "MINIOTEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "orphan" {
		orphanHelper()
		return
	}
	Main(m, &srv)
}

// orphanHelper starts a binary server, reports its pid and directory, and exits without
// Stop.
func orphanHelper() {
	s, err := startBinary(context.Background(), mustBinaryPath())
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Printf("PID %d ROOT %s\n", s.bin.proc.cmd.Process.Pid, s.bin.root)
	os.Exit(0)
}

// mustBinaryPath returns the minio binary that Start would run, or exits.
func mustBinaryPath() string {
	p, err := binaryPath()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return p
}

func binaryPath() (string, error) {
	if p := os.Getenv(EnvMinioBin); p != "" {
		return p, nil
	}
	p, err := findBinary()
	if err != nil {
		return "", fmt.Errorf("the harness tests need the minio binary: %w; run `bash scripts/test.sh` or "+
			"`bash scripts/install-minio.sh` and set %s", err, EnvMinioBin)
	}
	return p, nil
}

// startOwnBinary starts a binary server for one test, stopped at its end.
func startOwnBinary(t *testing.T) *Server {
	t.Helper()
	bin, err := binaryPath()
	if err != nil {
		t.Fatal(err)
	}
	s, err := startBinary(t.Context(), bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func newClient(t testing.TB, s *Server) *minio.Client {
	t.Helper()
	c, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func putString(t testing.TB, c *minio.Client, bucket, key, value string) {
	t.Helper()
	if _, err := c.PutObject(t.Context(), bucket, key, strings.NewReader(value), int64(len(value)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put %s/%s: %v", bucket, key, err)
	}
}

func getString(ctx context.Context, c *minio.Client, bucket, key string) (string, error) {
	obj, err := c.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return "", err
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	return string(data), err
}

func mustGet(t testing.TB, c *minio.Client, bucket, key, want string) {
	t.Helper()
	got, err := getString(t.Context(), c, bucket, key)
	if err != nil {
		t.Fatalf("get %s/%s: %v", bucket, key, err)
	}
	if got != want {
		t.Fatalf("get %s/%s = %q, want %q", bucket, key, got, want)
	}
}

func keys(t testing.TB, c *minio.Client, bucket, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var ks []string
	for obj := range c.ListObjectsIter(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			t.Fatalf("list %s/%s: %v", bucket, prefix, obj.Err)
		}
		ks = append(ks, obj.Key)
	}
	return ks
}

func health(s *Server) error {
	scheme := "http"
	if s.Secure {
		scheme = "https"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return probe(ctx, http.DefaultClient, scheme+"://"+s.Endpoint+"/minio/health/live")
}

func TestServerFromMain(t *testing.T) {
	if srv == nil {
		t.Fatal("Main did not set srv")
	}
	if srv.Endpoint == "" || srv.AccessKey == "" || srv.SecretKey == "" || srv.Region == "" {
		t.Fatalf("incomplete server: %v", srv)
	}
	t.Logf("server: %v", srv)
	if srv.Kind != KindExternal {
		if err := health(srv); err != nil {
			t.Fatal(err)
		}
	}
	c := newClient(t, srv)
	tgt := srv.NewTarget(t)
	key := tgt.Prefix + "dir/hello.txt"
	putString(t, c, tgt.Bucket, key, "hello, world")
	mustGet(t, c, tgt.Bucket, key, "hello, world")
	if got := keys(t, c, tgt.Bucket, tgt.Prefix); len(got) != 1 || got[0] != key {
		t.Fatalf("listing = %q, want [%q]", got, key)
	}
}

func TestNewTargetBucketCleanup(t *testing.T) {
	c := newClient(t, srv)
	var tgt Target
	t.Run("user", func(t *testing.T) {
		tgt = srv.NewTarget(t)
		if !regexp.MustCompile(`^s3p-[0-9a-f]{16}$`).MatchString(tgt.Bucket) && srv.sharedBucket == "" {
			t.Errorf("bucket name %q", tgt.Bucket)
		}
		for i := range 5 {
			putString(t, c, tgt.Bucket, fmt.Sprintf("%sk/%d", tgt.Prefix, i), "v")
		}
		// An incomplete multipart upload must not keep the bucket alive.
		core := minio.Core{Client: c}
		if _, err := core.NewMultipartUpload(t.Context(), tgt.Bucket, tgt.Prefix+"mpu", minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	if srv.sharedBucket != "" {
		if got := keys(t, c, tgt.Bucket, tgt.Prefix); len(got) != 0 {
			t.Fatalf("after cleanup, the prefix holds %q", got)
		}
		return
	}
	ok, err := c.BucketExists(t.Context(), tgt.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Fatalf("bucket %q still exists after the test's cleanup", tgt.Bucket)
	}
}

func TestNewTargetsAreDistinct(t *testing.T) {
	a, b := srv.NewTarget(t), srv.NewTarget(t)
	if a == b {
		t.Fatalf("two targets are equal: %v", a)
	}
}

func TestNoSecretInOutput(t *testing.T) {
	s := &Server{Endpoint: "127.0.0.1:1", AccessKey: "AK", SecretKey: "very-secret-value", Region: "r", Kind: KindBinary}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(format, s); strings.Contains(out, s.SecretKey) {
			t.Errorf("%s prints the secret: %s", format, out)
		}
	}
}

func TestInstallScriptVersion(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "scripts", "install-minio.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "\nMINIO_VERSION=" + MinioVersion + "\n"; !bytes.Contains(data, []byte(want)) {
		t.Fatalf("scripts/install-minio.sh does not set %q: keep it and MinioVersion in sync", strings.TrimSpace(want))
	}
}

// TestBinaryLifecycle: restart, pause and resume keep the port and the data; Stop ends
// the process and removes the directory.
func TestBinaryLifecycle(t *testing.T) {
	s := startOwnBinary(t)
	if s.Kind != KindBinary || !strings.HasPrefix(s.Endpoint, "127.0.0.1:") || s.Secure {
		t.Fatalf("unexpected server %v", s)
	}
	if err := health(s); err != nil {
		t.Fatal(err)
	}
	root := s.bin.root
	if _, err := os.Stat(filepath.Join(root, dataDirName)); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, s)
	tgt := s.NewTarget(t)
	putString(t, c, tgt.Bucket, "k", "before restart")

	endpoint := s.Endpoint
	pid := s.bin.proc.cmd.Process.Pid
	if err := s.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s.Endpoint != endpoint {
		t.Fatalf("endpoint changed from %s to %s", endpoint, s.Endpoint)
	}
	if processExists(pid) {
		t.Fatalf("the first server process (pid %d) still exists after Restart", pid)
	}
	mustGet(t, c, tgt.Bucket, "k", "before restart")

	pid = s.bin.proc.cmd.Process.Pid
	if err := s.Pause(t.Context()); err != nil {
		t.Fatal(err)
	}
	if processExists(pid) {
		t.Fatalf("the server process (pid %d) still exists after Pause", pid)
	}
	if err := health(s); err == nil {
		t.Fatal("the server answers while paused")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	_, err := getString(ctx, c, tgt.Bucket, "k")
	cancel()
	if err == nil {
		t.Fatal("get succeeded while paused")
	}
	checkPausedThenResumed(t, s, c, tgt)

	pid = s.bin.proc.cmd.Process.Pid
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if processExists(pid) {
		t.Fatalf("the server process (pid %d) still exists after Stop", pid)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the server directory %s is still there after Stop (%v)", root, err)
	}
	if err := health(s); err == nil {
		t.Fatal("the server answers after Stop")
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := s.Resume(t.Context()); err == nil {
		t.Fatal("Resume after Stop succeeded")
	}
	// The target's cleanup runs after Stop and must not fail: the data is gone anyway.
}

// TestBinaryStopWhilePaused: Stop of a paused server removes its directory.
func TestBinaryStopWhilePaused(t *testing.T) {
	s := startOwnBinary(t)
	if err := s.Pause(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.bin.root); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the server directory is still there after Stop (%v)", err)
	}
}

// TestBinaryStartFailure: a server that exits at once gives an error with its output, and
// leaves no directory behind.
func TestBinaryStartFailure(t *testing.T) {
	fake := filepath.Join(t.TempDir(), "minio")
	script := "#!/bin/sh\necho 'fake minio: cannot start, args:' \"$@\" >&2\nexit 3\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), rootPattern))
	start := time.Now()
	_, err := startBinary(t.Context(), fake)
	if err == nil {
		t.Fatal("start of a failing binary succeeded")
	}
	t.Logf("error: %v", err)
	for _, want := range []string{"fake minio: cannot start", "exit status 3", "server --address 127.0.0.1:", "--console-address 127.0.0.1:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not contain %q", want)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the failure took %v to notice", d)
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), rootPattern))
	if len(after) > len(before) {
		t.Errorf("directories left behind: before %q, after %q", before, after)
	}

	if _, err := startBinary(t.Context(), filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), EnvMinioBin) {
		t.Errorf("start of a missing binary: %v, want an error naming %s", err, EnvMinioBin)
	}
}

// TestBinaryPortTaken: when MinIO finds its port taken (between the check and its bind),
// Start tries other ports.
func TestBinaryPortTaken(t *testing.T) {
	minioBin, err := binaryPath()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	counter := filepath.Join(dir, "count")
	fake := filepath.Join(dir, "minio")
	// The first run fails as MinIO does when its port is taken; the next ones run MinIO.
	script := fmt.Sprintf(`#!/bin/sh
echo run >> %q
if [ "$(wc -l < %q)" -eq 1 ]; then
	echo 'FATAL Unable to start the server: Specified port is already in use' >&2
	exit 1
fi
exec %q "$@"
`, counter, counter, minioBin)
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := startBinary(t.Context(), fake)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	}()
	if err := health(s); err != nil {
		t.Fatal(err)
	}
	runs, _ := os.ReadFile(counter)
	if n := strings.Count(string(runs), "run"); n != 2 {
		t.Fatalf("the binary ran %d times, want 2", n)
	}

	// A port that stays taken gives up after three tries, with MinIO's message.
	always := filepath.Join(dir, "minio-always")
	script = "#!/bin/sh\necho run >> " + strconv.Quote(counter) + "\necho 'Specified port is already in use' >&2\nexit 1\n"
	if err := os.WriteFile(always, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(counter); err != nil {
		t.Fatal(err)
	}
	_, err = startBinary(t.Context(), always)
	if err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("start with a port always taken: %v", err)
	}
	runs, _ = os.ReadFile(counter)
	if n := strings.Count(string(runs), "run"); n != 3 {
		t.Fatalf("the binary ran %d times, want 3", n)
	}
}

// TestServerDiesWithTestProcess: a server whose test process exits without Stop is killed
// by the kernel, and the next Start removes its directory.
func TestServerDiesWithTestProcess(t *testing.T) {
	if _, err := binaryPath(); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=orphan")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v; output:\n%s", err, out)
	}
	var pid int
	var root string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "PID" && f[2] == "ROOT" {
			pid, _ = strconv.Atoi(f[1])
			root = f[3]
		}
	}
	if pid == 0 || root == "" {
		t.Fatalf("helper output without PID and ROOT:\n%s", out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for processExists(pid) {
		if time.Now().After(deadline) {
			_ = exec.Command("kill", "-9", strconv.Itoa(pid)).Run()
			t.Fatalf("the server (pid %d) outlived its test process by 10s", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(root); err != nil {
		t.Fatalf("the orphan's directory: %v", err)
	}
	removeStaleRoots()
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		_ = os.RemoveAll(root)
		t.Fatalf("removeStaleRoots left %s (%v)", root, err)
	}
}

// TestExternalMode runs the external mode against a binary server given by environment
// variables: with a fresh bucket per test, and with a shared bucket and a prefix per test.
func TestExternalMode(t *testing.T) {
	local := startOwnBinary(t)
	c := newClient(t, local)
	shared := local.NewTarget(t).Bucket

	t.Setenv(EnvMinioBin, "") // the external mode must win even so
	t.Setenv(EnvEndpoint, local.Endpoint)
	t.Setenv(EnvAccessKey, local.AccessKey)
	t.Setenv(EnvSecretKey, local.SecretKey)
	t.Setenv(EnvSecure, "false")
	t.Setenv(EnvRegion, "")
	t.Setenv(EnvBucket, "")
	t.Setenv(EnvAllowNonEmpty, "")

	t.Run("fresh buckets", func(t *testing.T) {
		ext, err := Start(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer ext.Stop()
		if ext.Kind != KindExternal || ext.Endpoint != local.Endpoint || ext.Region != DefaultRegion {
			t.Fatalf("unexpected server %v", ext)
		}
		if err := ext.Pause(t.Context()); !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("Pause of an external server: %v, want ErrUnsupported", err)
		}
		var tgt Target
		t.Run("user", func(t *testing.T) {
			tgt = ext.NewTarget(t)
			if tgt.Prefix != "" || tgt.Bucket == shared {
				t.Fatalf("target %v, want a fresh bucket and no prefix", tgt)
			}
			putString(t, c, tgt.Bucket, "k", "v")
		})
		if ok, err := c.BucketExists(t.Context(), tgt.Bucket); err != nil || ok {
			t.Fatalf("bucket %q after cleanup: exists %v, err %v", tgt.Bucket, ok, err)
		}
		if err := ext.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := health(local); err != nil {
			t.Fatalf("Stop of the external server affected the service: %v", err)
		}
	})

	t.Run("bad settings", func(t *testing.T) {
		t.Setenv(EnvSecretKey, "wrong")
		if _, err := Start(t.Context()); err == nil {
			t.Error("Start with a wrong secret key succeeded")
		} else if strings.Contains(err.Error(), "wrong") {
			t.Errorf("the error shows the secret key: %v", err)
		}
		t.Setenv(EnvSecretKey, "")
		if _, err := Start(t.Context()); err == nil || !strings.Contains(err.Error(), EnvSecretKey) {
			t.Errorf("Start without a secret key: %v, want an error naming %s", err, EnvSecretKey)
		}
		t.Setenv(EnvSecretKey, local.SecretKey)
		t.Setenv(EnvEndpoint, "http://"+local.Endpoint)
		if _, err := Start(t.Context()); err == nil {
			t.Error("Start with a URL as endpoint succeeded")
		}
		t.Setenv(EnvEndpoint, local.Endpoint)
		t.Setenv(EnvBucket, "s3p-does-not-exist")
		if _, err := Start(t.Context()); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("Start with a missing shared bucket: %v", err)
		}
	})

	t.Run("shared bucket", func(t *testing.T) {
		t.Setenv(EnvBucket, shared)
		ext, err := Start(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var tgt Target
		t.Run("user", func(t *testing.T) {
			tgt = ext.NewTarget(t)
			if tgt.Bucket != shared || !regexp.MustCompile(`^s3p-[0-9a-f]{16}/$`).MatchString(tgt.Prefix) {
				t.Fatalf("target %v, want bucket %q and a fresh prefix", tgt, shared)
			}
			putString(t, c, tgt.Bucket, tgt.Prefix+"a/b", "v")
			putString(t, c, tgt.Bucket, tgt.Prefix+"c", "v")
		})
		if got := keys(t, c, shared, ""); len(got) != 0 {
			t.Fatalf("after cleanup the shared bucket holds %q", got)
		}

		// A non-empty shared bucket is refused unless allowed; what is not under a
		// test's prefix survives its cleanup.
		putString(t, c, shared, "precious", "keep me")
		if _, err := Start(t.Context()); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Fatalf("Start with a non-empty shared bucket: %v", err)
		}
		t.Setenv(EnvAllowNonEmpty, "1")
		ext, err = Start(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		t.Run("user", func(t *testing.T) {
			tgt = ext.NewTarget(t)
			putString(t, c, tgt.Bucket, tgt.Prefix+"x", "v")
		})
		if got := keys(t, c, shared, ""); len(got) != 1 || got[0] != "precious" {
			t.Fatalf("after cleanup the shared bucket holds %q, want only [precious]", got)
		}
		if err := c.RemoveObject(t.Context(), shared, "precious", minio.RemoveObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}

// checkPausedThenResumed checks a paused server, of any kind, whose bucket tgt holds "k"
// = "before restart": a second Pause and a Restart are refused, Resume brings back the
// same data and accepts writes, and a second Resume is refused.
func checkPausedThenResumed(t *testing.T, s *Server, c *minio.Client, tgt Target) {
	t.Helper()
	if err := s.Pause(t.Context()); err == nil || !strings.Contains(err.Error(), "paused") {
		t.Fatalf("second Pause: %v, want an error saying the server is paused", err)
	}
	if err := s.Restart(t.Context()); err == nil {
		t.Fatal("Restart of a paused server succeeded")
	}
	if err := s.Resume(t.Context()); err != nil {
		t.Fatal(err)
	}
	mustGet(t, c, tgt.Bucket, "k", "before restart")
	putString(t, c, tgt.Bucket, "k2", "after resume")
	if err := s.Resume(t.Context()); err == nil {
		t.Fatal("Resume of a running server succeeded")
	}
}

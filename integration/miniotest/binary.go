package miniotest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Layout of the binary server's temporary directory.
const (
	rootPattern  = "s3persist-minio-*" // in os.TempDir()
	ownerFile    = "owner.pid"         // pid of the test process that owns the directory
	dataDirName  = "data"              // the MinIO drive
	logFileName  = "minio.log"         // the server's stdout and stderr
	logTailBytes = 4 << 10             // how much of the log an error shows
)

// States of a binaryServer.
const (
	stateRunning = iota
	stateBusy    // a lifecycle call is in progress
	statePaused
	stateStopped
)

// binaryServer runs the minio binary. mu guards state and proc only; it is never held
// while waiting for the process or the network.
type binaryServer struct {
	bin     string
	root    string // temporary directory, removed by stop
	dataDir string
	logPath string
	addr    string // S3 API, 127.0.0.1:port
	console string // console, 127.0.0.1:port
	env     []string
	// certsDir is MinIO's --certs-dir and roots the pool of the CA that signed its
	// certificate, for a TLS server; "" and nil for plain HTTP.
	certsDir string
	roots    *x509.CertPool

	mu    sync.Mutex
	state int
	proc  *process // nil unless running
}

// process is one run of the server.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // the result of Wait; read only after done is closed
}

// findBinary looks for the minio binary in the tools dir of scripts/install-minio.sh,
// then on PATH.
func findBinary() (string, error) {
	toolsDir := os.Getenv(EnvToolsDir)
	if toolsDir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			toolsDir = filepath.Join(home, ".cache", "s3persist", "tools")
		}
	}
	var tried []string
	if toolsDir != "" {
		p := filepath.Join(toolsDir, "minio-"+MinioVersion, "minio")
		if isExecutable(p) {
			return p, nil
		}
		tried = append(tried, p)
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	tried = append(tried, `"minio" on PATH`)
	return "", fmt.Errorf("no minio binary (looked for %s)", strings.Join(tried, ", "))
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// startBinary starts bin as a MinIO server on free local ports over a new temporary
// directory and waits until it is healthy.
func startBinary(ctx context.Context, bin string) (*Server, error) {
	return startBinaryWith(ctx, bin, Options{})
}

// startBinaryWith is startBinary with the features of opts.
func startBinaryWith(ctx context.Context, bin string, opts Options) (*Server, error) {
	if !isExecutable(bin) {
		return nil, fmt.Errorf("miniotest: %s=%q is not an executable file; run `bash scripts/install-minio.sh` "+
			"and set %s to the path it prints", EnvMinioBin, bin, EnvMinioBin)
	}
	removeStaleRoots()
	user, err := randomHex(10)
	if err != nil {
		return nil, err
	}
	password, err := randomHex(20)
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", rootPattern)
	if err != nil {
		return nil, fmt.Errorf("miniotest: %w", err)
	}
	b := &binaryServer{
		bin:     bin,
		root:    root,
		dataDir: filepath.Join(root, dataDirName),
		logPath: filepath.Join(root, logFileName),
		env: append(minioFreeEnv(),
			"MINIO_ROOT_USER=s3p"+user,
			"MINIO_ROOT_PASSWORD="+password,
			"MINIO_CI_CD=1",    // no root-disk check; small buffer pool
			"MINIO_UPDATE=off", // no update check
		),
		state: stateStopped,
	}
	fail := func(err error) (*Server, error) {
		_ = os.RemoveAll(root)
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(root, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return fail(fmt.Errorf("miniotest: %w", err))
	}
	if err := os.Mkdir(b.dataDir, 0o700); err != nil {
		return fail(fmt.Errorf("miniotest: %w", err))
	}
	if opts.TLS {
		b.certsDir = filepath.Join(root, certsDirName)
		if b.roots, err = writeServerCerts(b.certsDir); err != nil {
			return fail(err)
		}
	}
	if opts.KMS {
		kms, err := kmsSecretKeyEnv()
		if err != nil {
			return fail(err)
		}
		b.env = append(b.env, kms)
	}

	// The free ports are only free when checked: another process may take one before
	// MinIO binds it. Then MinIO exits, and another pair is tried.
	var p *process
	for attempt := 1; ; attempt++ {
		if b.addr, err = freeAddr(); err != nil {
			return fail(err)
		}
		if b.console, err = freeAddr(); err != nil {
			return fail(err)
		}
		p, err = b.launchAndWait(ctx)
		if err == nil {
			break
		}
		if attempt == 3 || !errors.Is(err, errAddrInUse) {
			return fail(err)
		}
	}
	b.state, b.proc = stateRunning, p
	return &Server{
		Endpoint:  b.addr,
		AccessKey: "s3p" + user,
		SecretKey: password,
		Secure:    opts.TLS,
		RootCAs:   b.roots,
		Region:    DefaultRegion,
		Kind:      KindBinary,
		bin:       b,
	}, nil
}

var (
	errAddrInUse = errors.New("address in use")
	errExited    = errors.New("the server process exited")
)

// launchAndWait starts the server and waits until it is healthy; on failure the process
// is gone and the error holds the end of the log.
func (b *binaryServer) launchAndWait(ctx context.Context) (*process, error) {
	var logStart int64 // the log of this run starts here
	if fi, err := os.Stat(b.logPath); err == nil {
		logStart = fi.Size()
	}
	p, err := b.launch()
	if err != nil {
		return nil, err
	}
	scheme := "http://"
	if b.roots != nil {
		scheme = "https://"
	}
	if err := waitHealthyTLS(ctx, scheme+b.addr, tlsConfig(b.roots), p.done); err != nil {
		_ = p.kill()
		if errors.Is(err, errExited) {
			err = fmt.Errorf("%w (%v)", err, p.err) // p.done is closed: p.err is set
		}
		tail := b.logTail(logStart)
		err = fmt.Errorf("miniotest: minio server %s (%s) did not start: %w\n--- end of its output ---\n%s",
			b.addr, b.bin, err, tail)
		if strings.Contains(tail, "already in use") {
			err = fmt.Errorf("%w: %w", errAddrInUse, err)
		}
		return nil, err
	}
	return p, nil
}

// launch starts one server process.
func (b *binaryServer) launch() (*process, error) {
	logFile, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("miniotest: %w", err)
	}
	defer logFile.Close() // the child has its own copy of the descriptor
	fmt.Fprintf(logFile, "=== miniotest %s: starting %s on %s\n", time.Now().Format(time.RFC3339Nano), b.bin, b.addr)
	args := []string{"server", "--address", b.addr, "--console-address", b.console}
	if b.certsDir != "" {
		args = append(args, "--certs-dir", b.certsDir)
	}
	cmd := exec.Command(b.bin, append(args, b.dataDir)...)
	cmd.Env = b.env
	cmd.Dir = b.root
	// An *os.File as Stdout and Stderr is handed to the child as is: no copying
	// goroutines, and no pipe that could block the server.
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("miniotest: start %s: %w", b.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// terminate stops the process: SIGTERM, and SIGKILL if it has not exited after StopGrace.
func (p *process) terminate() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return p.kill()
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(StopGrace):
		return p.kill()
	}
}

// kill stops the process with SIGKILL and waits until it has been reaped.
func (p *process) kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("miniotest: kill minio (pid %d): %w", p.cmd.Process.Pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(StopGrace):
		return fmt.Errorf("miniotest: minio (pid %d) has not exited %v after SIGKILL", p.cmd.Process.Pid, StopGrace)
	}
}

// begin moves the server from state from to stateBusy, for one lifecycle call.
func (b *binaryServer) begin(op string, from int) (*process, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != from {
		return nil, fmt.Errorf("miniotest: %s: the server is %s", op, stateName(b.state))
	}
	b.state = stateBusy
	return b.proc, nil
}

// end leaves stateBusy for state to, with the process p (nil unless running).
func (b *binaryServer) end(to int, p *process) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state, b.proc = to, p
}

func stateName(s int) string {
	switch s {
	case stateRunning:
		return "running"
	case stateBusy:
		return "busy with another Pause, Resume, Restart or Stop"
	case statePaused:
		return "paused"
	default:
		return "stopped"
	}
}

func (b *binaryServer) isStopped() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state == stateStopped
}

func (b *binaryServer) pause() error {
	p, err := b.begin("Pause", stateRunning)
	if err != nil {
		return err
	}
	if err := p.kill(); err != nil {
		b.end(stateRunning, p)
		return err
	}
	b.end(statePaused, nil)
	return nil
}

func (b *binaryServer) resume(ctx context.Context) error {
	if _, err := b.begin("Resume", statePaused); err != nil {
		return err
	}
	p, err := b.launchAndWait(ctx)
	if err != nil {
		b.end(statePaused, nil)
		return err
	}
	b.end(stateRunning, p)
	return nil
}

func (b *binaryServer) restart(ctx context.Context) error {
	p, err := b.begin("Restart", stateRunning)
	if err != nil {
		return err
	}
	if err := p.terminate(); err != nil {
		b.end(stateRunning, p)
		return err
	}
	if p, err = b.launchAndWait(ctx); err != nil {
		b.end(statePaused, nil)
		return err
	}
	b.end(stateRunning, p)
	return nil
}

func (b *binaryServer) stop() error {
	b.mu.Lock()
	switch b.state {
	case stateStopped:
		b.mu.Unlock()
		return nil
	case stateBusy:
		b.mu.Unlock()
		return fmt.Errorf("miniotest: Stop: the server is %s", stateName(stateBusy))
	}
	p := b.proc
	b.state = stateBusy
	b.mu.Unlock()

	var errs []error
	if p != nil {
		if err := p.terminate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(b.root); err != nil {
		errs = append(errs, fmt.Errorf("miniotest: remove %s: %w", b.root, err))
	}
	b.end(stateStopped, nil)
	return errors.Join(errs...)
}

// logTail returns the end of the server's log, from offset start at most.
func (b *binaryServer) logTail(start int64) string {
	f, err := os.Open(b.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read the log: %v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot read the log: %v)", err)
	}
	off := min(max(fi.Size()-logTailBytes, start, 0), fi.Size())
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Sprintf("(cannot read the log: %v)", err)
	}
	if off > start {
		// Cut the first, partial line.
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	return strings.TrimRight(string(buf), "\n")
}

// waitHealthy polls the server at baseURL until it reports that it serves requests, for
// at most StartTimeout. It fails early if exited is closed (the process has exited).
func waitHealthy(ctx context.Context, baseURL string, exited <-chan struct{}) error {
	return waitHealthyTLS(ctx, baseURL, nil, exited)
}

// waitHealthyTLS is waitHealthy for an https baseURL, verified with tlsConf.
func waitHealthyTLS(ctx context.Context, baseURL string, tlsConf *tls.Config, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	if tlsConf != nil {
		client.Transport = &http.Transport{TLSClientConfig: tlsConf}
	}
	defer client.CloseIdleConnections()
	// live: the HTTP server is up. cluster: the object layer, bucket metadata and IAM are
	// initialised, so that S3 requests succeed.
	paths := []string{"/minio/health/live", "/minio/health/cluster"}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastErr := errors.New("no answer yet")
	for len(paths) > 0 {
		if err := probe(ctx, client, baseURL+paths[0]); err != nil {
			lastErr = err
		} else {
			paths = paths[1:]
			continue
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("not healthy after %v: %w", StartTimeout, lastErr)
		case <-tick.C:
		}
	}
	return nil
}

func probe(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// freeAddr returns 127.0.0.1:port for a port that is free right now. It prefers ports
// below the kernel's ephemeral range, so that while the server is paused no outgoing
// connection takes its port and Resume can bind it again.
func freeAddr() (string, error) {
	if lo, hi, ok := belowEphemeralRange(); ok {
		for range 50 {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(lo+mathrand.IntN(hi-lo)))
			if l, err := net.Listen("tcp", addr); err == nil {
				if err := l.Close(); err == nil {
					return addr, nil
				}
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("miniotest: find a free port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("miniotest: find a free port: %w", err)
	}
	return addr, nil
}

// belowEphemeralRange returns [lo, hi): ports from 10000 up to the start of Linux's
// ephemeral port range, if that leaves at least 1000 ports.
func belowEphemeralRange() (lo, hi int, ok bool) {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, false
	}
	fields := strings.Fields(string(data))
	if len(fields) != 2 {
		return 0, 0, false
	}
	start, err := strconv.Atoi(fields[0])
	if err != nil || start-10000 < 1000 {
		return 0, 0, false
	}
	return 10000, start, true
}

// minioFreeEnv returns the environment without MinIO's own variables, so that the
// caller's MinIO settings (credentials, config) cannot change the test server.
func minioFreeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "MINIO_") || strings.HasPrefix(kv, "_MINIO") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// removeStaleRoots removes the temporary directories of binary servers whose test
// process has died (without Stop; its server died with it, see sysProcAttr).
func removeStaleRoots() {
	roots, _ := filepath.Glob(filepath.Join(os.TempDir(), rootPattern))
	for _, root := range roots {
		data, err := os.ReadFile(filepath.Join(root, ownerFile))
		if err != nil {
			continue // not ours, or being created
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 || pid == os.Getpid() || processExists(pid) {
			continue
		}
		_ = os.RemoveAll(root)
	}
}

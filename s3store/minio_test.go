package s3store_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/s3persist/s3persist/s3store"
	"github.com/s3persist/s3persist/s3store/storetest"
)

const (
	testAccessKey = "AKID-must-not-leak"
	testSecretKey = "secret-must-not-leak"
)

func noCredentials(t *testing.T, err error) {
	t.Helper()
	for _, secret := range []string{testAccessKey, testSecretKey} {
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("error %q holds a credential", err)
		}
	}
}

func TestMinioConfigValidate(t *testing.T) {
	good := s3store.MinioConfig{Endpoint: "127.0.0.1:9000", Bucket: "bucket"}
	if err := good.Validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	full := good
	full.Secure = true
	full.Region = "eu-west-1"
	full.AccessKey, full.SecretKey, full.SessionToken = "a", "s", "t"
	full.RootCAs = x509.NewCertPool()
	full.MaxIdleConns = 8
	full.RequestTimeout = time.Second
	full.MaxRetries = -1
	if err := full.Validate(); err != nil {
		t.Fatalf("full config: %v", err)
	}
	for _, c := range []struct {
		field  string
		change func(*s3store.MinioConfig)
	}{
		{"Endpoint", func(c *s3store.MinioConfig) { c.Endpoint = "" }},
		{"Endpoint", func(c *s3store.MinioConfig) { c.Endpoint = "http://127.0.0.1:9000" }},
		{"Endpoint", func(c *s3store.MinioConfig) { c.Endpoint = "127.0.0.1:9000/bucket" }},
		{"Endpoint", func(c *s3store.MinioConfig) { c.Endpoint = "user@host" }},
		{"Bucket", func(c *s3store.MinioConfig) { c.Bucket = "" }},
		{"Bucket", func(c *s3store.MinioConfig) { c.Bucket = "Upper_Case" }},
		{"Bucket", func(c *s3store.MinioConfig) { c.Bucket = "ab" }},
		{"AccessKey", func(c *s3store.MinioConfig) { c.SecretKey = "s" }},
		{"AccessKey", func(c *s3store.MinioConfig) { c.SessionToken = "t" }},
		{"SecretKey", func(c *s3store.MinioConfig) { c.AccessKey = "a" }},
		{"Secure", func(c *s3store.MinioConfig) { c.RootCAs = x509.NewCertPool() }},
		{"Transport", func(c *s3store.MinioConfig) {
			c.Secure, c.RootCAs, c.Transport = true, x509.NewCertPool(), http.DefaultTransport
		}},
		{"Transport", func(c *s3store.MinioConfig) { c.MaxIdleConns, c.Transport = 4, http.DefaultTransport }},
		{"MaxIdleConns", func(c *s3store.MinioConfig) { c.MaxIdleConns = -1 }},
		{"RequestTimeout", func(c *s3store.MinioConfig) { c.RequestTimeout = -time.Second }},
	} {
		cfg := good
		c.change(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%v: Validate() = %v, want an error naming %s", cfg, err, c.field)
		}
		if _, err := s3store.NewMinio(t.Context(), cfg); err == nil {
			t.Errorf("%v: NewMinio accepted an invalid config", cfg)
		}
	}
}

func TestMinioConfigRedactsCredentials(t *testing.T) {
	cfg := s3store.MinioConfig{Endpoint: "e:1", Bucket: "bucket", AccessKey: testAccessKey, SecretKey: testSecretKey, SessionToken: "token-must-not-leak"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "cfg", cfg)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "cfg", cfg)
	out := fmt.Sprintf("%v %+v %#v %s %s", cfg, cfg, cfg, cfg, buf.String())
	for _, secret := range []string{testAccessKey, testSecretKey, "token-must-not-leak"} {
		if strings.Contains(out, secret) {
			t.Fatalf("formatted config holds %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, `Endpoint:"e:1"`) || !json.Valid(bytes.Split(buf.Bytes(), []byte("\n"))[0]) {
		t.Fatalf("formatted config lost its useful fields:\n%s", out)
	}
}

// closedPort returns a 127.0.0.1 address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestNewMinioFailsFastOnUnreachableEndpoint(t *testing.T) {
	storetest.CheckGoroutines(t)
	cfg := s3store.MinioConfig{Endpoint: closedPort(t), Bucket: "bucket", AccessKey: testAccessKey, SecretKey: testSecretKey}

	// Retries run out before the deadline: the error is the connection's.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := s3store.NewMinio(ctx, cfg)
	if !errors.Is(err, s3store.ErrUnreachable) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("NewMinio error = %v, want ErrUnreachable from a refused connection", err)
	}
	noCredentials(t, err)

	// The deadline comes first: minio-go then reports only the context's error, and the
	// last connection error is added.
	ctx, cancel = context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err = s3store.NewMinio(ctx, cfg)
	if !errors.Is(err, s3store.ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("NewMinio error = %v, want ErrUnreachable, the deadline and the refused connection", err)
	}
}

// TestNewMinioGivesUpOnSilentServer checks that a server that accepts connections and
// never answers costs RequestTimeout, not minio-go's minutes of retries.
func TestNewMinioGivesUpOnSilentServer(t *testing.T) {
	storetest.CheckGoroutines(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	cfg := s3store.MinioConfig{Endpoint: l.Addr().String(), Bucket: "bucket", AccessKey: testAccessKey, SecretKey: testSecretKey,
		RequestTimeout: 300 * time.Millisecond}
	_, err = s3store.NewMinio(t.Context(), cfg)
	if !errors.Is(err, s3store.ErrUnreachable) || !strings.Contains(err.Error(), "RequestTimeout") {
		t.Fatalf("NewMinio error = %v, want ErrUnreachable after RequestTimeout", err)
	}
}

// fakeS3 is an HTTP server that answers like S3 from a table of canned responses, so
// that error paths can be tested without a real server and with exact request counts.
type fakeS3 struct {
	*httptest.Server
	requests atomic.Int64
	// answer returns the status, headers and XML body for a request; nil body for none.
	answer func(r *http.Request) (int, http.Header, string)
}

func newFakeS3(t *testing.T, answer func(r *http.Request) (int, http.Header, string)) *fakeS3 {
	f := &fakeS3{answer: answer}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		io.Copy(io.Discard, r.Body)
		status, h, body := f.answer(r)
		for k, v := range h {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeS3) config() s3store.MinioConfig {
	return s3store.MinioConfig{
		Endpoint:  strings.TrimPrefix(f.URL, "http://"),
		Bucket:    "bucket",
		AccessKey: testAccessKey,
		SecretKey: testSecretKey,
	}
}

func s3Error(status int, code string) (int, http.Header, string) {
	return status, http.Header{"Content-Type": {"application/xml"}},
		fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>canned %s</Message></Error>`, code, code)
}

// bucketOK answers the bucket check of NewMinio.
func bucketOK(r *http.Request) bool {
	return r.Method == http.MethodHead && strings.Trim(r.URL.Path, "/") == "bucket"
}

func TestNewMinioMapsBucketCheckFailures(t *testing.T) {
	storetest.CheckGoroutines(t)
	for _, c := range []struct {
		name   string
		status int
		header string // x-minio-error-code: a HEAD response has no body
		want   error
	}{
		{"wrong_access_key", 403, "InvalidAccessKeyId", s3store.ErrAccessDenied},
		{"wrong_secret", 403, "SignatureDoesNotMatch", s3store.ErrAccessDenied},
		{"forbidden", 403, "", s3store.ErrAccessDenied},
		{"missing_bucket", 404, "", s3store.ErrNoSuchBucket},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeS3(t, func(r *http.Request) (int, http.Header, string) {
				h := http.Header{}
				if c.header != "" {
					h.Set("x-minio-error-code", c.header)
				}
				return c.status, h, ""
			})
			_, err := s3store.NewMinio(t.Context(), f.config())
			if !errors.Is(err, c.want) || errors.Is(err, s3store.ErrUnreachable) {
				t.Fatalf("NewMinio error = %v, want %v", err, c.want)
			}
			noCredentials(t, err)
			if n := f.requests.Load(); n != 1 {
				t.Fatalf("%d requests, want 1: refusals are not retried", n)
			}
		})
	}
}

func TestNewMinioCreatesMissingBucketThroughTransport(t *testing.T) {
	storetest.CheckGoroutines(t)
	var created atomic.Bool
	f := newFakeS3(t, func(r *http.Request) (int, http.Header, string) {
		switch {
		case r.Method == http.MethodHead && created.Load():
			return 200, nil, ""
		case r.Method == http.MethodHead:
			return 404, nil, ""
		case r.Method == http.MethodPut && strings.Trim(r.URL.Path, "/") == "bucket":
			created.Store(true)
			return 200, nil, ""
		}
		return s3Error(400, "Unexpected")
	})
	var hooked atomic.Int64
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections) // a Transport from the config is the caller's to close
	cfg := f.config()
	cfg.CreateBucket = true
	cfg.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		hooked.Add(1)
		return tr.RoundTrip(r)
	})
	s, err := s3store.NewMinio(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !created.Load() || hooked.Load() != 2 || f.requests.Load() != 2 {
		t.Fatalf("created %t, %d requests through the Transport, %d at the server; want true, 2, 2",
			created.Load(), hooked.Load(), f.requests.Load())
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestMinioRetriesOnlyWhatIsSafeToRepeat checks that a put that may have succeeded is
// never repeated when repeating could turn success into ErrPreconditionFailed.
func TestMinioRetriesOnlyWhatIsSafeToRepeat(t *testing.T) {
	storetest.CheckGoroutines(t)
	var puts atomic.Int64
	f := newFakeS3(t, func(r *http.Request) (int, http.Header, string) {
		if bucketOK(r) {
			return 200, nil, ""
		}
		puts.Add(1)
		return s3Error(503, "SlowDown")
	})
	cfg := f.config()
	cfg.MaxRetries = 2
	s, err := s3store.NewMinio(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		opts s3store.PutOptions
		want int64
	}{
		{s3store.PutOptions{}, 3},
		{s3store.PutOptions{IfNoneMatch: true}, 1},
		{s3store.PutOptions{IfMatch: "etag"}, 1},
	} {
		puts.Store(0)
		_, err := s.Put(t.Context(), "k", []byte("data"), c.opts)
		if err == nil || errors.Is(err, s3store.ErrPreconditionFailed) {
			t.Fatalf("Put(%+v) error = %v, want a failure that names no outcome", c.opts, err)
		}
		if got := puts.Load(); got != c.want {
			t.Fatalf("Put(%+v) made %d requests, want %d", c.opts, got, c.want)
		}
	}
}

func TestMinioMapsConditionalConflictToPreconditionFailed(t *testing.T) {
	storetest.CheckGoroutines(t)
	f := newFakeS3(t, func(r *http.Request) (int, http.Header, string) {
		if bucketOK(r) {
			return 200, nil, ""
		}
		if r.Header.Get("If-None-Match") != "*" {
			return s3Error(400, "MissingCondition")
		}
		return s3Error(409, "ConditionalRequestConflict")
	})
	s, err := s3store.NewMinio(t.Context(), f.config())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Put(t.Context(), "k", []byte("x"), s3store.PutOptions{IfNoneMatch: true})
	if !errors.Is(err, s3store.ErrPreconditionFailed) {
		t.Fatalf("Put error = %v, want ErrPreconditionFailed", err)
	}
}

func TestMinioGetFailsOnTruncatedBody(t *testing.T) {
	storetest.CheckGoroutines(t)
	f := newFakeS3(t, func(r *http.Request) (int, http.Header, string) {
		if bucketOK(r) {
			return 200, nil, ""
		}
		return 200, http.Header{"Content-Length": {"100"}, "Etag": {`"e"`}}, "only part of it"
	})
	s, err := s3store.NewMinio(t.Context(), f.config())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data, _, err := s.Get(t.Context(), "k")
	if err == nil || data != nil || !strings.Contains(err.Error(), `get "k"`) {
		t.Fatalf("Get = %q, %v; want an error for the short body", data, err)
	}
}

func TestLatencyTransportPassesRequestsOnAndHonoursCancellation(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer srv.Close()
	tr := &s3store.LatencyTransport{Delay: time.Millisecond}
	client := &http.Client{Transport: tr}
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" {
		t.Fatalf("body %q", body)
	}
	slow := &http.Client{Transport: &s3store.LatencyTransport{Delay: time.Hour}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	if _, err := slow.Do(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled request during the delay: %v, want context.Canceled", err)
	}
}

package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/encrypt"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/integration/miniotest"
	"github.com/s3persist/s3persist/internal/workload"
	"github.com/s3persist/s3persist/s3store"
	"github.com/s3persist/s3persist/s3store/storetest"
)

// Secrets the security tests search for in every error and log line: wrong credentials
// and customer keys that some case sends. (The server's real secret key is searched too.)
const (
	wrongSecretKey = "wrong-secret-must-not-leak"
	sessionToken   = "session-token-must-not-leak"
)

var (
	ssecKey      = []byte("the-sse-c-key-must-never-leak-32")
	otherSSECKey = []byte("another-sse-c-key-must-not-leak!")
)

// secrets lists every form in which a secret of the security tests could show.
func secrets(server *miniotest.Server) []string {
	out := []string{server.SecretKey, wrongSecretKey, sessionToken}
	for _, k := range [][]byte{ssecKey, otherSSECKey} {
		out = append(out, string(k), base64.StdEncoding.EncodeToString(k), fmt.Sprint(k), fmt.Sprintf("%x", k))
	}
	return out
}

// leakCheck collects log output and error texts, and fails the test if any of them
// holds a secret.
type leakCheck struct {
	t       *testing.T
	server  *miniotest.Server
	mu      sync.Mutex
	log     bytes.Buffer
	checked int      // error texts checked
	extra   []string // secrets of this test beyond secrets(server)
}

// add makes l search for more secrets, such as temporary credentials.
func (l *leakCheck) add(secret ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.extra = append(l.extra, secret...)
}

func newLeakCheck(t *testing.T, server *miniotest.Server) *leakCheck {
	l := &leakCheck{t: t, server: server}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.search("the log", l.log.String())
		t.Logf("no secret in %d error texts and %d log lines", l.checked, bytes.Count(l.log.Bytes(), []byte("\n")))
	})
	return l
}

func (l *leakCheck) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.log.Write(p)
}

// logger logs everything, debug included, as JSON into l.
func (l *leakCheck) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// err checks the text of err (nil passes) and returns it.
func (l *leakCheck) err(err error) error {
	if err != nil {
		l.mu.Lock()
		l.search("the error", err.Error())
		l.checked++
		l.mu.Unlock()
	}
	return err
}

// search needs l.mu.
func (l *leakCheck) search(what, text string) {
	l.t.Helper()
	for _, s := range append(secrets(l.server), l.extra...) {
		if strings.Contains(text, s) {
			l.t.Errorf("%s holds the secret %q:\n%s", what, s, text)
		}
	}
}

// startSecureMinio starts a MinIO server of its own with TLS (a private CA) and a
// built-in KMS key, stopped when t ends; it skips t when no MinIO binary is there.
func startSecureMinio(t *testing.T) *miniotest.Server {
	s, err := miniotest.StartBinary(t.Context(), miniotest.Options{TLS: true, KMS: true})
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip(err)
	}
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

func secureConfig(s *miniotest.Server, bucket string) s3store.MinioConfig {
	return s3store.MinioConfig{
		Endpoint:  s.Endpoint,
		Secure:    true,
		RootCAs:   s.RootCAs,
		Region:    s.Region,
		Bucket:    bucket,
		AccessKey: s.AccessKey,
		SecretKey: s.SecretKey,
	}
}

// exercise runs a short broker's life on cfg and prefix, through every kind of request
// the adapter makes: New (conditional puts of the system record, gets, lists), stores,
// a checkpoint (which deletes the journal it covered), Shutdown, New again (reads of the
// index, the journal and the batches); then, with deletes, deletes of sessions and the
// checkpoint that removes their objects, and a last New that must find what is left. It
// returns the first error.
func exercise(ctx context.Context, cfg s3store.MinioConfig, prefix string, log *slog.Logger, deletes bool) error {
	open := func() (*s3persist.Persistence, error) {
		return s3persist.New(ctx, s3persist.Config{S3: cfg, Prefix: prefix, Logger: log,
			CallTimeout: 10 * time.Second, ShutdownTimeout: 10 * time.Second})
	}
	const sessions, perID = 8, 3
	p, err := open()
	if err != nil {
		return err
	}
	step := func(err error) error {
		if err != nil {
			_ = p.Shutdown()
		}
		return err
	}
	if err := step(workload.Fill(p, sessions, perID)); err != nil {
		return err
	}
	r, err := p.Retained()
	if err := step(err); err != nil {
		return err
	}
	if err := step(r.Store([]*vlpersistence.PersistedPacket{{Data: workload.Payload}})); err != nil {
		return err
	}
	if err := step(p.Flush(ctx)); err != nil {
		return err
	}
	if err := step(p.Checkpoint(ctx)); err != nil {
		return err
	}
	if err := p.Shutdown(); err != nil {
		return err
	}

	if p, err = open(); err != nil {
		return err
	}
	s, err := p.Sessions()
	if err := step(err); err != nil {
		return err
	}
	if n := s.Count(); n != sessions {
		return step(fmt.Errorf("%d sessions after a restart, want %d", n, sessions))
	}
	if !deletes {
		return p.Shutdown()
	}
	for i := range sessions / 2 {
		if err := step(s.Delete(fmt.Appendf(nil, "client-%06d", i))); err != nil {
			return err
		}
	}
	if err := step(p.Flush(ctx)); err != nil {
		return err
	}
	if err := step(p.Checkpoint(ctx)); err != nil {
		return err
	}
	if err := p.Shutdown(); err != nil {
		return err
	}

	if p, err = open(); err != nil {
		return err
	}
	if s, err = p.Sessions(); err == nil {
		if n := s.Count(); n != sessions/2 {
			err = fmt.Errorf("%d sessions after deleting half, want %d", n, sessions/2)
		} else if q, cerr := s.PacketCountQoS12(fmt.Appendf(nil, "client-%06d", sessions-1)); cerr != nil || q != perID {
			err = fmt.Errorf("a kept session has %d packets (%v), want %d", q, cerr, perID)
		}
	}
	return errors.Join(err, p.Shutdown())
}

// TestSecurityOnMinio runs, on one MinIO server with TLS behind a private CA and a
// built-in KMS key: TLS verification, every kind of server-side encryption, and the
// absence of secrets from errors and logs.
func TestSecurityOnMinio(t *testing.T) {
	sec := startSecureMinio(t)
	ctx := context.Background()

	t.Run("TLS verifies the server with RootCAs and fails clearly without them", func(t *testing.T) {
		leaks := newLeakCheck(t, sec)
		tgt := sec.NewTarget(t)
		cfg := secureConfig(sec, tgt.Bucket)
		cfg.SessionToken = sessionToken // sent, and refused by the server, but it must not show
		cfg.RootCAs = nil
		_, err := s3store.NewMinio(ctx, cfg)
		if leaks.err(err); !errors.Is(err, s3store.ErrUnreachable) || !strings.Contains(err.Error(), "unknown authority") ||
			!strings.Contains(err.Error(), "set RootCAs") {
			t.Fatalf("NewMinio without the CA: %v, want ErrUnreachable naming the unknown authority and RootCAs", err)
		}
		t.Logf("without the CA: %v", err)
		cfg.Secure = false
		_, err = s3store.NewMinio(ctx, cfg)
		if leaks.err(err) == nil {
			t.Fatal("NewMinio over plain HTTP to an HTTPS server succeeded")
		}
		if !strings.Contains(err.Error(), "set Secure") {
			t.Fatalf("plain HTTP to the HTTPS server: %v, want an error that names Secure", err)
		}
		if err := leaks.err(exercise(ctx, secureConfig(sec, tgt.Bucket), tgt.Prefix, leaks.logger(), false)); err != nil {
			t.Fatalf("with the CA: %v", err)
		}
	})

	kms, err := encrypt.NewSSEKMS(miniotest.KMSKeyName, nil)
	if err != nil {
		t.Fatal(err)
	}
	ssec, err := encrypt.NewSSEC(ssecKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		sse  encrypt.ServerSide
		// header and value StatObject must show for every object
		header, value string
	}{
		{"SSE-S3", encrypt.NewSSE(), "X-Amz-Server-Side-Encryption", "AES256"},
		{"SSE-KMS", kms, "X-Amz-Server-Side-Encryption", "aws:kms"},
		{"SSE-C", ssec, "X-Amz-Server-Side-Encryption-Customer-Algorithm", "AES256"},
	} {
		t.Run(c.name+" encrypts every object the adapter writes", func(t *testing.T) {
			leaks := newLeakCheck(t, sec)
			tgt := sec.NewTarget(t)
			cfg := secureConfig(sec, tgt.Bucket)
			cfg.SSE = c.sse
			if err := leaks.err(exercise(ctx, cfg, tgt.Prefix, leaks.logger(), false)); err != nil {
				t.Fatal(err)
			}
			client, err := sec.Client()
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for obj := range client.ListObjects(ctx, tgt.Bucket, minio.ListObjectsOptions{Prefix: tgt.Prefix, Recursive: true}) {
				if obj.Err != nil {
					t.Fatal(obj.Err)
				}
				n++
				opts := minio.StatObjectOptions{}
				if c.sse.Type() == encrypt.SSEC {
					opts.ServerSideEncryption = c.sse
					// Without the key the content cannot be read.
					_, err := client.StatObject(ctx, tgt.Bucket, obj.Key, minio.StatObjectOptions{})
					if err == nil {
						t.Fatalf("%s: read without the SSE-C key", obj.Key)
					}
				}
				info, err := client.StatObject(ctx, tgt.Bucket, obj.Key, opts)
				if err != nil {
					t.Fatalf("%s: %v", obj.Key, err)
				}
				if got := info.Metadata.Get(c.header); got != c.value {
					t.Fatalf("%s: %s = %q, want %q (metadata %v)", obj.Key, c.header, got, c.value, info.Metadata)
				}
				if c.sse.Type() == encrypt.KMS {
					if got := info.Metadata.Get("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id"); !strings.HasSuffix(got, miniotest.KMSKeyName) {
						t.Fatalf("%s: KMS key id %q, want %s", obj.Key, got, miniotest.KMSKeyName)
					}
				}
			}
			if n == 0 {
				t.Fatal("no object to check")
			}
			t.Logf("%d objects encrypted with %s", n, c.name)
		})
	}

	t.Run("SSE-C with a wrong key fails clearly and shows neither key", func(t *testing.T) {
		leaks := newLeakCheck(t, sec)
		tgt := sec.NewTarget(t)
		cfg := secureConfig(sec, tgt.Bucket)
		cfg.SSE = ssec
		p, err := s3persist.New(ctx, s3persist.Config{S3: cfg, Prefix: tgt.Prefix, Logger: leaks.logger()})
		if leaks.err(err) != nil {
			t.Fatal(err)
		}
		if err := leaks.err(p.Shutdown()); err != nil {
			t.Fatal(err)
		}
		other, err := encrypt.NewSSEC(otherSSECKey)
		if err != nil {
			t.Fatal(err)
		}
		cfg.SSE = other
		_, err = s3persist.New(ctx, s3persist.Config{S3: cfg, Prefix: tgt.Prefix, Logger: leaks.logger()})
		if leaks.err(err) == nil {
			t.Fatal("New read a bucket written with another SSE-C key")
		}
		t.Logf("New with the wrong SSE-C key: %v", err)
		cfg.SSE = nil
		_, err = s3persist.New(ctx, s3persist.Config{S3: cfg, Prefix: tgt.Prefix, Logger: leaks.logger()})
		if leaks.err(err) == nil {
			t.Fatal("New read a bucket written with SSE-C without the key")
		}
	})

	t.Run("failing requests show no secret", func(t *testing.T) {
		leaks := newLeakCheck(t, sec)
		tgt := sec.NewTarget(t)
		log := leaks.logger()
		bad := secureConfig(sec, tgt.Bucket)
		bad.SecretKey = wrongSecretKey
		bad.SessionToken = sessionToken
		bad.SSE = ssec
		_, err := s3persist.New(ctx, s3persist.Config{S3: bad, Prefix: tgt.Prefix, Logger: log})
		if leaks.err(err); !errors.Is(err, s3store.ErrAccessDenied) {
			t.Fatalf("New with a wrong secret key: %v, want ErrAccessDenied", err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		unreachable := bad
		unreachable.Endpoint = l.Addr().String()
		_ = l.Close()
		_, err = s3persist.New(ctx, s3persist.Config{S3: unreachable, Prefix: tgt.Prefix, Logger: log})
		if leaks.err(err); !errors.Is(err, s3store.ErrUnreachable) {
			t.Fatalf("New on a closed port: %v, want ErrUnreachable", err)
		}
		// A KMS key the server does not have: the bucket opens, every put fails.
		unknownKMS, err := encrypt.NewSSEKMS("no-such-key", nil)
		if err != nil {
			t.Fatal(err)
		}
		good := secureConfig(sec, tgt.Bucket)
		good.SSE = unknownKMS
		_, err = s3persist.New(ctx, s3persist.Config{S3: good, Prefix: tgt.Prefix, Logger: log})
		if leaks.err(err) == nil {
			t.Fatal("New wrote with a KMS key the server does not have")
		}
		t.Logf("New with an unknown KMS key: %v", err)
		// Requests refused after the store opened, through the store directly.
		good.SSE = ssec
		m, err := s3store.NewMinio(ctx, good)
		if leaks.err(err) != nil {
			t.Fatal(err)
		}
		defer m.Close()
		_, _, err = m.Get(ctx, tgt.Prefix+"missing")
		if leaks.err(err); !errors.Is(err, s3store.ErrNotFound) {
			t.Fatalf("Get of a missing key: %v, want ErrNotFound", err)
		}
		if _, err := m.Put(ctx, tgt.Prefix+"k", []byte("v"), s3store.PutOptions{IfMatch: `"no-such-etag"`}); !errors.Is(leaks.err(err), s3store.ErrPreconditionFailed) {
			t.Fatalf("Put with a wrong If-Match: %v, want ErrPreconditionFailed", err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := m.Put(cctx, tgt.Prefix+"k", []byte("v"), s3store.PutOptions{}); leaks.err(err) == nil {
			t.Fatal("Put with an ended context succeeded")
		}
	})

	// The store's conformance suite, once per kind of encryption: about a minute each,
	// so only on request.
	if os.Getenv(EnvSSEConformance) == "" {
		t.Logf("set %s=1 to run the store conformance suite with each kind of encryption", EnvSSEConformance)
		return
	}
	for _, c := range []struct {
		name string
		sse  encrypt.ServerSide
	}{{"SSE-S3", encrypt.NewSSE()}, {"SSE-KMS", kms}, {"SSE-C", ssec}} {
		t.Run("store conformance with "+c.name+" over TLS", func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) s3store.Store {
				tgt := sec.NewTarget(t)
				cfg := secureConfig(sec, tgt.Bucket)
				cfg.SSE = c.sse
				m, err := s3store.NewMinio(ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = m.Close() })
				return m
			}, minioSkip)
		})
	}
}

// EnvSSEConformance, set to 1, makes TestSecurityOnMinio run the store conformance
// suite with each kind of server-side encryption.
const EnvSSEConformance = "S3PERSIST_SSE_CONFORMANCE"

// secureConfigTLS is the client TLS configuration for s.
func secureConfigTLS(s *miniotest.Server) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: s.RootCAs}
}

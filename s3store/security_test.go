package s3store_test

import (
	"bytes"
	"crypto/md5"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7/pkg/encrypt"

	"github.com/s3persist/s3persist/s3store"
	"github.com/s3persist/s3persist/s3store/storetest"
)

// testSSECKey is a customer key that is easy to search for, raw and in base64 (the
// form its header carries).
var testSSECKey = []byte("sse-c-key-must-not-leak-32-bytes")

func newSSEC(t *testing.T) encrypt.ServerSide {
	t.Helper()
	sse, err := encrypt.NewSSEC(testSSECKey)
	if err != nil {
		t.Fatal(err)
	}
	return sse
}

// noSecret fails t if text holds a credential or the SSE-C key, in any form a header
// or a formatter could give it.
func noSecret(t *testing.T, what, text string) {
	t.Helper()
	for _, secret := range []string{testAccessKey, testSecretKey, "token-must-not-leak",
		string(testSSECKey), base64.StdEncoding.EncodeToString(testSSECKey), fmt.Sprint(testSSECKey)} {
		if strings.Contains(text, secret) {
			t.Fatalf("%s holds the secret %q:\n%s", what, secret, text)
		}
	}
}

func TestMinioConfigRedactsTheSSECKey(t *testing.T) {
	cfg := s3store.MinioConfig{Endpoint: "e:1", Bucket: "bucket", Secure: true, AccessKey: testAccessKey,
		SecretKey: testSecretKey, SessionToken: "token-must-not-leak", SSE: newSSEC(t)}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "cfg", cfg)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "cfg", cfg)
	out := fmt.Sprintf("%v %+v %#v %s %s", cfg, cfg, cfg, cfg, buf.String())
	noSecret(t, "the formatted config", out)
	if !strings.Contains(out, "SSE:SSE-C") {
		t.Fatalf("the formatted config does not name the kind of encryption:\n%s", out)
	}
}

func TestMinioConfigValidateSSE(t *testing.T) {
	kms, err := encrypt.NewSSEKMS("my-key", nil)
	if err != nil {
		t.Fatal(err)
	}
	base := s3store.MinioConfig{Endpoint: "127.0.0.1:9000", Bucket: "bucket"}
	for _, c := range []struct {
		name   string
		sse    encrypt.ServerSide
		secure bool
		ok     bool
	}{
		{"SSE-S3 over HTTP", encrypt.NewSSE(), false, true},
		{"SSE-KMS over HTTP", kms, false, true},
		{"SSE-C over HTTPS", newSSEC(t), true, true},
		{"SSE-C over HTTP", newSSEC(t), false, false},
	} {
		cfg := base
		cfg.SSE, cfg.Secure = c.sse, c.secure
		err := cfg.Validate()
		if c.ok != (err == nil) {
			t.Errorf("%s: Validate() = %v, want ok %t", c.name, err, c.ok)
		}
		if err != nil && (!strings.Contains(err.Error(), "SSE") || !strings.Contains(err.Error(), "Secure")) {
			t.Errorf("%s: Validate() = %v, want an error naming SSE and Secure", c.name, err)
		}
		if err != nil {
			noSecret(t, "the error", err.Error())
		}
	}
}

// tlsFakeS3 is an HTTPS server that answers the bucket check, stores puts in memory and
// records the encryption headers of every request.
type tlsFakeS3 struct {
	*httptest.Server
	mu      sync.Mutex
	objects map[string][]byte
	headers []http.Header // of every object request, in order
}

func newTLSFakeS3(t *testing.T) *tlsFakeS3 {
	f := &tlsFakeS3{objects: make(map[string][]byte)}
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if bucketOK(r) {
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		h := http.Header{}
		for k, v := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-amz-server-side-encryption") {
				h[k] = v
			}
		}
		f.headers = append(f.headers, h)
		key := strings.TrimPrefix(r.URL.Path, "/bucket/")
		switch r.Method {
		case http.MethodPut:
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(r.Body)
			f.objects[key] = buf.Bytes()
			w.Header().Set("ETag", `"etag"`)
		case http.MethodGet:
			data, ok := f.objects[key]
			if !ok {
				status, hh, body := s3Error(404, "NoSuchKey")
				for k, v := range hh {
					w.Header()[k] = v
				}
				w.WriteHeader(status)
				_, _ = w.Write([]byte(body))
				return
			}
			w.Header().Set("ETag", `"etag"`)
			w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			_, _ = w.Write(data)
		default:
			w.WriteHeader(http.StatusNotImplemented)
		}
	}))
	// The handshakes refused on purpose are not news.
	f.Config.ErrorLog = log.New(io.Discard, "", 0)
	f.StartTLS()
	t.Cleanup(f.Close)
	return f
}

func (f *tlsFakeS3) config() s3store.MinioConfig {
	return s3store.MinioConfig{
		Endpoint:  strings.TrimPrefix(f.URL, "https://"),
		Secure:    true,
		Bucket:    "bucket",
		AccessKey: testAccessKey,
		SecretKey: testSecretKey,
	}
}

func (f *tlsFakeS3) takeHeaders() []http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.headers
	f.headers = nil
	return h
}

// A server behind a private CA is refused, with an error that says what to set, until
// RootCAs holds the CA.
func TestNewMinioVerifiesTheServerAgainstRootCAs(t *testing.T) {
	storetest.CheckGoroutines(t)
	f := newTLSFakeS3(t)
	cfg := f.config()
	cfg.SessionToken = "token-must-not-leak"
	cfg.SSE = newSSEC(t)
	_, err := s3store.NewMinio(t.Context(), cfg)
	if !errors.Is(err, s3store.ErrUnreachable) || !strings.Contains(err.Error(), "unknown authority") ||
		!strings.Contains(err.Error(), "RootCAs") {
		t.Fatalf("NewMinio without the CA: %v, want ErrUnreachable naming the unknown authority and RootCAs", err)
	}
	noSecret(t, "the error", err.Error())

	cfg.RootCAs = x509.NewCertPool()
	cfg.RootCAs.AddCert(f.Certificate())
	byName := cfg
	_, port, _ := strings.Cut(cfg.Endpoint, ":")
	byName.Endpoint = "localhost:" + port // the certificate names 127.0.0.1 and example.com
	_, err = s3store.NewMinio(t.Context(), byName)
	if !errors.Is(err, s3store.ErrUnreachable) || !strings.Contains(err.Error(), "not valid for the Endpoint's host name") {
		t.Fatalf("NewMinio by a name the certificate lacks: %v, want ErrUnreachable naming the host name", err)
	}
	noSecret(t, "the error", err.Error())
	s, err := s3store.NewMinio(t.Context(), cfg)
	if err != nil {
		t.Fatalf("NewMinio with the CA: %v", err)
	}
	defer s.Close()
	if _, err := s.Put(t.Context(), "k", []byte("v"), s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// SSE reaches every Put; on a Get only SSE-C's key goes (S3 refuses SSE-S3 and
// SSE-KMS headers on a read).
func TestMinioSendsServerSideEncryptionHeaders(t *testing.T) {
	storetest.CheckGoroutines(t)
	kms, err := encrypt.NewSSEKMS("my-key", nil)
	if err != nil {
		t.Fatal(err)
	}
	keyB64 := base64.StdEncoding.EncodeToString(testSSECKey)
	sum := md5.Sum(testSSECKey)
	ssec := map[string]string{
		"X-Amz-Server-Side-Encryption-Customer-Algorithm": "AES256",
		"X-Amz-Server-Side-Encryption-Customer-Key":       keyB64,
		"X-Amz-Server-Side-Encryption-Customer-Key-Md5":   base64.StdEncoding.EncodeToString(sum[:]),
	}
	for _, c := range []struct {
		name     string
		sse      encrypt.ServerSide
		put, get map[string]string // headers that must be there, exactly
	}{
		{"SSE-S3", encrypt.NewSSE(),
			map[string]string{"X-Amz-Server-Side-Encryption": "AES256"}, nil},
		{"SSE-KMS", kms,
			map[string]string{"X-Amz-Server-Side-Encryption": "aws:kms", "X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id": "my-key"}, nil},
		{"SSE-C", newSSEC(t), ssec, ssec},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newTLSFakeS3(t)
			cfg := f.config()
			cfg.SSE = c.sse
			cfg.RootCAs = x509.NewCertPool()
			cfg.RootCAs.AddCert(f.Certificate())
			s, err := s3store.NewMinio(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for _, opts := range []s3store.PutOptions{{}, {IfNoneMatch: true}} {
				if _, err := s.Put(t.Context(), "k", []byte("v"), opts); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, err := s.Get(t.Context(), "k"); err != nil {
				t.Fatal(err)
			}
			_, _, err = s.Get(t.Context(), "missing")
			if !errors.Is(err, s3store.ErrNotFound) {
				t.Fatalf("Get of a missing key: %v, want ErrNotFound", err)
			}
			noSecret(t, "the error", err.Error())
			got := f.takeHeaders()
			if len(got) != 4 {
				t.Fatalf("%d object requests, want 4", len(got))
			}
			for i, want := range []map[string]string{c.put, c.put, c.get, c.get} {
				if len(got[i]) != len(want) {
					t.Errorf("request %d: encryption headers %v, want %v", i, got[i], want)
				}
				for k, v := range want {
					if got[i].Get(k) != v {
						t.Errorf("request %d: %s = %q, want %q", i, k, got[i].Get(k), v)
					}
				}
			}
		})
	}
}

// With CheckPrefix, the bucket check is one listing of at most one key under it, which a
// policy scoped to the prefix allows, and its refusals map like those of HeadBucket.
func TestNewMinioChecksTheBucketByListingCheckPrefix(t *testing.T) {
	storetest.CheckGoroutines(t)
	for _, c := range []struct {
		name   string
		status int
		code   string
		want   error
	}{
		{"ok", 200, "", nil},
		{"wrong_access_key", 403, "InvalidAccessKeyId", s3store.ErrAccessDenied},
		{"forbidden", 403, "AccessDenied", s3store.ErrAccessDenied},
		{"missing_bucket", 404, "NoSuchBucket", s3store.ErrNoSuchBucket},
	} {
		t.Run(c.name, func(t *testing.T) {
			var query []string
			var mu sync.Mutex
			f := newFakeS3(t, func(r *http.Request) (int, http.Header, string) {
				mu.Lock()
				query = append(query, r.Method+" "+r.URL.Path+"?"+r.URL.Query().Get("list-type")+
					" prefix="+r.URL.Query().Get("prefix")+" max-keys="+r.URL.Query().Get("max-keys"))
				mu.Unlock()
				if c.status != 200 {
					return s3Error(c.status, c.code)
				}
				return 200, http.Header{"Content-Type": {"application/xml"}},
					`<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>bucket</Name><Prefix>broker/</Prefix><KeyCount>0</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>`
			})
			cfg := f.config()
			cfg.CheckPrefix = "broker/"
			s, err := s3store.NewMinio(t.Context(), cfg)
			if s != nil {
				defer s.Close()
			}
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("NewMinio error = %v, want %v", err, c.want)
			}
			if err != nil {
				noSecret(t, "the error", err.Error())
			}
			want := []string{"GET /bucket/?2 prefix=broker/ max-keys=1"}
			if fmt.Sprint(query) != fmt.Sprint(want) {
				t.Fatalf("requests %q, want %q", query, want)
			}
		})
	}
	bad := s3store.MinioConfig{Endpoint: "127.0.0.1:9000", Bucket: "bucket", CheckPrefix: "no-slash"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "CheckPrefix") {
		t.Fatalf("Validate of CheckPrefix %q: %v, want an error naming CheckPrefix", bad.CheckPrefix, err)
	}
}

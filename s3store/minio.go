package s3store

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/encrypt"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// ErrUnreachable is wrapped by the error of NewMinio when the endpoint gave no HTTP
// response at all (connection refused, DNS failure, TLS failure, timeout), as opposed
// to a response that refused us. Store methods do not use it: once the store is open,
// a network failure is one of the failures that equal no sentinel.
var ErrUnreachable = errors.New("s3store: endpoint unreachable")

// Defaults of MinioConfig, applied in one place, MinioConfig.withDefaults.
const (
	DefaultMinioRegion         = "us-east-1"
	DefaultMinioContentType    = "application/octet-stream"
	DefaultMinioMaxIdleConns   = 64
	DefaultMinioRequestTimeout = 30 * time.Second
	DefaultMinioMaxRetries     = 3
)

// MaxDeleteBatch is the most keys one S3 multi-object delete request may name.
const MaxDeleteBatch = 1000

// MinioConfig configures NewMinio. Endpoint and Bucket are required; every other
// field's zero value means its documented default.
//
// The credentials and the SSE-C key never appear in errors, and String, GoString and
// LogValue redact them, so a MinioConfig can be printed with any verb and logged with
// log/slog. (Other encoders, encoding/json for one, see the fields as they are.)
type MinioConfig struct {
	// Endpoint is the server as host or host:port, without a scheme, for example
	// "127.0.0.1:9000" or "s3.eu-west-1.amazonaws.com". Required.
	Endpoint string
	// Secure selects HTTPS. Default false: plain HTTP, as a local MinIO serves it.
	Secure bool
	// Region is the bucket's region. Naming it saves the GetBucketLocation request
	// minio-go would otherwise make. Default "us-east-1", MinIO's default region.
	Region string
	// Bucket is the bucket the store works in. Required.
	Bucket string

	// AccessKey, SecretKey and SessionToken are static credentials, used when AccessKey
	// is set; SecretKey is then required and SessionToken optional. Default: no static
	// credentials, so the standard chain applies, first hit wins: the AWS variables
	// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), the MinIO ones
	// (MINIO_ROOT_USER/MINIO_ROOT_PASSWORD or MINIO_ACCESS_KEY/MINIO_SECRET_KEY), the
	// AWS shared credentials file (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE), then IAM
	// (EC2 instance metadata, ECS and EKS container credentials). With none of them,
	// requests go unsigned and the bucket check fails with ErrAccessDenied.
	AccessKey    string
	SecretKey    string
	SessionToken string

	// CreateBucket creates Bucket when it does not exist. Default false: a missing
	// bucket fails NewMinio with ErrNoSuchBucket.
	CreateBucket bool
	// CheckPrefix makes the bucket check of NewMinio a listing of at most one key under
	// this prefix (s3:ListBucket with that s3:prefix) instead of a HeadBucket request,
	// which IAM allows only with s3:ListBucket on the whole bucket. So credentials whose
	// policy scopes listings to a prefix pass the check. s3persist.New sets it to
	// Config.Prefix. Empty, or a valid key prefix ending in "/". Default "": HeadBucket.
	CheckPrefix string
	// ContentType is the Content-Type of every object Put stores. Default
	// "application/octet-stream".
	ContentType string

	// SSE is the server-side encryption of every object Put stores:
	// encrypt.NewSSE() for SSE-S3 (keys managed by the server), encrypt.NewSSEKMS(keyID,
	// context) for SSE-KMS (a key of the server's KMS), or encrypt.NewSSEC(key) for
	// SSE-C (a 32-byte key of yours, sent with every Put and Get, which the server does
	// not keep: lose it and the objects cannot be read; S3 accepts it only over HTTPS, so
	// SSE-C requires Secure). Reads of SSE-S3 and SSE-KMS objects need no key. The
	// setting applies to new writes only: objects written before keep their encryption,
	// and with SSE-C a Get of an object written with another key (or none) fails.
	// Default nil: no encryption header, so the bucket's default encryption, if any.
	SSE encrypt.ServerSide

	// Transport carries every request. It is the hook for fault injection and latency
	// RoundTrippers: wrap http.DefaultTransport or a transport of your own. It is not
	// closed by Close. RootCAs and MaxIdleConns apply only to the store's own transport,
	// so with a Transport of yours, configure TLS (a private CA, a client certificate)
	// and the pool in it: for a private CA, clone http.DefaultTransport and set its
	// TLSClientConfig.RootCAs. Default nil: a transport of the store's own, with the
	// limits below, closed by Close.
	Transport http.RoundTripper
	// RootCAs verifies the server's certificate, for a server behind a private CA:
	// build it with x509.NewCertPool and AppendCertsFromPEM (or x509.SystemCertPool to
	// add to the system roots). Only with Secure and without Transport. Default nil: the
	// system roots.
	RootCAs *x509.CertPool
	// MaxIdleConns is how many idle connections to the endpoint the store's own
	// transport keeps for reuse. Set it to at least the number of requests in flight
	// at once (concurrent uploads plus reads), or connections are opened and closed
	// under load. Only without Transport. Default 64.
	MaxIdleConns int

	// RequestTimeout bounds each call to the endpoint, its retries included, unless ctx
	// ends earlier: a Put, Get, List or Delete, each batch of a DeleteMany, and the
	// bucket check of NewMinio. A Put or Get moves the whole object within it, so raise
	// it for large objects over slow links. Default 30s.
	RequestTimeout time.Duration
	// MaxRetries is how many times a failed request that is safe to repeat (network
	// errors, 5xx, throttling) is retried, with exponential backoff and jitter of at
	// most one second per wait. Conditional puts are never retried (see Store.Put).
	// Negative means no retries. Default 3.
	MaxRetries int
}

// Validate reports the first field that makes c unusable, by name.
func (c MinioConfig) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("s3store: invalid MinioConfig: "+format, args...)
	}
	switch {
	case c.Endpoint == "":
		return bad("Endpoint is required")
	case strings.Contains(c.Endpoint, "://"):
		return bad("Endpoint %q must be host[:port] without a scheme (Secure selects https)", c.Endpoint)
	case strings.ContainsAny(c.Endpoint, "/?#@ "):
		return bad("Endpoint %q must be host[:port] only", c.Endpoint)
	case c.Bucket == "":
		return bad("Bucket is required")
	case s3utils.CheckValidBucketNameStrict(c.Bucket) != nil:
		return bad("Bucket %q: %v", c.Bucket, s3utils.CheckValidBucketNameStrict(c.Bucket))
	case c.AccessKey == "" && c.SecretKey != "":
		return bad("SecretKey is set but AccessKey is empty")
	case c.AccessKey == "" && c.SessionToken != "":
		return bad("SessionToken is set but AccessKey is empty")
	case c.AccessKey != "" && c.SecretKey == "":
		return bad("AccessKey is set but SecretKey is empty")
	case c.SSE != nil && c.SSE.Type() == encrypt.SSEC && !c.Secure:
		return bad("SSE is SSE-C but Secure is false: S3 accepts a customer key only over HTTPS")
	case c.CheckPrefix != "" && (!strings.HasSuffix(c.CheckPrefix, "/") || ValidateKey(c.CheckPrefix+"x") != nil):
		return bad("CheckPrefix %q must be empty or a valid key prefix ending in \"/\"", c.CheckPrefix)
	case c.RootCAs != nil && !c.Secure:
		return bad("RootCAs is set but Secure is false")
	case c.RootCAs != nil && c.Transport != nil:
		return bad("RootCAs and Transport are both set; configure TLS in Transport")
	case c.MaxIdleConns != 0 && c.Transport != nil:
		return bad("MaxIdleConns and Transport are both set; size the pool in Transport")
	case c.MaxIdleConns < 0:
		return bad("MaxIdleConns %d is negative", c.MaxIdleConns)
	case c.RequestTimeout < 0:
		return bad("RequestTimeout %v is negative", c.RequestTimeout)
	}
	return nil
}

// withDefaults returns c with every zero field set to its default.
func (c MinioConfig) withDefaults() MinioConfig {
	if c.Region == "" {
		c.Region = DefaultMinioRegion
	}
	if c.ContentType == "" {
		c.ContentType = DefaultMinioContentType
	}
	if c.MaxIdleConns == 0 && c.Transport == nil {
		c.MaxIdleConns = DefaultMinioMaxIdleConns
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultMinioRequestTimeout
	}
	switch {
	case c.MaxRetries == 0:
		c.MaxRetries = DefaultMinioMaxRetries
	case c.MaxRetries < 0:
		c.MaxRetries = 0
	}
	return c
}

// String describes c with the credentials redacted.
func (c MinioConfig) String() string {
	redact := func(s string) string {
		if s == "" {
			return `""`
		}
		return "[redacted]"
	}
	sse := "none"
	if c.SSE != nil {
		sse = string(c.SSE.Type()) // never the key, nor the KMS key id and context
	}
	return fmt.Sprintf("MinioConfig{Endpoint:%q Secure:%t Region:%q Bucket:%q AccessKey:%s SecretKey:%s SessionToken:%s CreateBucket:%t CheckPrefix:%q ContentType:%q SSE:%s Transport:%T RootCAs:%t MaxIdleConns:%d RequestTimeout:%v MaxRetries:%d}",
		c.Endpoint, c.Secure, c.Region, c.Bucket, redact(c.AccessKey), redact(c.SecretKey), redact(c.SessionToken),
		c.CreateBucket, c.CheckPrefix, c.ContentType, sse, c.Transport, c.RootCAs != nil, c.MaxIdleConns, c.RequestTimeout, c.MaxRetries)
}

// GoString is String, so that %#v redacts too.
func (c MinioConfig) GoString() string { return c.String() }

// LogValue is String, so that slog handlers (JSON included) redact too.
func (c MinioConfig) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Minio is a Store over an S3-compatible server, through minio-go.
//
// Each Store call is one S3 request (a DeleteMany one per 1,000 keys), made with
// minio-go's low-level calls so that no goroutine outlives the call: Put is a single
// PUT with the exact size, never a multipart upload, so a conditional put is atomic;
// Get and GetRange read the response fully and close it; List asks for one page of at
// most limit keys and stops there.
type Minio struct {
	closer

	core *minio.Core
	// once is core without retries, for conditional puts (see Store.Put).
	once *minio.Core
	// own is the transport NewMinio built, nil when the caller supplied one.
	own *http.Transport

	bucket      string
	contentType string
	sse         encrypt.ServerSide
	timeout     time.Duration
}

var _ Store = (*Minio)(nil)

// NewMinio opens the bucket cfg names and checks that it can be reached with the
// credentials, within RequestTimeout or ctx's deadline, whichever comes first. Its
// error wraps ErrAccessDenied when the credentials are refused, ErrNoSuchBucket when
// the bucket is missing and CreateBucket is false, and ErrUnreachable when the
// endpoint did not answer.
func NewMinio(ctx context.Context, cfg MinioConfig) (*Minio, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()

	var creds *credentials.Credentials
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.EnvMinio{},
			&credentials.FileAWSCredentials{},
			&credentials.IAM{},
		})
	}
	m := &Minio{bucket: cfg.Bucket, contentType: cfg.ContentType, sse: cfg.SSE, timeout: cfg.RequestTimeout}
	rt := cfg.Transport
	if rt == nil {
		m.own = newTransport(cfg)
		rt = poolResetOnTimeout{m.own}
	}
	// minio-go counts attempts, not retries.
	newCore := func(rt http.RoundTripper, attempts int) (*minio.Core, error) {
		return minio.NewCore(cfg.Endpoint, &minio.Options{
			Creds:      creds,
			Secure:     cfg.Secure,
			Transport:  rt,
			Region:     cfg.Region,
			MaxRetries: attempts,
		})
	}
	var err error
	if m.core, err = newCore(rt, cfg.MaxRetries+1); err == nil {
		m.once, err = newCore(rt, 1)
	}
	if err == nil {
		err = m.openBucket(ctx, cfg, newCore)
	} else {
		err = fmt.Errorf("s3store: endpoint %q: %w", cfg.Endpoint, err)
	}
	if err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// poolResetOnTimeout closes the idle connections of its transport when a request times
// out. A request that times out has most likely met a connection that is dead without a
// reset: the endpoint moved (a container or load balancer replaced, a network cut and
// restored with new addresses) or a middlebox dropped it. The other pooled connections
// were opened to the same place and are most likely dead too; without this, each later
// request would spend its whole timeout on one of them, and a lease renewal after a
// partition would keep failing for minutes (seen: 32 dead connections, 66 to 77 s to learn
// of a takeover). Closing idle connections costs a new dial when the timeout had another
// cause.
type poolResetOnTimeout struct{ tr *http.Transport }

func (p poolResetOnTimeout) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := p.tr.RoundTrip(req)
	if err != nil && isTimeout(err) {
		p.tr.CloseIdleConnections()
	}
	return resp, err
}

// isTimeout reports whether err is a deadline that passed: the request's context or a
// network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

func newTransport(cfg MinioConfig) *http.Transport {
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          cfg.MaxIdleConns,
		MaxIdleConnsPerHost:   cfg.MaxIdleConns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Objects are stored as given; transparent gzip would change what Get returns.
		DisableCompression: true,
	}
	if cfg.Secure {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs}
	}
	return tr
}

// openBucket checks the bucket through a client whose transport tells whether any
// HTTP response came back: minio-go returns the bare ctx error when its retries run
// past the deadline, which alone cannot tell a dead endpoint from a slow one.
func (m *Minio) openBucket(ctx context.Context, cfg MinioConfig, newCore func(http.RoundTripper, int) (*minio.Core, error)) error {
	where := fmt.Sprintf("s3store: open bucket %q at %s", cfg.Bucket, cfg.Endpoint)
	probeRT := &probeTransport{rt: cfg.Transport}
	if m.own != nil {
		probeRT.rt = poolResetOnTimeout{m.own}
	}
	probe, err := newCore(probeRT, cfg.MaxRetries+1)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	rctx, cancel := m.requestContext(ctx)
	defer cancel()

	fail := func(err error) error {
		if s := classify(err); s != nil {
			return fmt.Errorf("%s: %w: %w", where, s, err)
		}
		err = m.timeoutError(rctx, err)
		responded, last := probeRT.result()
		if hint := tlsHint(err, last); hint != "" {
			where += " (" + hint + ")"
		}
		if resp := minio.ToErrorResponse(err); !cfg.Secure && resp.StatusCode == http.StatusBadRequest &&
			(resp.Code == "" || strings.HasPrefix(resp.Code, "400")) {
			// An HTTPS server answers a plain HTTP request with a bare 400, whose status
			// line minio-go takes as the code.
			where += " (a bare 400 answer: if the endpoint serves HTTPS, set Secure)"
		}
		if responded {
			return fmt.Errorf("%s: %w", where, err)
		}
		if last != nil && !errors.Is(err, last) {
			return fmt.Errorf("%s: %w: %w (last attempt: %v)", where, ErrUnreachable, err, last)
		}
		return fmt.Errorf("%s: %w: %w", where, ErrUnreachable, err)
	}
	exists, err := bucketExists(rctx, probe, cfg)
	switch {
	case err != nil:
		return fail(err)
	case exists:
		return nil
	case !cfg.CreateBucket:
		return fmt.Errorf("%s: %w", where, ErrNoSuchBucket)
	}
	err = probe.MakeBucket(rctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region})
	if err != nil && minio.ToErrorResponse(err).Code != minio.BucketAlreadyOwnedByYou {
		return fail(err)
	}
	return nil
}

// bucketExists checks the bucket and the credentials with one request: HeadBucket, or
// a listing of one key under cfg.CheckPrefix.
func bucketExists(ctx context.Context, probe *minio.Core, cfg MinioConfig) (bool, error) {
	if cfg.CheckPrefix == "" {
		return probe.BucketExists(ctx, cfg.Bucket)
	}
	opts := minio.ListObjectsOptions{Prefix: cfg.CheckPrefix, Recursive: true, MaxKeys: 1, FetchOwner: new(false)}
	for obj := range probe.ListObjectsIter(ctx, cfg.Bucket, opts) {
		if obj.Err != nil {
			if classify(obj.Err) == ErrNoSuchBucket {
				return false, nil
			}
			return false, obj.Err
		}
		break // one key is enough: no second request
	}
	if err := ctx.Err(); err != nil { // the iterator ends silently when ctx does
		return false, err
	}
	return true, nil
}

// tlsHint says what to do about an error that is a failed verification of the
// server's certificate, or "" for any other error.
func tlsHint(errs ...error) string {
	for _, err := range errs {
		var unknownCA x509.UnknownAuthorityError
		var hostname x509.HostnameError
		var invalid x509.CertificateInvalidError
		var record tls.RecordHeaderError
		switch {
		case errors.As(err, &unknownCA):
			return "TLS: the server's certificate is signed by an unknown authority; " +
				"for a private CA, set RootCAs (or the TLS config of your Transport) to it"
		case errors.As(err, &hostname):
			return "TLS: the server's certificate is not valid for the Endpoint's host name"
		case errors.As(err, &invalid):
			return "TLS: the server's certificate is not valid (expired, or not for a server)"
		case errors.As(err, &record):
			return "TLS: the server does not speak TLS; is Secure wrong?"
		}
	}
	return ""
}

// probeTransport records whether any response came back, and the last transport error.
type probeTransport struct {
	rt http.RoundTripper

	mu        sync.Mutex // guards responded and last
	responded bool
	last      error
}

func (p *probeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := p.rt.RoundTrip(req)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.last = err
	} else {
		p.responded = true
	}
	return resp, err
}

func (p *probeTransport) result() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.responded, p.last
}

// errRequestTimeout is the cause of a request context that ran out of RequestTimeout.
var errRequestTimeout = errors.New("s3store: RequestTimeout elapsed")

// requestContext bounds one call by RequestTimeout; an earlier deadline of ctx wins,
// as context.WithTimeout keeps the earlier of the two.
func (m *Minio) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, m.timeout, errRequestTimeout)
}

// timeoutError says so when err comes from RequestTimeout rather than the caller's ctx.
func (m *Minio) timeoutError(rctx context.Context, err error) error {
	if errors.Is(err, context.DeadlineExceeded) && errors.Is(context.Cause(rctx), errRequestTimeout) {
		return fmt.Errorf("request timed out after %v (RequestTimeout): %w", m.timeout, err)
	}
	return err
}

// classify maps a minio-go error to the sentinel it means, or nil. It is the one place
// where S3 error codes are interpreted. minio.ToErrorResponse does not unwrap, so this
// uses errors.As and must see the error before anything wraps it in a way that hides
// the ErrorResponse.
func classify(err error) error {
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) {
		return nil
	}
	switch resp.Code {
	case minio.NoSuchKey:
		return ErrNotFound
	case minio.NoSuchBucket:
		return ErrNoSuchBucket
	case minio.AccessDenied, "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
		"InvalidToken", "InvalidTokenId", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem":
		return ErrAccessDenied
	case minio.PreconditionFailed, "ConditionalRequestConflict":
		// AWS answers 409 ConditionalRequestConflict to a conditional write that races
		// another on the same key: ours did not happen, like a failed precondition.
		return ErrPreconditionFailed
	case minio.InvalidRange:
		// 416 to a ranged GET whose range starts at or past the end of the object.
		return ErrRangeNotSatisfiable
	}
	// Without a body, minio-go puts the status line in Code.
	switch resp.StatusCode {
	case http.StatusPreconditionFailed:
		return ErrPreconditionFailed
	case http.StatusRequestedRangeNotSatisfiable:
		return ErrRangeNotSatisfiable
	}
	return nil
}

// fail wraps an error of a request for op on key, classified once.
func (m *Minio) fail(rctx context.Context, op, key string, err error) error {
	if s := classify(err); s != nil {
		return opError(op, key, fmt.Errorf("%w: %w", s, err))
	}
	return opError(op, key, m.timeoutError(rctx, err))
}

// Put implements Store. The body goes with its exact length and Content-MD5, so the
// server refuses a body damaged on the way.
func (m *Minio) Put(ctx context.Context, key string, data []byte, opts PutOptions) (ObjectInfo, error) {
	ifMatch, err := m.admitPut(ctx, key, opts)
	if err != nil {
		return ObjectInfo{}, err
	}
	po := minio.PutObjectOptions{ContentType: m.contentType, ServerSideEncryption: m.sse}
	client := m.core
	switch {
	case opts.IfNoneMatch:
		po.SetMatchETagExcept("*")
		client = m.once
	case ifMatch != "":
		po.SetMatchETag(ifMatch)
		client = m.once
	}
	sum := md5.Sum(data)
	rctx, cancel := m.requestContext(ctx)
	defer cancel()
	up, err := client.PutObject(rctx, m.bucket, key, bytes.NewReader(data), int64(len(data)),
		base64.StdEncoding.EncodeToString(sum[:]), "", po)
	if err != nil {
		// S3 and MinIO answer an If-Match put on a missing object with NoSuchKey.
		if ifMatch != "" && classify(err) == ErrNotFound {
			return ObjectInfo{}, opError("put", key, fmt.Errorf("%w: %w", ErrPreconditionFailed, err))
		}
		return ObjectInfo{}, m.fail(rctx, "put", key, err)
	}
	return ObjectInfo{Key: key, Size: int64(len(data)), ETag: up.ETag}, nil
}

// Get implements Store.
func (m *Minio) Get(ctx context.Context, key string) ([]byte, ObjectInfo, error) {
	if err := m.admit(ctx, "get", key); err != nil {
		return nil, ObjectInfo{}, err
	}
	rctx, cancel := m.requestContext(ctx)
	defer cancel()
	// minio-go sends the key of SSE-C only; SSE-S3 and SSE-KMS need nothing on a read.
	body, info, _, err := m.core.GetObject(rctx, m.bucket, key, minio.GetObjectOptions{ServerSideEncryption: m.sse})
	if err != nil {
		return nil, ObjectInfo{}, m.failGet(rctx, "get", key, err)
	}
	defer body.Close()
	data, err := readBody(body, info.Size)
	if err != nil {
		return nil, ObjectInfo{}, m.fail(rctx, "get", key, err)
	}
	return data, ObjectInfo{Key: key, Size: int64(len(data)), ETag: info.ETag}, nil
}

// failGet is fail for the error of a GET request.
func (m *Minio) failGet(rctx context.Context, op, key string, err error) error {
	if m.sse != nil && m.sse.Type() == encrypt.SSEC && classify(err) == ErrAccessDenied {
		// S3 and MinIO refuse a wrong customer key as they refuse wrong credentials.
		return opError(op, key, fmt.Errorf("%w (or the object was written with another SSE-C key): %w", ErrAccessDenied, err))
	}
	return m.fail(rctx, op, key, err)
}

// GetRange implements Store with one GET of the range. S3 answers a range that starts
// at or past the end of the object with 416 InvalidRange, which classify maps, and one
// that starts inside the object but ends past it with the bytes that exist, a short
// answer this refuses: both are ErrRangeNotSatisfiable. A server that ignores the Range
// header and sends the whole object (no Content-Range) is served too: the range is cut
// out of it.
func (m *Minio) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, ObjectInfo, error) {
	if err := m.admitRange(ctx, key, offset, length); err != nil {
		return nil, ObjectInfo{}, err
	}
	last := offset + length - 1 // admitRange ruled out an overflow
	opts := minio.GetObjectOptions{ServerSideEncryption: m.sse}
	if err := opts.SetRange(offset, last); err != nil {
		return nil, ObjectInfo{}, opError(opGetRange, key, err) // unreachable for a valid range
	}
	rctx, cancel := m.requestContext(ctx)
	defer cancel()
	body, info, header, err := m.core.GetObject(rctx, m.bucket, key, opts)
	if err != nil {
		return nil, ObjectInfo{}, m.failGet(rctx, opGetRange, key, err)
	}
	defer body.Close()
	// info.Size is the Content-Length: the size of the part, not of the object.
	data, err := readBody(body, info.Size)
	if err != nil {
		return nil, ObjectInfo{}, m.fail(rctx, opGetRange, key, err)
	}
	cr := header.Get("Content-Range")
	if cr == "" {
		size := int64(len(data))
		if offset+length > size {
			return nil, ObjectInfo{}, opError(opGetRange, key, rangeError(offset, length, size))
		}
		// A copy, so that a small range does not pin the whole object in memory.
		return bytes.Clone(data[offset : offset+length]), ObjectInfo{Key: key, Size: size, ETag: info.ETag}, nil
	}
	first, end, size, err := parseContentRange(cr)
	switch {
	case err != nil:
		return nil, ObjectInfo{}, opError(opGetRange, key, err)
	case first != offset || end-first+1 != int64(len(data)) || end > last:
		return nil, ObjectInfo{}, opError(opGetRange, key, fmt.Errorf(
			"asked for bytes %d-%d, got %d bytes with Content-Range %q", offset, last, len(data), cr))
	case end < last:
		// S3 cuts a range at the end of the object.
		return nil, ObjectInfo{}, opError(opGetRange, key, rangeError(offset, length, size))
	}
	return data, ObjectInfo{Key: key, Size: size, ETag: info.ETag}, nil
}

// parseContentRange parses the Content-Range of a 206 answer, "bytes first-last/size".
// An unknown size ("*") is an error: GetRange must report the object's size.
func parseContentRange(cr string) (first, last, size int64, err error) {
	bad := func() (int64, int64, int64, error) {
		return 0, 0, 0, fmt.Errorf("unexpected Content-Range %q", cr)
	}
	spec, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return bad()
	}
	rng, total, ok := strings.Cut(spec, "/")
	if !ok {
		return bad()
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad()
	}
	for _, f := range []struct {
		s string
		v *int64
	}{{a, &first}, {b, &last}, {total, &size}} {
		if *f.v, err = strconv.ParseInt(f.s, 10, 64); err != nil || *f.v < 0 {
			return bad()
		}
	}
	if first > last || last >= size {
		return bad()
	}
	return first, last, size, nil
}

// readBody reads a response body of the announced size (-1 if unknown) in one
// allocation, and fails if the body is shorter or longer than announced.
func readBody(r io.Reader, size int64) ([]byte, error) {
	if size < 0 {
		return io.ReadAll(r)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("reading %d-byte body: %w", size, err)
	}
	var extra [1]byte
	if n, err := r.Read(extra[:]); n > 0 || (err != nil && err != io.EOF) {
		if err == nil {
			err = errors.New("body is longer than its Content-Length")
		}
		return nil, fmt.Errorf("reading %d-byte body: %w", size, err)
	}
	return data, nil
}

// List implements Store. It asks for one page of limit keys and stops reading once it
// has them, so minio-go's iterator makes no second request; when the page is exactly
// full it cannot tell whether more follow, and reports NextStartAfter, which may lead
// to one empty page.
func (m *Minio) List(ctx context.Context, prefix, startAfter string, limit int) (ListPage, error) {
	if err := m.admitList(ctx, prefix); err != nil {
		return ListPage{}, err
	}
	startAfter, done := normStartAfter(prefix, startAfter)
	if done {
		return ListPage{}, nil
	}
	limit = pageLimit(limit)
	rctx, cancel := m.requestContext(ctx)
	defer cancel()
	opts := minio.ListObjectsOptions{
		Prefix:     prefix,
		StartAfter: startAfter,
		Recursive:  true,
		MaxKeys:    limit,
		FetchOwner: new(false),
	}
	var page ListPage
	for obj := range m.core.ListObjectsIter(rctx, m.bucket, opts) {
		if obj.Err != nil {
			return ListPage{}, m.fail(rctx, "list", prefix, obj.Err)
		}
		page.Objects = append(page.Objects, ObjectInfo{Key: obj.Key, Size: obj.Size, ETag: obj.ETag})
		if len(page.Objects) == limit {
			page.NextStartAfter = obj.Key
			break
		}
	}
	// The iterator ends silently when the context does.
	if err := rctx.Err(); err != nil {
		return ListPage{}, m.fail(rctx, "list", prefix, err)
	}
	return page, nil
}

// Delete implements Store.
func (m *Minio) Delete(ctx context.Context, key string) error {
	if err := m.admit(ctx, "delete", key); err != nil {
		return err
	}
	rctx, cancel := m.requestContext(ctx)
	defer cancel()
	err := m.core.RemoveObject(rctx, m.bucket, key, minio.RemoveObjectOptions{})
	if err != nil && classify(err) != ErrNotFound { // some S3 clones answer 404
		return m.fail(rctx, "delete", key, err)
	}
	return nil
}

// DeleteMany implements Store with one multi-object delete request per 1,000 keys, in
// order. It stops at the first batch that fails; its keys that were not confirmed
// deleted, and every later key, are named as remaining. Keys holding characters XML
// cannot carry are deleted one request each by minio-go.
func (m *Minio) DeleteMany(ctx context.Context, keys []string) error {
	keys, err := m.admitMany(ctx, keys)
	if err != nil {
		return err
	}
	for start := 0; start < len(keys); start += MaxDeleteBatch {
		end := min(start+MaxDeleteBatch, len(keys))
		if failed, err := m.deleteBatch(ctx, keys[start:end]); err != nil {
			remaining := append(failed, keys[end:]...)
			return &DeleteManyError{Remaining: remaining, Total: len(keys), Err: err}
		}
	}
	return nil
}

// deleteBatch deletes up to MaxDeleteBatch keys in one request and returns the keys
// not confirmed deleted, with the first failure.
func (m *Minio) deleteBatch(ctx context.Context, batch []string) ([]string, error) {
	rctx, cancel := m.requestContext(ctx)
	defer cancel()
	objects := func(yield func(minio.ObjectInfo) bool) {
		for _, k := range batch {
			if !yield(minio.ObjectInfo{Key: k}) {
				return
			}
		}
	}
	results, err := m.core.RemoveObjectsWithIter(rctx, m.bucket, objects, minio.RemoveObjectsOptions{})
	if err != nil {
		return batch, m.fail(rctx, "delete", batch[0], err)
	}
	deleted := make(map[string]bool, len(batch))
	var first error
	for r := range results {
		switch {
		case r.Err == nil, classify(r.Err) == ErrNotFound:
			deleted[r.ObjectName] = true
		case first == nil && r.ObjectName == "":
			// The response could not be read: nothing in the batch is confirmed.
			first = m.fail(rctx, "delete", batch[0], r.Err)
		case first == nil:
			first = m.fail(rctx, "delete", r.ObjectName, r.Err)
		}
	}
	if first == nil {
		if err := rctx.Err(); err != nil { // the iterator ends silently when rctx does
			first = m.fail(rctx, "delete", batch[0], err)
		}
	}
	var failed []string
	for _, k := range batch {
		if !deleted[k] {
			failed = append(failed, k)
		}
	}
	if len(failed) > 0 && first == nil {
		first = opError("delete", failed[0], errors.New("the server reported no result for the key"))
	}
	return failed, first
}

// Close implements Store: it closes the idle connections of the store's own
// transport. A Transport from MinioConfig is left alone; its owner closes it.
func (m *Minio) Close() error {
	if m.close() && m.own != nil {
		m.own.CloseIdleConnections()
	}
	return nil
}

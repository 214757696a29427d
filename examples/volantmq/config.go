package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/s3store"
)

// Store kinds of the -store flag.
const (
	storeS3persist = "s3persist"
	storeBbolt     = "bbolt" // the VolantMQ reference plugin: a file on local disk
)

// Environment variables read as the defaults of the S3 flags. Credentials are never
// flags: they come from the standard chain of minio-go (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, MINIO_ACCESS_KEY, ..., the shared
// credentials file, IAM).
const (
	envEndpoint = "S3_ENDPOINT"
	envBucket   = "S3_BUCKET"
	envRegion   = "AWS_REGION"
)

// config is everything the broker is started with. Zero values are not meaningful: it
// comes from parseFlags, which applies the defaults, and validate checks it.
type config struct {
	Listen string // MQTT listener, host:port; default 127.0.0.1:1883
	Data   string // data directory of the embedded S3 server and of -store bbolt; default ./data
	Store  string // storeS3persist (default) or storeBbolt

	Durability    s3persist.Durability   // default Async
	WhenBehind    s3persist.Backpressure // s3persist WhenStoreIsBehind; default FailAtOnce
	Prefix        string                 // key prefix in the bucket; default "volantmq/"
	FlushInterval time.Duration          // s3persist FlushInterval; 0 = the library default (1s)

	// S3 settings. With an empty Endpoint the embedded S3 server is used.
	Endpoint     string // host:port, or a URL http://host:port / https://host
	Secure       bool   // set from the scheme of Endpoint (https, or no scheme)
	Bucket       string // default "volantmq"
	Region       string // default us-east-1
	CreateBucket bool   // create the bucket if it is missing (an external store)

	OfflineQoS0 bool   // queue QoS 0 messages for offline persistent sessions; default true
	Anonymous   bool   // accept connections without a user name; default true
	UsersFile   string // file of "user:password" lines; empty = no users

	ShutdownTimeout time.Duration // bound on the final flush at stop; default 20s
	LeaseTTL        time.Duration // s3persist LeaseTTL; 0 = the library default (15s)
	ForceTakeover   bool          // take the prefix without waiting for its owner's lease
	LogLevel        string        // VolantMQ's log level: debug, info, warn, error; default info
}

// embedded reports whether the broker runs its own S3 server.
func (c *config) embedded() bool { return c.Store == storeS3persist && c.Endpoint == "" }

// parseFlags reads the command line (args without the program name), with defaults
// from getenv. It never exits the process: -h returns flag.ErrHelp.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	var durability, whenBehind string
	fs := flag.NewFlagSet("volantmq-s3persist", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:1883", "MQTT listener address `host:port`")
	fs.StringVar(&c.Data, "data", "./data", "data `directory`: the embedded S3 server's bbolt file (s3.db), or bbolt.db of -store bbolt")
	fs.StringVar(&c.Store, "store", storeS3persist, "persistence: s3persist, or bbolt (the VolantMQ reference plugin, local disk only; for comparison)")
	fs.StringVar(&durability, "durability", "async", "s3persist durability: async (a change is durable within the flush interval) or sync (durable when the call returns)")
	fs.StringVar(&whenBehind, "when-store-is-behind", "fail", "s3persist WhenStoreIsBehind, once MaxPendingBytes of changes wait for the store: fail (refuse the change at once; the broker stays responsive) or wait (up to 30s per call; an outage stalls the broker)")
	fs.StringVar(&c.Prefix, "prefix", "volantmq/", "key `prefix` in the bucket (empty, or ending in /)")
	fs.DurationVar(&c.FlushInterval, "flush-interval", 0, "s3persist FlushInterval: longest a change waits for its upload in async mode (0: the library default, 1s)")
	fs.StringVar(&c.Endpoint, "s3-endpoint", getenv(envEndpoint), "S3 endpoint `host:port` or URL (http://... for plain HTTP; https if no scheme); empty: the embedded S3 server (env "+envEndpoint+")")
	fs.StringVar(&c.Bucket, "s3-bucket", or(getenv(envBucket), "volantmq"), "bucket (env "+envBucket+")")
	fs.StringVar(&c.Region, "s3-region", or(getenv(envRegion), "us-east-1"), "bucket region (env "+envRegion+")")
	fs.BoolVar(&c.CreateBucket, "s3-create-bucket", false, "create the bucket if it is missing (with -s3-endpoint)")
	fs.BoolVar(&c.OfflineQoS0, "offline-qos0", true, "queue QoS 0 messages for offline persistent sessions (VolantMQ's offlineQoS0)")
	fs.BoolVar(&c.Anonymous, "anonymous", true, "accept connections without a user name")
	fs.StringVar(&c.UsersFile, "users", "", "`file` of user:password lines (# comments) allowed to connect")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 20*time.Second, "bound on the final flush to the store at stop")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", 0, "s3persist LeaseTTL: how long a successor waits after this broker stops renewing its ownership of the prefix (0: the library default, 15s)")
	fs.BoolVar(&c.ForceTakeover, "force-takeover", false, "take the prefix at once even if another broker's lease on it is live (only when that broker is known to be gone)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "VolantMQ log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags only; -h lists them)", fs.Arg(0))
	}
	switch durability {
	case "async":
		c.Durability = s3persist.Async
	case "sync":
		c.Durability = s3persist.Sync
	default:
		return nil, fmt.Errorf("-durability %q: want async or sync", durability)
	}
	switch whenBehind {
	case "fail":
		c.WhenBehind = s3persist.FailAtOnce
	case "wait":
		c.WhenBehind = s3persist.WaitForRoom
	default:
		return nil, fmt.Errorf("-when-store-is-behind %q: want fail or wait", whenBehind)
	}
	if c.Endpoint != "" {
		host, secure, err := parseEndpoint(c.Endpoint)
		if err != nil {
			return nil, err
		}
		c.Endpoint, c.Secure = host, secure
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// parseEndpoint splits an endpoint flag into host:port and whether it is HTTPS.
func parseEndpoint(s string) (host string, secure bool, err error) {
	if !strings.Contains(s, "://") {
		return s, true, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", false, fmt.Errorf("-s3-endpoint %q: %w", s, err)
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", false, fmt.Errorf("-s3-endpoint %q: want scheme://host[:port] and nothing else", s)
	}
	switch u.Scheme {
	case "http":
		return u.Host, false, nil
	case "https":
		return u.Host, true, nil
	}
	return "", false, fmt.Errorf("-s3-endpoint %q: scheme must be http or https", s)
}

// validate names the first bad setting.
func (c *config) validate() error {
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", c.Listen, err)
	}
	if port == "" {
		return fmt.Errorf("-listen %q: no port", c.Listen)
	}
	_ = host // an empty host listens on every interface, as net.Listen does
	if c.Store != storeS3persist && c.Store != storeBbolt {
		return fmt.Errorf("-store %q: want %s or %s", c.Store, storeS3persist, storeBbolt)
	}
	if c.Data == "" && (c.embedded() || c.Store == storeBbolt) {
		return errors.New("-data: empty")
	}
	if c.Prefix != "" && !strings.HasSuffix(c.Prefix, "/") {
		return fmt.Errorf("-prefix %q: must be empty or end in /", c.Prefix)
	}
	if c.Bucket == "" {
		return errors.New("-s3-bucket: empty")
	}
	if c.FlushInterval < 0 {
		return fmt.Errorf("-flush-interval %v: negative", c.FlushInterval)
	}
	if c.LeaseTTL < 0 {
		return fmt.Errorf("-lease-ttl %v: must not be negative", c.LeaseTTL)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("-shutdown-timeout %v: must be positive", c.ShutdownTimeout)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("-log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	if !c.Anonymous && c.UsersFile == "" {
		return errors.New("-anonymous=false needs -users: nobody could connect")
	}
	return nil
}

// minioConfig is the connection to the external store.
func (c *config) minioConfig() s3store.MinioConfig {
	return s3store.MinioConfig{
		Endpoint:     c.Endpoint,
		Secure:       c.Secure,
		Region:       c.Region,
		Bucket:       c.Bucket,
		CreateBucket: c.CreateBucket,
	}
}

func or(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

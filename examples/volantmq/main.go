// Command volantmq is an example MQTT broker: VolantMQ v0.3.2's server package with its
// persistent state (sessions, queued messages, retained messages) in an S3-compatible
// object store through s3persist.
//
// With no S3 settings it runs an S3 server inside the process (gofakes3 on bbolt, in the
// data directory), so the first run needs no setup; with -s3-endpoint (or S3_ENDPOINT)
// it uses that store. See README.md for the flags and the shutdown order.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"
	"github.com/VolantMQ/vlapi/vlplugin"
	"github.com/VolantMQ/volantmq/auth"
	"github.com/VolantMQ/volantmq/configuration"
	"github.com/VolantMQ/volantmq/server"
	"github.com/VolantMQ/volantmq/transport"
	"github.com/troian/healthcheck"
	persistenceBbolt "gitlab.com/VolantMQ/vlplugin/persistence/bbolt"

	"github.com/s3persist/s3persist"
)

// ReadyPrefix starts the line printed on stdout once the listener accepts connections;
// the address follows it. Scripts and tests wait for it.
const ReadyPrefix = "ready: mqtt listener on "

// startTimeout bounds opening the store and loading the state at start.
const startTimeout = 2 * time.Minute

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		logger.Error("bad arguments", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, logger, os.Stdout); err != nil {
		logger.Error("broker failed", "err", err)
		os.Exit(1)
	}
}

// run starts the store and the broker, prints the ready line on stdout, serves until ctx
// is done, then stops the broker first and the store second.
func run(ctx context.Context, cfg *config, logger *slog.Logger, stdout io.Writer) (err error) {
	if err := configureBrokerLog(cfg.LogLevel); err != nil {
		return err
	}
	users, err := loadUsers(cfg.UsersFile)
	if err != nil {
		return err
	}

	st, err := openStore(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, st.close(cfg.ShutdownTimeout)) }()

	// VolantMQ keeps providers in a package-level registry; a second run in one process
	// (tests) registers again.
	auth.UnRegister(authName)
	if err := auth.Register(authName, users); err != nil {
		return fmt.Errorf("register auth provider: %w", err)
	}
	defer auth.UnRegister(authName)
	authMgr, err := auth.NewManager([]string{authName}, cfg.Anonymous)
	if err != nil {
		return fmt.Errorf("auth manager: %w", err)
	}

	mc := configuration.DefaultConfig()
	if len(mc.Mqtt.Version) != 1 || mc.Mqtt.Version[0] != "v3.1.1" {
		// retainedV5 (fixes.go) relies on it.
		return fmt.Errorf("the broker's default MQTT versions are %v; this example supports v3.1.1 only", mc.Mqtt.Version)
	}
	mc.Mqtt.Options.OfflineQoS0 = cfg.OfflineQoS0
	srv, err := server.NewServer(server.Config{
		MQTT:            mc.Mqtt,
		Acceptor:        mc.System.Acceptor,
		Persistence:     brokerFixes{IFace: st.persist, dropOfflineQoS0: !cfg.OfflineQoS0},
		Health:          noHealth{},
		OnDuplicate:     func(string, bool) {},
		TransportStatus: func(id, status string) { logger.Info("listener", "id", id, "status", status) },
	})
	if err != nil {
		return fmt.Errorf("create the broker: %w", err)
	}
	host, port, _ := net.SplitHostPort(cfg.Listen) // checked by validate
	tcp := transport.NewConfigTCP(&transport.Config{Host: host, Port: port, AuthManager: authMgr})
	if err := srv.ListenAndServe(tcp); err != nil {
		_ = srv.Shutdown()
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	// ListenAndServe returns once the socket is bound: connections are accepted now.
	fmt.Fprintf(stdout, "%s%s (store %s)\n", ReadyPrefix, cfg.Listen, st.describe)

	var fenced <-chan struct{} // nil (never ready) for the bbolt plugin
	if st.s3p != nil {
		fenced = st.s3p.Fenced()
	}
	select {
	case <-ctx.Done():
	case <-fenced:
		// Another broker owns the prefix now: this one can store nothing more, so its
		// clients must reconnect to the new owner.
		err = errors.New("another broker took over the bucket prefix (s3persist fenced this one); stopping")
		logger.Error("fenced", "err", err)
	}
	logger.Info("stopping: the broker first (it stores sessions and retained messages), then the store")
	start := time.Now()
	if st.s3p != nil {
		// Insurance: VolantMQ v0.3.2 can panic while it shuts down (see README.md), and a
		// panic in one of its own goroutines ends the process before the store's
		// Shutdown; make what it handed over so far durable first.
		fctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		if err := st.s3p.Flush(fctx); err != nil {
			logger.Error("flush before the broker's shutdown", "err", err)
		}
		cancel()
		// The broker stores every session while it stops: in Sync mode one round trip
		// each, unless they go together into the store's final flush.
		st.s3p.BeginShutdown()
	}
	if err := shutdownBroker(srv); err != nil {
		logger.Error("broker shutdown", "err", err)
	}
	logger.Info("broker stopped", "took", time.Since(start).Round(time.Millisecond))
	return err
}

// shutdownBroker runs srv.Shutdown, turning a panic in it into an error so that the
// store is still shut down. VolantMQ v0.3.2's session manager panics ("negative
// WaitGroup counter", clients/sessions.go:206) when a session goes offline while it
// stops; what the broker had not stored by then is lost, the rest is flushed.
func shutdownBroker(srv server.Server) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("VolantMQ panicked while shutting down (what it had not stored yet is lost): %v", r)
		}
	}()
	return srv.Shutdown()
}

// store is the persistence the broker runs on, and what must be released after it.
type store struct {
	persist  vlpersistence.IFace
	s3p      *s3persist.Persistence // nil for -store bbolt
	embedded *embeddedS3            // nil unless the embedded S3 server runs
	describe string
	log      *slog.Logger
}

// openStore opens the persistence named by cfg and logs what it loaded.
func openStore(ctx context.Context, cfg *config, logger *slog.Logger) (*store, error) {
	start := time.Now()
	st := &store{log: logger}
	if cfg.Store == storeBbolt {
		file := filepath.Join(cfg.Data, "bbolt.db")
		p, err := persistenceBbolt.Load(map[string]interface{}{"file": file},
			&vlplugin.SysParams{Log: configuration.GetLogger().Named("persistence.bbolt")})
		if err != nil {
			return nil, fmt.Errorf("bbolt plugin on %s: %w", file, err)
		}
		st.persist, st.describe = p, "bbolt file "+file
		st.logLoaded(start)
		return st, nil
	}

	s3cfg := cfg.minioConfig()
	if cfg.embedded() {
		e, err := startEmbedded(cfg.Data, cfg.Bucket, 5*time.Second)
		if err != nil {
			return nil, err
		}
		st.embedded = e
		s3cfg = e.minioConfig(cfg.Bucket)
		st.describe = fmt.Sprintf("s3persist on the embedded S3 server (%s, bucket %s, prefix %q)",
			filepath.Join(cfg.Data, embeddedFile), cfg.Bucket, cfg.Prefix)
	} else {
		scheme := "http"
		if cfg.Secure {
			scheme = "https"
		}
		st.describe = fmt.Sprintf("s3persist on %s://%s (bucket %s, prefix %q)", scheme, cfg.Endpoint, cfg.Bucket, cfg.Prefix)
	}
	nctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	p, err := s3persist.New(nctx, s3persist.Config{
		S3:                s3cfg,
		Prefix:            cfg.Prefix,
		Durability:        cfg.Durability,
		WhenStoreIsBehind: cfg.WhenBehind,
		FlushInterval:     cfg.FlushInterval,
		ShutdownTimeout:   cfg.ShutdownTimeout,
		LeaseTTL:          cfg.LeaseTTL,
		ForceTakeover:     cfg.ForceTakeover,
		Logger:            logger,
	})
	if err != nil {
		if st.embedded != nil {
			_ = st.embedded.Close(context.Background())
		}
		return nil, err
	}
	st.persist, st.s3p = p, p
	st.describe += ", durability " + durabilityName(cfg.Durability)
	st.logLoaded(start)
	return st, nil
}

// logLoaded reports what the broker will find at start.
func (st *store) logLoaded(start time.Time) {
	var sessions uint64
	if s, err := st.persist.Sessions(); err == nil {
		sessions = s.Count()
	}
	var retained int
	if r, err := st.persist.Retained(); err == nil {
		if pkts, err := r.Load(); err == nil {
			retained = len(pkts)
		}
	}
	st.log.Info("loaded", "store", st.describe, "sessions", sessions, "retained", retained,
		"took", time.Since(start).Round(time.Millisecond))
}

// close shuts the persistence down (VolantMQ never calls Shutdown itself) and then the
// embedded S3 server. For s3persist it logs what the final flush wrote.
func (st *store) close(timeout time.Duration) error {
	start := time.Now()
	var before s3persist.Stats
	if st.s3p != nil {
		before = st.s3p.Stats()
	}
	err := st.persist.Shutdown()
	if err != nil {
		err = fmt.Errorf("persistence shutdown: %w", err)
	}
	if st.s3p != nil {
		after := st.s3p.Stats()
		st.log.Info("store flushed",
			"pending_changes_at_stop", before.Journal.PendingItems,
			"pending_bytes_at_stop", before.Journal.PendingBytes,
			"flushed_changes", after.Journal.Items-before.Journal.Items,
			"flushed_bytes", after.Journal.Bytes-before.Journal.Bytes,
			"not_durable_changes", after.Journal.PendingItems,
			"sessions", after.Sessions,
			"took", time.Since(start).Round(time.Millisecond))
	} else if err == nil {
		st.log.Info("store closed", "took", time.Since(start).Round(time.Millisecond))
	}
	if st.embedded != nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if cerr := st.embedded.Close(ctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("embedded S3 server: %w", cerr))
		}
	}
	return err
}

func durabilityName(d s3persist.Durability) string {
	if d == s3persist.Sync {
		return "sync"
	}
	return "async"
}

// configureBrokerLog sets the level of VolantMQ's own logger (debug by default).
func configureBrokerLog(level string) error {
	var lc configuration.LogConfig
	lc.Console.Level = level
	if err := configuration.ConfigureLoggers(&lc); err != nil {
		return fmt.Errorf("broker log: %w", err)
	}
	return nil
}

// noHealth is the health registry the broker's listeners need (server.Config.Health must
// not be nil); the example serves no health endpoint, so checks are accepted and unused.
type noHealth struct{}

var _ healthcheck.Checks = noHealth{}

func (noHealth) AddLivenessCheck(string, healthcheck.Check) error  { return nil }
func (noHealth) AddReadinessCheck(string, healthcheck.Check) error { return nil }
func (noHealth) RemoveLivenessCheck(string) error                  { return nil }
func (noHealth) RemoveReadinessCheck(string) error                 { return nil }

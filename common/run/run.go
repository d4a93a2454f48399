// Package run wires a destination into the common pipeline: configuration,
// logging, the MQTT subscription, the spool, the pipeline, the HTTP health
// and metrics endpoints, signals and graceful shutdown. A service's main is
// one call to Main.
package run

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cloud-block/cloud-block/common/clock"
	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/deadletter"
	"github.com/cloud-block/cloud-block/common/metrics"
	"github.com/cloud-block/cloud-block/common/mqtt"
	"github.com/cloud-block/cloud-block/common/pipeline"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/spool"
)

// Version is set at build time with -ldflags "-X ...run.Version=...".
var Version = "dev"

// Exit codes (listed by the help subcommand and in the README).
const (
	ExitOK     = 0
	ExitFatal  = 1
	ExitConfig = 2
	// ExitUnreachable: check could not reach the broker or the destination,
	// or it did not answer as expected (no such queue, bucket, topic, hub).
	ExitUnreachable = 3
	// ExitDenied: check was refused the credentials or a permission the
	// block needs (by the broker, the destination or Azure Key Vault).
	ExitDenied = 4
)

// Info is what a service's constructor gets besides its variables.
type Info struct {
	Service string
	Device  string
	Log     *slog.Logger
}

// Service describes a destination.
type Service struct {
	// Name is the service's name ("aws-sqs"), used for defaults and logs.
	Name string
	// Vars are the service's own variables; same-named common ones are overridden.
	Vars []config.Var
	// New reads the service's variables from l (problems are collected by l)
	// and returns its sink, not yet connected, or an error: l.Err() when the
	// variables have problems. Never nil and nil.
	New func(l *config.Loader, info Info) (sink.Sink, error)
}

// AllVars returns every variable the service reads, common ones first.
func (s Service) AllVars() []config.Var { return config.Merge(CommonVars(s.Name), s.Vars) }

// Main runs the service with the process's arguments and environment and exits.
func Main(svc Service) {
	os.Exit(Run(context.Background(), svc, os.Args[1:], config.Env, os.Stdout, os.Stderr))
}

// Run is Main without the exit: it returns the exit code. Logs go to
// stdout; a configuration error is also printed, one problem a line, on stderr.
func Run(ctx context.Context, svc Service, args []string, lookup config.Lookup, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "healthcheck":
			return healthcheck(svc, lookup, stdout)
		case "version", "--version":
			fmt.Fprintf(stdout, "cloud-block-%s %s\n", svc.Name, Version)
			return ExitOK
		case "env":
			fmt.Fprint(stdout, config.MarkdownTable(svc.AllVars()))
			return ExitOK
		case "check":
			return check(ctx, svc, args[1:], lookup, stdout, stderr)
		case "deadletter", "spool":
			return operate(ctx, svc, args[0], args[1:], lookup, stdout, stderr)
		case "help", "-h", "--help":
			fmt.Fprint(stdout, help(svc))
			return ExitOK
		default:
			fmt.Fprintf(stderr, "unknown command %q; commands: check, deadletter, spool, healthcheck, env, version, help (none runs the service)\n", args[0])
			return ExitConfig
		}
	}
	s, err := configure(ctx, svc, lookup, stdout, nil)
	if err != nil {
		fmt.Fprintf(stderr, "cloud-block-%s: configuration error:\n", svc.Name)
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "  - %s\n", line)
		}
		slog.New(slog.NewJSONHandler(stdout, nil)).Error("configuration error: not starting", "service", svc.Name, "err", err)
		return ExitConfig
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := s.serve(ctx); err != nil {
		s.log.Error("stopped on error", "err", err)
		return ExitFatal
	}
	return ExitOK
}

// settings is the validated configuration.
type settings struct {
	svc         Service
	log         *slog.Logger
	device      string
	mqtt        mqtt.Options
	spool       spool.Options
	deadMax     int64
	pipe        pipeline.Config
	readyMaxAge time.Duration
	shutdown    time.Duration
	listen      string
	snk         sink.Sink
	fromVault   []string
	vault       *vaultState // nil without Azure Key Vault
	// clockMaxJump is CLOCK_MAX_JUMP; clock, once serving, the clock's guard.
	clockMaxJump time.Duration
	clock        *clock.Guard
}

func load(svc Service, lookup config.Lookup, stdout io.Writer) (*settings, error) {
	l := config.NewLoader(lookup, svc.AllVars())
	s := &settings{svc: svc}

	level := slog.LevelInfo
	switch l.Enum("LOG_LEVEL", "debug", "info", "warn", "error") {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	s.log = slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level})).With("service", svc.Name)

	s.device = l.String("BALENA_DEVICE_UUID")
	if s.device == "" {
		s.device, _ = os.Hostname()
	} else if !validDevice(s.device) {
		l.Fail("BALENA_DEVICE_UUID", s.device, "1 to 128 letters, digits, '.', '_' or '-' (it is used in object keys)")
	}
	broker := l.URL("LOCAL_MQTT_HOST", "mqtt", "tcp", "mqtts", "ssl", "tls", "ws", "wss")
	topics, err := mqtt.ParseTopics(l.String("LOCAL_MQTT_INPUT_TOPIC"))
	if err != nil {
		l.Fail("LOCAL_MQTT_INPUT_TOPIC", l.String("LOCAL_MQTT_INPUT_TOPIC"),
			"comma-separated MQTT topic filters, '+' and '#' as whole levels ("+err.Error()+")")
	}
	clientID := l.String("LOCAL_MQTT_CLIENT_ID")
	if clientID == "" {
		clientID = "cloud-block-" + svc.Name + "-" + s.device
	} else if !printable(clientID) {
		l.Fail("LOCAL_MQTT_CLIENT_ID", clientID, "printable UTF-8 text")
	}
	s.mqtt = mqtt.Options{
		Broker: broker, Topics: topics, ClientID: clientID,
		Username: l.String("LOCAL_MQTT_USERNAME"), Password: l.String("LOCAL_MQTT_PASSWORD"),
		KeepAlive: l.Duration("LOCAL_MQTT_KEEPALIVE", 5*time.Second, 10*time.Minute),
	}
	if !printable(s.mqtt.Username) {
		l.Fail("LOCAL_MQTT_USERNAME", s.mqtt.Username, "printable UTF-8 text")
	}
	if s.mqtt.Password != "" && s.mqtt.Username == "" {
		l.Fail("LOCAL_MQTT_PASSWORD", s.mqtt.Password, "a password only together with LOCAL_MQTT_USERNAME")
	}
	s.mqtt.TLS = loadTLS(l, broker)
	s.mqtt.Logger = s.log

	s.loadBuffer(l)
	// What recognising the broker's redeliveries needs after a crash.
	s.mqtt.Journal = filepath.Join(s.spool.Dir, "mqtt-journal")
	s.pipe = pipeline.Config{
		MaxMessages:  l.Int("BATCH_MAX_MESSAGES", 1, pipeline.MaxMessagesMax),
		MaxBytes:     int(l.Bytes("BATCH_MAX_BYTES", 1, pipeline.MaxBytesMax)),
		MaxWait:      l.Duration("BATCH_MAX_WAIT", 0, pipeline.MaxWaitMax),
		Concurrency:  l.Int("BATCH_CONCURRENCY", 1, pipeline.ConcurrencyMax),
		SendTimeout:  l.Duration("SEND_TIMEOUT", pipeline.SendTimeoutMin, pipeline.SendTimeoutMax),
		RetryInitial: l.Duration("RETRY_INITIAL_BACKOFF", pipeline.RetryMin, pipeline.RetryInitialMax),
	}
	// Never below the first wait.
	s.pipe.RetryMax = l.Duration("RETRY_MAX_BACKOFF", max(pipeline.RetryMin, s.pipe.RetryInitial), pipeline.RetryMaxMax)
	// A crash resends at most about one batch besides those in flight.
	s.spool.MarkEvery = s.pipe.MaxMessages
	s.readyMaxAge = l.Duration("READY_MAX_UNSENT_AGE", time.Second, 30*24*time.Hour)
	s.shutdown = l.Duration("SHUTDOWN_TIMEOUT", 0, 10*time.Minute)
	s.clockMaxJump = l.Duration("CLOCK_MAX_JUMP", clock.MaxJumpMin, clock.MaxJumpMax)
	loadProxy(l)
	s.listen = l.String("HTTP_LISTEN")
	if s.listen != "off" {
		if _, _, err := splitHostPort(s.listen); err != nil {
			l.Fail("HTTP_LISTEN", s.listen, "host:port such as :8080 or 127.0.0.1:8080, or off")
		}
	}

	snk, err := svc.New(l, Info{Service: svc.Name, Device: s.device, Log: s.log})
	if err := l.Err(); err != nil {
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	s.snk = snk
	return s, nil
}

// loadBuffer reads the spool's and the dead-letter store's variables (the
// operator's commands read only these).
func (s *settings) loadBuffer(l *config.Loader) {
	policy := l.Enum("BUFFER_FULL_POLICY", string(spool.Block), string(spool.DropOldest))
	dir := l.String("BUFFER_DIR")
	if err := writableDir(dir); err != nil {
		l.Fail("BUFFER_DIR", dir, "an absolute path to a writable directory on a persistent volume ("+err.Error()+")")
	}
	// The spool and the pipeline own their options' ranges (spool.Open and
	// pipeline.New refuse values outside them); read within the same
	// ranges, a bad value is reported here under its variable's name.
	s.spool = spool.Options{
		Dir:          dir,
		MaxBytes:     l.Bytes("BUFFER_MAX_BYTES", spool.MaxBytesMin, spool.MaxBytesMax),
		Policy:       spool.Policy(policy),
		SyncInterval: l.Duration("BUFFER_SYNC_INTERVAL", 0, spool.SyncIntervalMax),
		MemoryBytes:  l.Bytes("BUFFER_MEMORY_BYTES", spool.MemoryBytesMin, spool.MemoryBytesMax),
		CommitWait:   l.Duration("BUFFER_COMMIT_WAIT", 0, spool.CommitWaitMax),
		Logger:       s.log,
	}
	s.deadMax = l.Bytes("DEADLETTER_MAX_BYTES", 1<<20, 1<<40)
}

// openSpool opens the spool, waiting while another process holds it: an
// operator's command (spool export, deadletter replay) run while the
// service was stopped, or, misconfigured, a second block on the same
// BUFFER_DIR.
func openSpool(ctx context.Context, opt spool.Options, log *slog.Logger) (*spool.Spool, error) {
	var warned time.Time
	for {
		sp, err := spool.Open(opt)
		if !errors.Is(err, spool.ErrInUse) {
			return sp, err
		}
		if time.Since(warned) >= time.Minute {
			log.Warn("waiting for the spool: another process holds BUFFER_DIR (an operator's command, or a second block using the same directory)",
				"buffer_dir", opt.Dir)
			warned = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("spool: %w", err)
		case <-time.After(time.Second):
		}
	}
}

func splitHostPort(a string) (string, string, error) {
	u, err := url.Parse("http://" + a)
	if err != nil || u.Port() == "" || u.Path != "" {
		return "", "", errors.New("bad address")
	}
	return u.Hostname(), u.Port(), nil
}

// serve runs until ctx ends, then shuts down gracefully.
func (s *settings) serve(ctx context.Context) error {
	log := s.log
	log.Info("starting", "version", Version, "device", s.device, "buffer_dir", s.spool.Dir)
	reg := metrics.NewRegistry("service", s.svc.Name)

	sp, err := openSpool(ctx, s.spool, log)
	if err != nil {
		return err
	}
	dead, err := deadletter.Open(s.deadDir(), s.deadMax, log)
	if err != nil {
		sp.Close()
		return err
	}
	defer dead.Close()

	pipeMetrics := pipeline.NewMetrics(reg)
	// With Azure Key Vault, rotated secrets reach the sink: it is swapped
	// for one built from the new values (s.snk becomes the swapping wrapper).
	stopRotation := func() {}
	var onAuthError func(context.Context)
	if s.vault != nil {
		onAuthError, stopRotation = s.startRotation(ctx)
	}
	pipe, err := pipeline.New(s.pipe, sp, s.snk, dead, pipeMetrics, log)
	if err != nil {
		stopRotation()
		sp.Close()
		return err
	}
	pipe.OnAuthError = onAuthError
	pipe.Clock = s.startClock(ctx)
	stopAdmin := serveAdmin(&admin{sp: sp, dead: dead, deadDir: s.deadDir(), opt: s.spool, service: s.svc.Name,
		device: s.device, log: log, running: true, fullWait: time.Minute}, log)
	defer stopAdmin()

	// A message the spool refuses on arrival is dead-lettered the way the
	// pipeline dead-letters one the destination refuses.
	ingestCtx, stopIngest := context.WithCancel(context.Background())
	defer stopIngest()
	in := newIngest(ingestCtx, sp, pipe.DeadLetter, reg)
	in.receiveTime = s.clock.ReceiveTime
	sub := mqtt.New(s.mqtt, in.handle)
	s.registerMetrics(reg, sp, dead, sub, pipe)

	var srv *http.Server
	if s.listen != "off" {
		srv = &http.Server{Addr: s.listen, Handler: s.handler(parts{ctx: ctx, reg: reg, sp: sp, sub: sub, pipe: pipe, dead: dead, in: in, pm: pipeMetrics}), ReadHeaderTimeout: 5 * time.Second}
		ln, err := listen(s.listen)
		if err != nil {
			stopRotation()
			sp.Close()
			return fmt.Errorf("HTTP_LISTEN=%s: %w", s.listen, err)
		}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("HTTP server stopped", "err", err)
			}
		}()
	}

	sub.Start()
	stopCut, cancelCut := context.WithCancel(context.Background())
	kill, cancelKill := context.WithCancel(context.Background())
	defer cancelKill()
	pipeDone := make(chan error, 1)
	go func() { pipeDone <- pipe.Run(stopCut, kill) }()

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", s.shutdown.String())
	case runErr = <-pipeDone:
		pipeDone <- runErr
		log.Error("pipeline stopped", "err", runErr)
	}

	// 1. Take no new messages; commit and acknowledge what was queued.
	stopAdmin()
	sub.Pause()
	stopIngest()
	sp.StopWriting()
	sub.Disconnect(500 * time.Millisecond)
	// 2. Let in-flight batches finish within the timeout; the rest stays spooled.
	cancelCut()
	timer := time.AfterFunc(s.shutdown, cancelKill)
	<-pipeDone
	timer.Stop()
	stopRotation()
	// 3. Persist the delivered mark and close.
	if err := sp.Close(); err != nil {
		log.Error("closing the spool", "err", err)
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.snk.Close(closeCtx); err != nil {
		log.Warn("closing the destination", "err", err)
	}
	if srv != nil {
		_ = srv.Shutdown(closeCtx)
	}
	st := sp.Stats()
	log.Info("stopped", "received", in.received.Value(), "acknowledged", in.acked.Value(),
		"delivered", pipeMetrics.Delivered.Value(), "undelivered_in_spool", sp.Backlog(), "spool_bytes", st.Bytes)
	return runErr
}

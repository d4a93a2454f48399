// Command demo is `make demo`: it shows one destination working end to end on
// this machine, with no cloud account. It starts Mosquitto, the local emulator
// of the destination, the block (built from this checkout) and the example
// sensor, then every few seconds prints what arrived in the emulator and the
// block's own counters. Ctrl-C stops the sensor, lets the block deliver what
// it holds, and stops everything by PID.
//
//	go run ./testenv/cmd/demo -service aws-s3
//
// Everything it writes (binaries, logs, the block's buffer) is under
// .cache/demo/<service>/, kept after it exits for a look at the logs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	service := flag.String("service", "aws-s3", "destination to show: "+strings.Join(serviceNames(), ", "))
	interval := flag.Duration("interval", 500*time.Millisecond, "time between the sensor's readings")
	every := flag.Duration("every", 3*time.Second, "time between reports")
	duration := flag.Duration("duration", 0, "stop by itself after this long (0: run until Ctrl-C)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	cfg := config{Service: *service, Interval: *interval, Every: *every}
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		if errors.Is(err, errUnavailable) {
			os.Exit(3)
		}
		os.Exit(1)
	}
}

type config struct {
	Service  string
	Interval time.Duration
	Every    time.Duration
	// Root is the repository root; found from the working directory if empty.
	Root string
	// Work is where binaries, logs and the buffer go (default .cache/demo/<service>).
	Work string
}

// errUnavailable marks a destination the demo cannot show in this checkout.
var errUnavailable = errors.New("not available")

// findRoot walks up from the working directory to the go.work of the repo.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "services")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the demo from the cloud-block repository (make demo)")
		}
		dir = parent
	}
}

// run is the whole demo; it returns when ctx ends and everything is stopped.
func run(ctx context.Context, cfg config, out io.Writer) error {
	mk, ok := destinations[cfg.Service]
	if !ok {
		return fmt.Errorf("unknown service %q; choose one of %s", cfg.Service, strings.Join(serviceNames(), ", "))
	}
	root := cfg.Root
	if root == "" {
		var err error
		if root, err = findRoot(); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(root, "services", cfg.Service, "main.go")); err != nil {
		return fmt.Errorf("SERVICE=%s: %w: services/%s has no main.go in this checkout yet", cfg.Service, errUnavailable, cfg.Service)
	}
	d, err := newDemo(root, cfg, out)
	if err != nil {
		return err
	}
	dest := mk()
	d.say("cloud-block demo: %s -> %s", cfg.Service, dest.Describe())
	d.say("work dir %s (binaries, logs, the block's buffer)", rel(root, d.work))
	defer d.stopAll()

	if err := d.build(ctx, cfg.Service, dest.Helpers()); err != nil {
		return err
	}
	broker, err := d.startMosquitto()
	if err != nil {
		return err
	}
	destEnv, err := dest.Start(ctx, d)
	if err != nil {
		return fmt.Errorf("starting the emulator: %w", err)
	}
	block, err := d.startBlock(cfg.Service, broker, destEnv)
	if err != nil {
		return err
	}
	sensor, err := d.startSensor(broker)
	if err != nil {
		return err
	}
	d.say("watching: a report every %s; Ctrl-C stops everything cleanly", cfg.Every)

	w := &watcher{d: d, dest: dest, block: block}
	tick := time.NewTicker(cfg.Every)
	defer tick.Stop()
	// A first look soon after start, then at every tick.
	first := time.After(time.Second)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-first:
		case <-tick.C:
		}
		w.report(ctx)
		if err := d.exited(); err != nil {
			return err
		}
	}

	// Graceful stop. A second Ctrl-C from here on kills everything at once.
	hard, kill := context.WithCancel(context.Background())
	defer kill()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		select {
		case <-sig:
			kill()
			d.killAll()
		case <-hard.Done():
		}
	}()
	d.say("stopping: the sensor first, then the block once it has delivered what it holds (Ctrl-C again to kill)")
	sensor.Stop()
	published := sensorCount(sensor.Log())
	drained := w.drain(hard, 15*time.Second)
	w.final(hard)
	block.Stop()
	stats := blockStopped(block.Log())
	dest.Stop()
	d.stopAll()
	d.say("stopped: sensor published %s; block delivered %s; the emulator holds %d distinct readings (%d duplicates)",
		published, stats, len(w.readings), w.dups)
	if !drained {
		d.say("the block still held undelivered messages when it was stopped; they stay in its buffer (%s)", rel(root, d.buffer))
	}
	d.say("logs: %s", rel(root, d.logs))
	return nil
}

func serviceNames() []string {
	var names []string
	for n := range destinations {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func rel(root, p string) string {
	if r, err := filepath.Rel(root, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

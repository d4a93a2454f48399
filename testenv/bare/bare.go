// Package bare is the floor a destination's memory is measured against:
// a program holding only what the block cannot do without, a paho
// subscription to cloud-input (persistent session, QoS 1, manual acks) and
// the destination's SDK client as the service configures and connects it,
// without the spool, pipeline, metrics or HTTP server. make bench
// (TestBenchMemory) runs it beside the block, built the same way.
package bare

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/run"
)

// Main connects svc's sink with the service's own variables, subscribes to
// BARE_MQTT_URL, writes BARE_READY_FILE once both are up and waits for
// SIGTERM.
func Main(svc run.Service) {
	if err := serve(svc); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
}

func serve(svc run.Service) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	l := config.NewLoader(config.Env, run.CommonVars(svc.Name), svc.Vars)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sk, err := svc.New(l, run.Info{Service: svc.Name, Device: "bare", Log: log})
	if err == nil {
		err = l.Err()
	}
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := sk.Connect(cctx); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	o := paho.NewClientOptions().AddBroker(os.Getenv("BARE_MQTT_URL")).SetClientID("bare-" + svc.Name).
		SetCleanSession(false).SetAutoAckDisabled(true).SetOrderMatters(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return fmt.Errorf("mqtt connect: %v", tok.Error())
	}
	if tok := c.Subscribe("cloud-input", 1, func(_ paho.Client, m paho.Message) { m.Ack() }); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return fmt.Errorf("mqtt subscribe: %v", tok.Error())
	}
	if err := os.WriteFile(os.Getenv("BARE_READY_FILE"), []byte("ready\n"), 0o600); err != nil {
		return err
	}
	<-ctx.Done()
	c.Disconnect(250)
	return sk.Close(context.Background())
}

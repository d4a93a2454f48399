// Command sensor is the example data source of the cloud-block compose files:
// it publishes a sensor-like JSON reading to the local broker every interval,
// at QoS 1, from a persistent session with a stable client id, the way an
// application feeding cloud-block should.
//
// Environment:
//
//	MQTT_HOST       broker URL (default mqtt://mqtt:1883, the compose service)
//	MQTT_TOPIC      topic to publish to (default cloud-input)
//	MQTT_CLIENT_ID  client id (default sensor-<device id>); keep it stable
//	INTERVAL        time between readings (default 1s)
//	DEVICE_ID       device id in each reading (default BALENA_DEVICE_UUID, else the hostname)
//	COUNT           stop after this many readings (default 0: never)
//
// It exits 0 on SIGTERM or SIGINT after the reading in flight is acknowledged
// (or 5 s have passed), and 2 on a configuration error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Reading is one message on the topic.
type Reading struct {
	Device      string  `json:"device"`
	Seq         uint64  `json:"seq"`
	Time        string  `json:"ts"`
	Temperature float64 `json:"temperature_c"`
	Humidity    float64 `json:"humidity_pct"`
	// Boot tells runs apart: seq starts again at 1 when the sensor restarts.
	Boot int64 `json:"boot"`
}

type config struct {
	broker   string
	topic    string
	clientID string
	interval time.Duration
	device   string
	count    uint64
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func loadConfig() (config, error) {
	var errs []error
	c := config{topic: env("MQTT_TOPIC", "cloud-input")}
	u, err := url.Parse(env("MQTT_HOST", "mqtt://mqtt:1883"))
	switch {
	case err != nil || u.Host == "":
		errs = append(errs, fmt.Errorf("MQTT_HOST=%q: want a URL such as mqtt://mqtt:1883", os.Getenv("MQTT_HOST")))
	case u.Scheme == "mqtt":
		// paho knows tcp://, the block and the compose files say mqtt://.
		c.broker = "tcp://" + u.Host
	case u.Scheme == "mqtts":
		c.broker = "ssl://" + u.Host
	default:
		c.broker = u.String()
	}
	c.device = env("DEVICE_ID", os.Getenv("BALENA_DEVICE_UUID"))
	if c.device == "" {
		c.device, _ = os.Hostname()
	}
	c.clientID = env("MQTT_CLIENT_ID", "sensor-"+c.device)
	if c.interval, err = time.ParseDuration(env("INTERVAL", "1s")); err != nil || c.interval < time.Millisecond {
		errs = append(errs, fmt.Errorf("INTERVAL=%q: want a duration of at least 1ms, such as 1s or 250ms", os.Getenv("INTERVAL")))
	}
	if s := os.Getenv("COUNT"); s != "" {
		if c.count, err = strconv.ParseUint(s, 10, 64); err != nil {
			errs = append(errs, fmt.Errorf("COUNT=%q: want a whole number (0: never stop)", s))
		}
	}
	return c, errors.Join(errs...)
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil)).With("service", "sensor")
	c, err := loadConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sensor: configuration error:\n%v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, c, log); err != nil {
		log.Error("stopped on error", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config, log *slog.Logger) error {
	o := paho.NewClientOptions().AddBroker(c.broker).SetClientID(c.clientID).
		// A persistent session: QoS 1 publishes the broker has not
		// acknowledged yet are sent again after a reconnect.
		SetCleanSession(false).
		SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).SetMaxReconnectInterval(10 * time.Second).
		SetKeepAlive(30 * time.Second).SetWriteTimeout(10 * time.Second).
		SetOnConnectHandler(func(paho.Client) { log.Info("connected", "broker", c.broker, "client_id", c.clientID) }).
		SetConnectionLostHandler(func(_ paho.Client, err error) { log.Warn("connection lost", "err", err) })
	client := paho.NewClient(o)
	// With ConnectRetry the token completes once connected. The first
	// reading waits for that: one published before it waits in the client's
	// store, and paho may then send it twice as the connection starts (once
	// resumed from the store, once from the publish), which the demo showed
	// as a duplicated first reading.
	connected := client.Connect()
	defer client.Disconnect(250)
	select {
	case <-connected.Done():
	case <-ctx.Done():
		return nil
	}

	log.Info("publishing", "topic", c.topic, "interval", c.interval.String(), "device", c.device)
	boot := time.Now().Unix()
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	var published, acked uint64
	for seq := uint64(1); c.count == 0 || seq <= c.count; seq++ {
		now := time.Now()
		body, _ := json.Marshal(reading(c.device, seq, boot, now))
		tok := client.Publish(c.topic, 1, false, body)
		published++
		// Wait for the PUBACK so a stop never abandons an unacknowledged
		// reading, but do not let a long outage stop the clock for good.
		select {
		case <-tok.Done():
			if err := tok.Error(); err != nil {
				log.Warn("publish failed", "seq", seq, "err", err)
			} else {
				acked++
			}
		case <-time.After(max(c.interval, 5*time.Second)):
			log.Warn("no PUBACK yet; the client resends it after reconnecting", "seq", seq)
		case <-ctx.Done():
			tok.WaitTimeout(5 * time.Second)
		}
		if seq%60 == 0 {
			log.Info("progress", "published", published, "acknowledged", acked)
		}
		select {
		case <-ctx.Done():
			log.Info("stopping", "published", published, "acknowledged", acked)
			return nil
		case <-tick.C:
		}
	}
	log.Info("done", "published", published, "acknowledged", acked)
	return nil
}

// reading makes a plausible indoor climate: a slow daily wave plus noise.
func reading(device string, seq uint64, boot int64, now time.Time) Reading {
	day := float64(now.Unix()%86400) / 86400 * 2 * math.Pi
	return Reading{
		Device:      device,
		Seq:         seq,
		Time:        now.UTC().Format(time.RFC3339Nano),
		Temperature: round1(21 + 2*math.Sin(day) + rand.NormFloat64()*0.2),
		Humidity:    round1(45 + 5*math.Cos(day) + rand.NormFloat64()*0.5),
		Boot:        boot,
	}
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

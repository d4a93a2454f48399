package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	t.Setenv("MQTT_HOST", "mqtt://broker:1884")
	t.Setenv("INTERVAL", "250ms")
	t.Setenv("DEVICE_ID", "dev-1")
	c, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.broker != "tcp://broker:1884" || c.interval != 250*time.Millisecond || c.clientID != "sensor-dev-1" || c.topic != "cloud-input" {
		t.Errorf("got %+v", c)
	}

	// Every problem at once, each naming its variable.
	t.Setenv("MQTT_HOST", "::nope")
	t.Setenv("INTERVAL", "soon")
	t.Setenv("COUNT", "-1")
	_, err = loadConfig()
	for _, name := range []string{"MQTT_HOST", "INTERVAL", "COUNT"} {
		if err == nil || !strings.Contains(err.Error(), name+"=") {
			t.Errorf("want an error naming %s, got %v", name, err)
		}
	}
}

func TestReading(t *testing.T) {
	r := reading("dev-1", 7, 1700000000, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	b, _ := json.Marshal(r)
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"device", "seq", "ts", "temperature_c", "humidity_pct", "boot"} {
		if _, ok := back[k]; !ok {
			t.Errorf("reading has no %q: %s", k, b)
		}
	}
	if r.Temperature < 15 || r.Temperature > 27 || r.Humidity < 35 || r.Humidity > 55 {
		t.Errorf("implausible reading %s", b)
	}
}

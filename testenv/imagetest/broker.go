package imagetest

import (
	"testing"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

// Broker is Debian's Mosquitto on the host (as the other tests run it),
// forwarded to the test network.
type Broker struct {
	*harness.Mosquitto
	// URL is LOCAL_MQTT_HOST for a container on the test network.
	URL string
}

// StartBroker starts the broker and forwards it to host (the test network's
// gateway) until the test ends.
func StartBroker(t testing.TB, host string) *Broker {
	t.Helper()
	m := harness.StartMosquitto(t, harness.MosquittoOptions{})
	return &Broker{Mosquitto: m, URL: "mqtt://" + Forward(t, host, m.Addr()).Addr()}
}

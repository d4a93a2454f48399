package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

func TestMQTTOverTLSWithClientCertificate(t *testing.T) {
	ca, otherCA := harness.NewCA(t, "test-ca"), harness.NewCA(t, "other-ca")
	serverCert, serverKey := ca.Leaf(t, "127.0.0.1")
	clientCert, clientKey := ca.Leaf(t, "cloud-block")
	dir := t.TempDir()
	write := func(name string, b []byte) string { return harness.WriteFile(t, dir, name, b) }
	tlsPort := procs.FreePort(t)
	extra := fmt.Sprintf("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n",
		tlsPort, write("ca.pem", ca.PEM), write("server.pem", serverCert), write("server.key", serverKey))
	broker := harness.StartMosquitto(t, harness.MosquittoOptions{Extra: extra})

	e := newFileEnv(t, harness.MosquittoOptions{}, nil)
	e.broker = broker
	e.block = harness.NewBlock(t, harness.Build(t, "testenv/cmd/filedest"), broker, map[string]string{
		"FILE_SINK_PATH":  e.out,
		"LOCAL_MQTT_HOST": fmt.Sprintf("mqtts://127.0.0.1:%d", tlsPort),
		// PEM text in one line with literal \n, as in an env var; the key as a file path.
		"LOCAL_MQTT_CA":   strings.ReplaceAll(string(ca.PEM), "\n", `\n`),
		"LOCAL_MQTT_CERT": write("client.pem", clientCert),
		"LOCAL_MQTT_KEY":  write("client.key", clientKey),
	})
	e.block.Start()
	e.block.WaitMetric("cloudblock_mqtt_connected", 30*time.Second, func(v float64) bool { return v == 1 })
	pub := harness.NewPublisher(t, broker, "cloud-input", 100) // the plain listener
	pub.Publish(0, 500, 0)
	tally := e.waitAll(t, 500, 100, time.Minute)
	t.Logf("over TLS: %s", tally)

	// The wrong CA: not connected, /ready says why, the log names the cause.
	bad := harness.NewBlock(t, harness.Build(t, "testenv/cmd/filedest"), broker, map[string]string{
		"FILE_SINK_PATH":  filepath.Join(dir, "bad.ndjson"),
		"LOCAL_MQTT_HOST": fmt.Sprintf("mqtts://127.0.0.1:%d", tlsPort),
		"LOCAL_MQTT_CA":   string(otherCA.PEM),
	})
	bad.NoSubscribeWait = true
	bad.Start()
	var body string
	err := procs.WaitFor(context.Background(), 30*time.Second, func() error {
		var code int
		code, body = bad.Ready()
		if code == 503 && strings.Contains(body, "certificate") {
			return nil
		}
		return fmt.Errorf("/ready %d %s", code, body)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wrong CA: %s", body)
}

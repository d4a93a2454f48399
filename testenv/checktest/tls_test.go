package checktest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// TestCheckTLS: check reaches a broker that requires TLS and a client
// certificate as the service would, and tells the broker's refusal of the
// client's certificate (denied) from an untrusted broker (unreachable).
// The broker check is common code: one binary stands for all.
func TestCheckTLS(t *testing.T) {
	ca, other := harness.NewCA(t, "check-ca"), harness.NewCA(t, "other-ca")
	dir := t.TempDir()
	serverCert, serverKey := ca.Leaf(t, "127.0.0.1")
	clientCert, clientKey := ca.Leaf(t, "cloud-block")
	otherCert, otherKey := other.Leaf(t, "cloud-block")
	port := procs.FreePort(t)
	extra := fmt.Sprintf("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n",
		port, harness.WriteFile(t, dir, "ca.pem", ca.PEM), harness.WriteFile(t, dir, "server.pem", serverCert), harness.WriteFile(t, dir, "server.key", serverKey))
	r := &rig{t: t, name: "aws-sqs", bin: harness.Build(t, "services/aws-sqs")}
	r.broker = harness.StartMosquitto(t, harness.MosquittoOptions{Extra: extra})
	r.d = openSQS(t)
	r.env = map[string]string{"BUFFER_DIR": t.TempDir(), "BALENA_DEVICE_UUID": "check-device", "LOCAL_MQTT_HOST": fmt.Sprintf("mqtts://127.0.0.1:%d", port)}
	for k, v := range r.d.env {
		r.env[k] = v
	}
	// PEM text in one line with literal \n, as in an env file; the keys'
	// lines are secrets.
	oneLine := func(b []byte) string { return strings.ReplaceAll(string(b), "\n", `\n`) }
	for _, k := range [][]byte{clientKey, otherKey} {
		lines := strings.Split(strings.TrimSpace(string(k)), "\n")
		r.secrets = append(r.secrets, lines[1:len(lines)-1]...)
	}
	r.secrets = append(r.secrets, r.d.secrets...)
	where := fmt.Sprintf(`mqtts://127\.0\.0\.1:%d`, port)

	r.expect("TLS with a client certificate", r.with("LOCAL_MQTT_CA", oneLine(ca.PEM), "LOCAL_MQTT_CERT", oneLine(clientCert), "LOCAL_MQTT_KEY", oneLine(clientKey)), nil, 0,
		`ok mqtt: connected to `+where+` anonymously over TLS with a client certificate and subscribed to cloud-input`)
	r.expect("another CA's broker", r.with("LOCAL_MQTT_CA", oneLine(other.PEM), "LOCAL_MQTT_CERT", oneLine(clientCert), "LOCAL_MQTT_KEY", oneLine(clientKey)), nil, 3,
		`unreachable mqtt: cannot connect to `+where+` anonymously over TLS with a client certificate: the broker's certificate is not trusted \(check LOCAL_MQTT_CA and LOCAL_MQTT_TLS_SERVER_NAME\): .*x509: certificate signed by unknown authority`)
	r.expect("another CA's client certificate", r.with("LOCAL_MQTT_CA", oneLine(ca.PEM), "LOCAL_MQTT_CERT", oneLine(otherCert), "LOCAL_MQTT_KEY", oneLine(otherKey)), nil, 4,
		`denied mqtt: `+where+` refused the connection anonymously over TLS with a client certificate in the TLS handshake: it wants a client certificate it trusts \(LOCAL_MQTT_CERT, LOCAL_MQTT_KEY\): remote error: tls: unknown certificate authority`)
	r.expect("no client certificate", r.with("LOCAL_MQTT_CA", oneLine(ca.PEM)), nil, 4,
		`denied mqtt: `+where+` refused the connection anonymously over TLS in the TLS handshake: .*: remote error: tls: certificate required`)
}

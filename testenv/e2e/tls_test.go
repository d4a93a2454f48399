package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

type pemPair struct{ cert, key []byte }

func issue(t *testing.T, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, isCA bool) (pemPair, *x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		IsCA: isCA, BasicConstraintsValid: true,
	}
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca, caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kb, _ := x509.MarshalECPrivateKey(key)
	return pemPair{pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})}, cert, key
}

// MQTT over TLS with a CA and a client certificate, against Mosquitto
// requiring them; and a wrong CA refused with a clear error.
func TestMQTTOverTLSWithClientCertificate(t *testing.T) {
	caPEM, ca, caKey := issue(t, "test-ca", nil, nil, true)
	server, _, _ := issue(t, "127.0.0.1", ca, caKey, false)
	client, _, _ := issue(t, "cloud-block", ca, caKey, false)
	otherCA, _, _ := issue(t, "other-ca", nil, nil, true)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tlsPort := procs.FreePort(t)
	extra := fmt.Sprintf("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n",
		tlsPort, write("ca.pem", caPEM.cert), write("server.pem", server.cert), write("server.key", server.key))
	broker := harness.StartMosquitto(t, harness.MosquittoOptions{Extra: extra})

	e := newFileEnv(t, harness.MosquittoOptions{}, nil)
	e.broker = broker
	e.block = harness.NewBlock(t, harness.Build(t, "testenv/cmd/filedest"), broker, map[string]string{
		"FILE_SINK_PATH":  e.out,
		"LOCAL_MQTT_HOST": fmt.Sprintf("mqtts://127.0.0.1:%d", tlsPort),
		// PEM text in one line with literal \n, as in an env var; the key as a file path.
		"LOCAL_MQTT_CA":   strings.ReplaceAll(string(caPEM.cert), "\n", `\n`),
		"LOCAL_MQTT_CERT": write("client.pem", client.cert),
		"LOCAL_MQTT_KEY":  write("client.key", client.key),
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
		"LOCAL_MQTT_CA":   string(otherCA.cert),
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

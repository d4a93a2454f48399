package blocktest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// imageUser returns the USER of the final stage of a Dockerfile ("" if none).
func imageUser(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	user := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 1 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			user = "" // a new stage starts as root
		case "USER":
			if len(fields) > 1 {
				user = fields[1]
			}
		}
	}
	return user
}

// Security, per destination:
//   - MQTT over TLS with a CA and a client certificate (its key given as
//     PEM text) and a password, against Mosquitto requiring both: delivers;
//   - a wrong CA and a wrong password: refused, /ready says why;
//   - no secret in any log line, /metrics or /ready of any of them (the
//     rig scans every scenario's blocks the same way);
//   - the image runs as a non-root user.
func security(t *testing.T, tg *target, sc Scale) {
	t.Run("image-user", func(t *testing.T) {
		if tg.name == "file" {
			t.Skip("the test destination has no image")
		}
		df := filepath.Join(harness.RepoRoot(), tg.pkg, "Dockerfile")
		if _, err := os.Stat(df); err != nil {
			t.Fatalf("%s has no Dockerfile: %v", tg.pkg, err)
		}
		user := imageUser(t, df)
		uid, _, _ := strings.Cut(user, ":")
		if n, err := strconv.Atoi(uid); user == "" || uid == "root" || (err == nil && n == 0) {
			t.Errorf("the image's final stage runs as %q: want a non-root USER", user)
		} else if err != nil {
			// A scratch image has no /etc/passwd to resolve a name.
			t.Errorf("USER %q is not numeric: a scratch image cannot resolve it", user)
		}
		record(row{Scenario: "security-image-user", Target: tg.name, Note: "USER " + user})
	})

	t.Run("mqtt-tls", func(t *testing.T) {
		ca, other := harness.NewCA(t, "faults-ca"), harness.NewCA(t, "other-ca")
		dir := t.TempDir()
		serverCert, serverKey := ca.Leaf(t, "127.0.0.1")
		clientCert, clientKey := ca.Leaf(t, "cloud-block")
		keyBody := strings.Join(strings.Split(strings.TrimSpace(string(clientKey)), "\n")[1:2], "")
		tlsPort := procs.FreePort(t)
		extra := fmt.Sprintf("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n",
			tlsPort, harness.WriteFile(t, dir, "ca.pem", ca.PEM), harness.WriteFile(t, dir, "server.pem", serverCert), harness.WriteFile(t, dir, "server.key", serverKey))
		tlsURL := fmt.Sprintf("mqtts://127.0.0.1:%d", tlsPort)
		tlsEnv := map[string]string{
			"LOCAL_MQTT_HOST": tlsURL,
			// PEM text in one line with literal \n, as in an env var.
			"LOCAL_MQTT_CA":   strings.ReplaceAll(string(ca.PEM), "\n", `\n`),
			"LOCAL_MQTT_CERT": harness.WriteFile(t, dir, "client.pem", clientCert),
			"LOCAL_MQTT_KEY":  strings.ReplaceAll(string(clientKey), "\n", `\n`),
		}
		r := newRig(t, tg, rigOpts{broker: harness.MosquittoOptions{Extra: extra}, env: tlsEnv})
		r.addSecret(keyBody)
		r.start()
		pub := harness.NewPublisher(t, r.broker, "cloud-input", 100) // on the plain listener
		pub.Publish(0, 300, 0)
		tl, _ := r.waitAll(300, 100, 2*time.Minute, true)
		r.snapshot()

		// The wrong CA and the wrong password, each in a block of its own.
		refused := func(name string, env map[string]string, want ...string) string {
			t.Helper()
			all := map[string]string{}
			for k, v := range r.env {
				all[k] = v
			}
			for k, v := range env {
				all[k] = v
			}
			all["BALENA_DEVICE_UUID"] = "faults-" + name
			b := harness.NewBlock(t, harness.Build(t, tg.pkg), r.broker, all)
			b.NoSubscribeWait = true // it must not get there
			b.Start()
			var body string
			err := waitCond(30*time.Second, func() bool {
				var code int
				code, body = b.Ready()
				if code != 503 {
					return false
				}
				for _, w := range want {
					if strings.Contains(strings.ToLower(body), w) {
						return true
					}
				}
				return false
			})
			if err != nil {
				t.Errorf("%s: /ready did not say why: %s", name, body)
			}
			if v := b.Metric("cloudblock_mqtt_connected"); v != 0 {
				t.Errorf("%s: cloudblock_mqtt_connected = %v", name, v)
			}
			_, m := httpGet("http://" + b.HTTP + "/metrics")
			b.Stop()
			logs := b.Logs()
			for _, s := range append(r.secrets, keyBody, env["LOCAL_MQTT_PASSWORD"]) {
				if len(s) >= 8 && (strings.Contains(logs, s) || strings.Contains(body, s) || strings.Contains(m, s)) {
					t.Errorf("%s: secret %.4s... printed", name, s)
				}
			}
			return body
		}
		wrongCA := refused("wrong-ca", map[string]string{"LOCAL_MQTT_CA": string(other.PEM)}, "certificate")
		wrongPW := refused("wrong-password", map[string]string{"LOCAL_MQTT_HOST": r.broker.URL(), "LOCAL_MQTT_CA": "", "LOCAL_MQTT_CERT": "", "LOCAL_MQTT_KEY": "",
			"LOCAL_MQTT_PASSWORD": "wrongPW-" + randHex(6)}, "not authori", "bad user name or password")
		note := fmt.Sprintf("TLS with client certificate and password: %d of %d delivered; wrong CA: %.90s; wrong password: %.90s",
			tl.Distinct, tl.Published, reason(wrongCA), reason(wrongPW))
		t.Logf("%s: %s", tg.name, note)
		r.report("security-mqtt-tls", tl, 0, note)
	})
}

// reason picks the first reason out of a /ready body.
func reason(body string) string {
	if i := strings.Index(body, `"reasons":["`); i >= 0 {
		s := body[i+len(`"reasons":["`):]
		if j := strings.Index(s, `"`); j >= 0 {
			return s[:j]
		}
	}
	return body
}

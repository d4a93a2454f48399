package run

import (
	"strconv"
	"strings"
	"time"

	"github.com/cloud-block/cloud-block/common/clock"
	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/pipeline"
	"github.com/cloud-block/cloud-block/common/spool"
	"github.com/cloud-block/cloud-block/common/vault"
)

// CommonVars are the variables every service reads, with their defaults.
// A service may override a default by declaring the same name in its Vars
// (object stores batch for a minute, SQS ten messages at a time).
//
// The spool's and the pipeline's defaults are their packages' own; where
// zero means something there (strict mode, no wait), the variable's
// default is its own.
//
// The Azure Key Vault settings come last: read from the environment only,
// before the others, which may then come from the vault.
func CommonVars(service string) []config.Var {
	vars := []config.Var{
		{Name: "LOCAL_MQTT_HOST", Default: "mqtt://mqtt:1883",
			Doc: "Broker URL; scheme mqtt, tcp, mqtts, ssl, tls, ws or wss. The default is the compose service `mqtt`."},
		{Name: "LOCAL_MQTT_INPUT_TOPIC", Aliases: []string{"MQTT_INPUT_TOPIC"}, Default: "cloud-input",
			Doc: "Comma-separated topic filters to forward (`+` and `#` wildcards allowed), subscribed at QoS 1."},
		{Name: "LOCAL_MQTT_CLIENT_ID",
			Doc: "MQTT client id of the persistent session. Default `cloud-block-<service>-<device>`; keep it stable, or messages queued by the broker for the old id are not delivered."},
		{Name: "LOCAL_MQTT_USERNAME", Doc: "Broker username, if the broker requires one."},
		{Name: "LOCAL_MQTT_PASSWORD", Secret: true, Doc: "Broker password."},
		{Name: "LOCAL_MQTT_CA", Multiline: true,
			Doc: "CA certificate for a TLS broker: PEM text (literal `\\n` allowed) or a file path. Default: the system roots."},
		{Name: "LOCAL_MQTT_CERT", Multiline: true, Doc: "Client certificate for mutual TLS: PEM text or a file path."},
		{Name: "LOCAL_MQTT_KEY", Multiline: true, Secret: true, Doc: "Client private key for mutual TLS: PEM text or a file path."},
		{Name: "LOCAL_MQTT_TLS_SERVER_NAME", Doc: "Server name to verify in the broker's certificate, when it differs from the URL's host."},
		{Name: "LOCAL_MQTT_KEEPALIVE", Default: "30s", Doc: "MQTT keepalive interval."},
		{Name: "BALENA_DEVICE_UUID", Doc: "Device id put on every message and in object keys; set by balena. Default: the hostname."},
		{Name: "BUFFER_DIR", Default: "/data/cloud-block/" + service,
			Doc: "Directory of the durable buffer (spool) and the dead-letter store; put it on a persistent volume."},
		{Name: "BUFFER_MAX_BYTES", Default: config.FormatBytes(spool.DefaultMaxBytes),
			Doc: "Disk the spool may use (e.g. `64MiB`, `1GiB`). The largest message it takes is a quarter of this."},
		{Name: "BUFFER_FULL_POLICY", Default: string(spool.Block),
			Doc: "When the spool is full: `block` stops acknowledging MQTT messages so the broker holds them (up to its own queue limits); `drop_oldest` deletes the oldest undelivered messages and counts them."},
		{Name: "BUFFER_SYNC_INTERVAL", Default: "1s",
			Doc: "Longest a message is held in memory, unacknowledged, for the destination to confirm it. Confirmed in time, it is acknowledged (PUBACK) and never written to disk; otherwise it is written and fsynced with everything else held, then acknowledged. Held messages are also written at once when `BUFFER_MEMORY_BYTES` is reached or when arrivals stop while acknowledgements are held. A power cut can lose at most this window of messages the broker already sent (see the README). `0`: every message is fsynced before its PUBACK (strict mode)."},
		{Name: "BUFFER_MEMORY_BYTES", Default: config.FormatBytes(spool.DefaultMemoryBytes),
			Doc: "Most message bytes held in memory waiting for the destination or the window; past it they are written at once."},
		{Name: "BUFFER_COMMIT_WAIT", Default: "0s",
			Doc: "Strict mode (`BUFFER_SYNC_INTERVAL=0`) only: longest a message waits for others to share its fsync. 0 commits whatever arrived during the previous fsync (group commit without added latency)."},
		{Name: "DEADLETTER_MAX_BYTES", Default: "64MiB",
			Doc: "Disk the dead-letter store may use; past it the oldest dead-letter file is removed and counted."},
		{Name: "BATCH_MAX_MESSAGES", Default: strconv.Itoa(pipeline.DefaultMaxMessages), Doc: "Most messages in one batch (the destination's own limit applies too)."},
		{Name: "BATCH_MAX_BYTES", Default: config.FormatBytes(pipeline.DefaultMaxBytes), Doc: "Most payload bytes in one batch (the destination's own limit applies too)."},
		{Name: "BATCH_MAX_WAIT", Default: "200ms",
			Doc: "Longest a batch waits to fill before it is sent. A backlog is sent in full batches at once."},
		{Name: "BATCH_CONCURRENCY", Default: strconv.Itoa(pipeline.DefaultConcurrency), Doc: "Batches sent at once (destinations that need order or exact resends use 1)."},
		{Name: "SEND_TIMEOUT", Default: durationText(pipeline.DefaultSendTimeout),
			Doc: "Longest one send to the destination may take before it is abandoned and retried (a network that drops packets hangs instead of failing). Raise it for large objects on slow links."},
		{Name: "RETRY_INITIAL_BACKOFF", Default: durationText(pipeline.DefaultRetryInitial), Doc: "First wait after a failed send; doubles with jitter on each failure."},
		{Name: "RETRY_MAX_BACKOFF", Default: durationText(pipeline.DefaultRetryMax), Doc: "Longest wait between retries. Retries never give up: messages stay in the spool."},
		{Name: "READY_MAX_UNSENT_AGE", Default: "5m",
			Doc: "`/ready` fails when the oldest undelivered message is older than this."},
		{Name: "SHUTDOWN_TIMEOUT", Default: "10s",
			Doc: "On SIGTERM, how long in-flight batches may finish; what does not stays in the spool. Keep the compose stop_grace_period longer."},
		{Name: "LOG_LEVEL", Default: "info", Doc: "`debug`, `info`, `warn` or `error`. Logs are JSON lines on stdout."},
		{Name: "CLOCK_MAX_JUMP", Default: durationText(clock.DefaultMaxJump),
			Doc: "A step of the system clock larger than this (the wall clock moving apart from the monotonic clock, as when NTP first sets it) makes the clock untrusted for 10 s. While the clock is untrusted, or earlier than the build's date, nothing is sent (signatures would fail) and messages are spooled, their receive times marked (see the README, \"The clock\"). From 1s to 24h."},
		{Name: "HTTP_LISTEN", Default: ":8080", Doc: "Address of the status page (`/`) and the `/live`, `/ready`, `/status.json` and `/metrics` endpoints; `off` disables them (and the healthcheck)."},
	}
	vars = append(vars, proxyVars...)
	return append(vars, vault.Vars...)
}

// durationText writes d as the tables do: "1m", not time's "1m0s".
func durationText(d time.Duration) string {
	t := d.String()
	if strings.HasSuffix(t, "m0s") {
		t = strings.TrimSuffix(t, "0s")
	}
	if strings.HasSuffix(t, "h0m") {
		t = strings.TrimSuffix(t, "0m")
	}
	return t
}

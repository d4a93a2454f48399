// Package runtest is what the tests of common/run and of the services'
// binaries (testenv/blocktest) share about the variables every service
// reads: a wrong value for each.
package runtest

import "maps"

// BadCommon returns an invalid value for each variable every service reads
// (run.CommonVars), to set one at a time: each must stop the service with
// a message naming it. The values of secret variables hold a distinctive
// string (BadSecrets) that must never be printed. A test fails for a
// variable without an entry, so a new variable gets one here.
func BadCommon() map[string]string { return maps.Clone(badCommon) }

// BadSecrets are the parts of BadCommon's values that must never be
// printed: each secret variable's value, or the key material in it.
var BadSecrets = []string{
	"mqttBadPassword-without-a-user", "mqttBadKeyMaterial0123", "proxyBadPassword-0123",
	"vaultBadSecret-0123456789", "vaultBadCertMaterial0123", "vaultBadPfxPassword-0123",
}

var badCommon = map[string]string{
	"LOCAL_MQTT_HOST":            "ftp://broker:21",
	"LOCAL_MQTT_INPUT_TOPIC":     "sensors/#/temperature",
	"LOCAL_MQTT_CLIENT_ID":       "id\x01with-control",
	"LOCAL_MQTT_USERNAME":        "user\xff",
	"LOCAL_MQTT_PASSWORD":        "mqttBadPassword-without-a-user",
	"LOCAL_MQTT_CA":              "/no/such/ca.pem",
	"LOCAL_MQTT_CERT":            "/no/such/cert.pem",
	"LOCAL_MQTT_KEY":             `-----BEGIN PRIVATE KEY-----\nmqttBadKeyMaterial0123\n-----END PRIVATE KEY-----`,
	"LOCAL_MQTT_TLS_SERVER_NAME": "not a host!",
	"LOCAL_MQTT_KEEPALIVE":       "1",
	"BALENA_DEVICE_UUID":         "dev/../ice",
	"BUFFER_DIR":                 "relative/dir",
	"BUFFER_MAX_BYTES":           "12 parsecs",
	"BUFFER_FULL_POLICY":         "panic",
	"BUFFER_COMMIT_WAIT":         "-5ms",
	"BUFFER_SYNC_INTERVAL":       "1h",
	"BUFFER_MEMORY_BYTES":        "1KiB",
	"DEADLETTER_MAX_BYTES":       "1KiB",
	"BATCH_MAX_MESSAGES":         "0",
	"BATCH_MAX_BYTES":            "lots",
	"BATCH_MAX_WAIT":             "2h",
	"BATCH_CONCURRENCY":          "1000",
	"SEND_TIMEOUT":               "0s",
	"RETRY_INITIAL_BACKOFF":      "1ns",
	"RETRY_MAX_BACKOFF":          "forever",
	"READY_MAX_UNSENT_AGE":       "0s",
	"SHUTDOWN_TIMEOUT":           "1y",
	"CLOCK_MAX_JUMP":             "500ms",
	"LOG_LEVEL":                  "verbose",
	"HTTP_LISTEN":                "localhost",
	// Proxies: schemes not every destination's client speaks, a NO_PROXY
	// entry Go would never match.
	"HTTPS_PROXY": "socks5://device:proxyBadPassword-0123@proxy.example:1080",
	"HTTP_PROXY":  "https://proxy.example:3128",
	"NO_PROXY":    "mqtt,http://broker.local",
	// Azure Key Vault: each alone, without a vault, is a mistake too.
	"AZURE_VAULT_NAME":                        "my_vault!",
	"AZURE_VAULT_URL":                         "http://vault.example",
	"AZURE_VAULT_TENANT_ID":                   "not a tenant",
	"AZURE_VAULT_CLIENT_ID":                   "not a client!",
	"AZURE_VAULT_CLIENT_SECRET":               "vaultBadSecret-0123456789",
	"AZURE_VAULT_CLIENT_CERTIFICATE":          `-----BEGIN CERTIFICATE-----\nvaultBadCertMaterial0123\n-----END CERTIFICATE-----`,
	"AZURE_VAULT_CLIENT_CERTIFICATE_PATH":     "/no/such/client.pfx",
	"AZURE_VAULT_CLIENT_CERTIFICATE_PASSWORD": "vaultBadPfxPassword-0123",
	"AZURE_VAULT_AUTHORITY_HOST":              "http://login.example",
	"AZURE_VAULT_CA_FILE":                     "/no/such/ca.pem",
	"AZURE_VAULT_REFRESH":                     "500ms",
}

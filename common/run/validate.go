package run

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cloud-block/cloud-block/common/clock"
	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/mqtt"
)

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func validDevice(s string) bool {
	if len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r == '.' || r == '_' || r == '-' || r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
			return false
		}
	}
	return true
}

func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		if !(r == '.' || r == '-' || r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
			return false
		}
	}
	return true
}

// writableDir creates dir if needed and proves a file can be written there,
// so a bad volume is a configuration error at start, not a stall later.
func writableDir(dir string) error {
	if !filepath.IsAbs(dir) {
		return errors.New("not an absolute path")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return errors.Unwrap(err)
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return errors.Unwrap(err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// loadTLS validates the TLS variables one by one, so each error names the
// variable at fault, and builds the client TLS settings (nil for plain TCP).
func loadTLS(l *config.Loader, broker *url.URL) *tls.Config {
	ca, cert, key := l.String("LOCAL_MQTT_CA"), l.String("LOCAL_MQTT_CERT"), l.String("LOCAL_MQTT_KEY")
	serverName := l.String("LOCAL_MQTT_TLS_SERVER_NAME")
	if serverName != "" && !validHostname(serverName) {
		l.Fail("LOCAL_MQTT_TLS_SERVER_NAME", serverName, "a DNS name")
	}
	tlsScheme := broker != nil && (broker.Scheme == "mqtts" || broker.Scheme == "ssl" || broker.Scheme == "tls" || broker.Scheme == "wss")
	if ca == "" && cert == "" && key == "" && !tlsScheme {
		return nil
	}
	if !tlsScheme && broker != nil {
		l.Fail("LOCAL_MQTT_HOST", broker.String(), "a TLS scheme (mqtts, ssl, tls or wss) when LOCAL_MQTT_CA, LOCAL_MQTT_CERT or LOCAL_MQTT_KEY is set")
	}
	// Certificates checked at the build's date at the earliest: a device
	// whose clock NTP has not set yet still reaches its broker.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName, Time: clock.CertTime}
	if ca != "" {
		pem, err := mqtt.LoadPEM(ca)
		pool := x509.NewCertPool()
		if err == nil && !pool.AppendCertsFromPEM(pem) {
			err = errors.New("no certificate in it")
		}
		if err != nil {
			l.Fail("LOCAL_MQTT_CA", shorten(ca), "PEM text or the path of a PEM file with the broker's CA certificate ("+err.Error()+")")
		}
		cfg.RootCAs = pool
	}
	var certPEM, keyPEM []byte
	var certErr, keyErr error
	if cert != "" {
		if certPEM, certErr = mqtt.LoadPEM(cert); certErr != nil {
			l.Fail("LOCAL_MQTT_CERT", shorten(cert), "PEM text or the path of a PEM file ("+certErr.Error()+")")
		}
	}
	if key != "" {
		if keyPEM, keyErr = mqtt.LoadPEM(key); keyErr == nil {
			if b, _ := pem.Decode(keyPEM); b == nil {
				keyErr = errors.New("no PEM block")
			}
		}
		if keyErr != nil {
			l.Fail("LOCAL_MQTT_KEY", key, "PEM text or the path of a PEM file with the client's private key")
		}
	}
	switch {
	case cert != "" && key == "":
		l.Require("LOCAL_MQTT_KEY", "required when LOCAL_MQTT_CERT is set")
	case key != "" && cert == "":
		l.Require("LOCAL_MQTT_CERT", "required when LOCAL_MQTT_KEY is set")
	case cert != "" && certErr == nil && keyErr == nil:
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			// The message of X509KeyPair never includes key material.
			l.Fail("LOCAL_MQTT_KEY", key, "the private key matching LOCAL_MQTT_CERT ("+err.Error()+")")
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

// shorten keeps an error message readable when a PEM was pasted in.
func shorten(s string) string {
	if len(s) > 60 {
		return fmt.Sprintf("%s... (%d bytes)", strings.ReplaceAll(s[:40], "\n", `\n`), len(s))
	}
	return s
}

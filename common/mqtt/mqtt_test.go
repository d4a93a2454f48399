package mqtt

import (
	"bytes"
	"io"
	"net"
	"net/url"
	"testing"
)

func TestParseTopics(t *testing.T) {
	got, err := ParseTopics(" cloud-input , sensors/+/temp,alarms/#")
	if err != nil || len(got) != 3 || got[1] != "sensors/+/temp" {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", " , ", "a/#/b", "a/b#", "a/+b"} {
		if _, err := ParseTopics(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestBrokerURL(t *testing.T) {
	for in, want := range map[string]string{
		"mqtt://u:p@mqtt:1883":  "tcp://mqtt:1883",
		"mqtts://broker:8883":   "ssl://broker:8883",
		"tls://broker:8883":     "ssl://broker:8883",
		"ws://broker:9001/mqtt": "ws://broker:9001/mqtt",
	} {
		u, _ := url.Parse(in)
		if got := BrokerURL(u); got != want {
			t.Errorf("%s: got %s want %s", in, got, want)
		}
	}
}

func TestLoadPEM(t *testing.T) {
	if b, err := LoadPEM("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----"); err != nil || !bytes.HasPrefix(b, []byte("-----BEGIN")) {
		t.Errorf("PEM text: %v", err)
	}
	if _, err := LoadPEM("/no/such/file.pem"); err == nil {
		t.Error("missing file accepted")
	}
}

// Reads through the buffer return exactly the bytes written, in order,
// whatever the sizes of the reads.
func TestBufferedConnReads(t *testing.T) {
	a, b := net.Pipe()
	c := &bufferedConn{Conn: a}
	c.r = newReader(a)
	want := bytes.Repeat([]byte("0123456789"), 10000)
	go func() {
		b.Write(want)
		b.Close()
	}()
	var got bytes.Buffer
	buf := make([]byte, 3)
	for {
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("got %d bytes", got.Len())
	}
}

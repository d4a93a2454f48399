package main

import (
	"bytes"
	"testing"
)

func TestAMQPData(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 300)
	msg := []byte{
		0x00, 0x53, 0x70, 0xc0, 0x02, 0x01, 0x41, // header: list8 of one boolean true
		0x00, 0x53, 0x72, 0xc1, 0x01, 0x00, // message annotations: empty map8
		0x00, 0x53, 0x74, 0xc1, 0x0a, 0x02, 0xa1, 0x01, 'k', 0xa1, 0x04, 't', 'o', 'p', 'c', // application properties
		0x00, 0x53, 0x75, 0xa0, 0x03, '{', '}', '\n', // data: vbin8
	}
	got, err := amqpData(msg)
	if err != nil || string(got) != "{}\n" {
		t.Fatalf("got %q, %v", got, err)
	}
	big := append([]byte{0x00, 0x53, 0x75, 0xb0, 0x00, 0x00, 0x01, 0x2c}, long...)
	if got, err := amqpData(big); err != nil || !bytes.Equal(got, long) {
		t.Fatalf("vbin32: %d bytes, %v", len(got), err)
	}
	if _, err := amqpData([]byte{0x00, 0x53, 0x75, 0xa0, 0x09, 'x'}); err == nil {
		t.Fatal("a truncated body decoded")
	}
}

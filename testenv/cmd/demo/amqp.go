package main

import (
	"encoding/binary"
	"errors"
)

// amqpData returns the body (the data sections, joined) of an AMQP 1.0
// message as encoded on the wire. The Event Hubs fake stores each event that
// way; reading only the bytes it needs keeps an AMQP library out of the demo.
//
// A message is a sequence of described sections: 0x00, a descriptor (0x53
// and a one-byte code, or a ulong or symbol), then the section's value. The
// data section has code 0x75 and a binary value.
func amqpData(b []byte) ([]byte, error) {
	var body []byte
	for len(b) > 0 {
		if b[0] != 0x00 {
			return nil, errors.New("amqp: not a described section")
		}
		code, rest, err := descriptor(b[1:])
		if err != nil {
			return nil, err
		}
		if code == 0x75 {
			data, after, err := binaryValue(rest)
			if err != nil {
				return nil, err
			}
			body = append(body, data...)
			b = after
			continue
		}
		if b, err = skip(rest); err != nil {
			return nil, err
		}
	}
	return body, nil
}

// descriptor reads a section descriptor; symbolic descriptors get code 0.
func descriptor(b []byte) (code uint64, rest []byte, err error) {
	if len(b) >= 2 && b[0] == 0x53 {
		return uint64(b[1]), b[2:], nil
	}
	if len(b) >= 9 && b[0] == 0x80 {
		return binary.BigEndian.Uint64(b[1:9]), b[9:], nil
	}
	rest, err = skip(b)
	if err != nil {
		return 0, nil, err
	}
	// "amqp:data:binary" in its symbolic form.
	if n := len(b) - len(rest); n > 2 && string(b[2:n]) == "amqp:data:binary" {
		return 0x75, rest, nil
	}
	return 0, rest, nil
}

func binaryValue(b []byte) (data, rest []byte, err error) {
	switch {
	case len(b) >= 2 && b[0] == 0xa0:
		n := int(b[1])
		if len(b) < 2+n {
			return nil, nil, errors.New("amqp: short binary")
		}
		return b[2 : 2+n], b[2+n:], nil
	case len(b) >= 5 && b[0] == 0xb0:
		n := int(binary.BigEndian.Uint32(b[1:5]))
		if n < 0 || len(b) < 5+n {
			return nil, nil, errors.New("amqp: short binary")
		}
		return b[5 : 5+n], b[5+n:], nil
	}
	return nil, nil, errors.New("amqp: data section without a binary value")
}

// skip steps over one encoded value. The constructor's high nibble gives its
// width: fixed (0x4-0x9), or a 1-byte (0xa, 0xc, 0xe) or 4-byte (0xb, 0xd,
// 0xf) size followed by that many bytes.
func skip(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, errors.New("amqp: truncated")
	}
	c := b[0]
	if c == 0x00 { // described value: descriptor, then value
		rest, err := skip(b[1:])
		if err != nil {
			return nil, err
		}
		return skip(rest)
	}
	var n int
	switch c >> 4 {
	case 0x4:
		n = 1
	case 0x5:
		n = 2
	case 0x6:
		n = 3
	case 0x7:
		n = 5
	case 0x8:
		n = 9
	case 0x9:
		n = 17
	case 0xa, 0xc, 0xe:
		if len(b) < 2 {
			return nil, errors.New("amqp: truncated")
		}
		n = 2 + int(b[1])
	case 0xb, 0xd, 0xf:
		if len(b) < 5 {
			return nil, errors.New("amqp: truncated")
		}
		n = 5 + int(binary.BigEndian.Uint32(b[1:5]))
	default:
		return nil, errors.New("amqp: unknown constructor")
	}
	if n < 0 || len(b) < n {
		return nil, errors.New("amqp: truncated")
	}
	return b[n:], nil
}

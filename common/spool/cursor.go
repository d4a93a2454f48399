package spool

import (
	"encoding/binary"
	"hash/crc32"
	"os"
)

// The cursor file holds the highest delivered seq, and the seq range of the
// batch being sent when the sink needs a resent batch to be identical (object
// keys named after it). It has two slots written alternately, each with a
// generation and a checksum: a torn write can only damage the slot being
// written, so the other, one generation older, is still valid and at worst
// one acknowledgement is redone.
//
// A slot also holds the reservation: every seq below it may have been given
// to a message that was delivered from memory and never written, so after a
// crash numbering resumes there and no id is ever given twice. Slots written
// before the reservation existed (checksum at byte 32) are still read.
const slotSize = 48

type cursorState struct {
	acked                       uint64
	inFlightFirst, inFlightLast uint64 // the batch in flight (inFlightLast 0: none)
	reserved                    uint64 // seqs below this may have been handed out
}

type cursorFile struct {
	f   *os.File
	gen uint64
}

func openCursor(path string) (*cursorFile, cursorState, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, cursorState{}, err
	}
	buf := make([]byte, 2*slotSize)
	n, _ := f.ReadAt(buf, 0)
	var bestGen uint64
	var best cursorState
	for i := 0; i+slotSize <= n; i += slotSize {
		s := buf[i : i+slotSize]
		var reserved uint64
		switch {
		case binary.LittleEndian.Uint32(s[40:]) == crc32.Checksum(s[:40], castagnoli):
			reserved = binary.LittleEndian.Uint64(s[32:])
		case binary.LittleEndian.Uint32(s[32:]) == crc32.Checksum(s[:32], castagnoli):
			// the format before the reservation
		default:
			continue
		}
		if g := binary.LittleEndian.Uint64(s); g > bestGen {
			bestGen = g
			best = cursorState{
				acked:         binary.LittleEndian.Uint64(s[8:]),
				inFlightFirst: binary.LittleEndian.Uint64(s[16:]),
				inFlightLast:  binary.LittleEndian.Uint64(s[24:]),
				reserved:      reserved,
			}
		}
	}
	// Both slots get their bytes now, so that storing a cursor later only
	// overwrites allocated space and cannot fail on a full disk.
	// Best effort: on a disk already full, store retries later as before.
	if n < len(buf) {
		if _, err := f.WriteAt(make([]byte, len(buf)-n), int64(n)); err == nil {
			fsyncFile(f)
		}
	}
	return &cursorFile{f: f, gen: bestGen}, best, nil
}

// store durably records st.
func (c *cursorFile) store(st cursorState) error {
	c.gen++
	var s [slotSize]byte
	binary.LittleEndian.PutUint64(s[:], c.gen)
	binary.LittleEndian.PutUint64(s[8:], st.acked)
	binary.LittleEndian.PutUint64(s[16:], st.inFlightFirst)
	binary.LittleEndian.PutUint64(s[24:], st.inFlightLast)
	binary.LittleEndian.PutUint64(s[32:], st.reserved)
	binary.LittleEndian.PutUint32(s[40:], crc32.Checksum(s[:40], castagnoli))
	if _, err := c.f.WriteAt(s[:], int64(c.gen%2)*slotSize); err != nil {
		return err
	}
	return fsyncFile(c.f)
}

func (c *cursorFile) close() error { return c.f.Close() }

package spool

import (
	"encoding/binary"
	"hash/crc32"
	"os"
)

// The cursor file holds the highest delivered seq in two 32-byte slots that
// are written alternately, each with a generation and a checksum. A torn
// write can only damage the slot being written, so the other one, one
// generation older, is still valid: at worst one acknowledgement is redone.
const slotSize = 32

type cursorFile struct {
	f   *os.File
	gen uint64
}

func openCursor(path string) (*cursorFile, uint64, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, err
	}
	buf := make([]byte, 2*slotSize)
	n, _ := f.ReadAt(buf, 0)
	var bestGen, bestSeq uint64
	for i := 0; i+slotSize <= n; i += slotSize {
		s := buf[i : i+slotSize]
		if binary.LittleEndian.Uint32(s[16:]) != crc32.Checksum(s[:16], castagnoli) {
			continue
		}
		if g := binary.LittleEndian.Uint64(s); g > bestGen {
			bestGen, bestSeq = g, binary.LittleEndian.Uint64(s[8:])
		}
	}
	return &cursorFile{f: f, gen: bestGen}, bestSeq, nil
}

// store durably records seq as delivered.
func (c *cursorFile) store(seq uint64) error {
	c.gen++
	var s [slotSize]byte
	binary.LittleEndian.PutUint64(s[:], c.gen)
	binary.LittleEndian.PutUint64(s[8:], seq)
	binary.LittleEndian.PutUint32(s[16:], crc32.Checksum(s[:16], castagnoli))
	if _, err := c.f.WriteAt(s[:], int64(c.gen%2)*slotSize); err != nil {
		return err
	}
	return c.f.Sync()
}

func (c *cursorFile) close() error { return c.f.Close() }

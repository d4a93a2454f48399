package spool

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// scanResult describes one segment after recovery.
type scanResult struct {
	first, last uint64 // seq range of intact records (0,0 if none)
	count       int
	size        int64  // bytes of intact records (the file's size after repair)
	runs        ranges // the seqs present: messages delivered from memory leave gaps
}

// Damage found while scanning, reported to the caller for logs and metrics.
type Damage struct {
	Segment  string
	Offset   int64
	Bytes    int64  // bytes cut out or cut off
	Lost     uint64 // at most this many messages lost (the gap in seq around the damage; messages delivered from memory also leave gaps), 0 if unknown
	Tail     bool   // the damage ran to the end of the file (a torn write)
	SetAside string // where the damaged bytes were saved, if anywhere
}

func (d Damage) String() string {
	kind := "corrupt range"
	if d.Tail {
		kind = "torn tail"
	}
	return fmt.Sprintf("%s in %s at offset %d: %d bytes, %d messages lost", kind, d.Segment, d.Offset, d.Bytes, d.Lost)
}

// scanSegment validates path record by record. Damage is cut out (or cut off
// at the tail) and the damaged bytes are saved under asideDir, so start-up
// never fails on a corrupt file and keeps every intact record.
func scanSegment(path string, prev uint64, maxBody int, asideDir string) (scanResult, []Damage, error) {
	f, err := os.Open(path)
	if err != nil {
		return scanResult{}, nil, err
	}
	res, badAt, err := scanClean(f, prev, maxBody)
	f.Close()
	if err != nil {
		return res, nil, err
	}
	if badAt < 0 {
		return res, nil, nil
	}
	// Damage: read the whole file and resynchronise on the next valid record.
	data, err := os.ReadFile(path)
	if err != nil {
		return res, nil, err
	}
	var damages []Damage
	out := make([]byte, 0, len(data))
	out = append(out, data[:badAt]...)
	pos := int(badAt)
	last := res.last
	if last == 0 {
		last = prev
	}
	for pos < len(data) {
		seq, _, n, err := DecodeRecord(data[pos:], maxBody)
		if err == nil && seq > last {
			if res.first == 0 {
				res.first = seq
			}
			last = seq
			res.count++
			res.runs.add(seq)
			out = append(out, data[pos:pos+n]...)
			pos += n
			continue
		}
		next, nseq := resync(data, pos+1, last, maxBody)
		d := Damage{Segment: filepath.Base(path), Offset: int64(pos), Tail: next < 0}
		end := next
		if next < 0 {
			end = len(data)
		} else if last > 0 {
			d.Lost = nseq - last - 1
		}
		d.Bytes = int64(end - pos)
		if !allZero(data[pos:end]) {
			d.SetAside = filepath.Join(asideDir, fmt.Sprintf("%s.%d.bin", filepath.Base(path), pos))
			if err := os.MkdirAll(asideDir, 0o700); err != nil {
				return res, nil, err
			}
			if err := writeFileSync(d.SetAside, data[pos:end]); err != nil {
				return res, nil, err
			}
		}
		damages = append(damages, d)
		if next < 0 {
			break
		}
		pos = next
	}
	res.last = last
	if res.count == 0 {
		res.first, res.last, res.runs = 0, 0, nil
	}
	res.size = int64(len(out))
	tmp := path + ".repair"
	if err := writeFileSync(tmp, out); err != nil {
		return res, nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return res, nil, err
	}
	return res, damages, syncDir(filepath.Dir(path))
}

// scanClean reads records sequentially until the end or the first invalid
// one, whose offset it returns (-1 when the file is clean).
func scanClean(f *os.File, prev uint64, maxBody int) (scanResult, int64, error) {
	var res scanResult
	r := bufio.NewReaderSize(f, 64<<10)
	var hdr [headerSize]byte
	body := make([]byte, 0, 4096)
	var off int64
	last := prev
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return res, -1, nil
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return res, off, nil
			}
			return res, 0, err
		}
		n, sum, ok := parseHeader(hdr[:], maxBody)
		if !ok {
			return res, off, nil
		}
		if cap(body) < n {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return res, off, nil
			}
			return res, 0, err
		}
		if crc32.Checksum(body, castagnoli) != sum {
			return res, off, nil
		}
		seq, _, err := decodeBody(body)
		if err != nil || seq <= last {
			return res, off, nil
		}
		if res.first == 0 {
			res.first = seq
		}
		res.last, last = seq, seq
		res.count++
		res.runs.add(seq)
		off += int64(headerSize + n)
		res.size = off
	}
}

// resync finds the next offset >= from holding a valid record with a seq
// above last; -1 if none.
func resync(data []byte, from int, last uint64, maxBody int) (int, uint64) {
	for p := from; p+headerSize+bodyFixed <= len(data); p++ {
		if seq, _, _, err := DecodeRecord(data[p:], maxBody); err == nil && seq > last {
			return p, seq
		}
	}
	return -1, 0
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := fsyncFile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return fsyncDir(d)
}

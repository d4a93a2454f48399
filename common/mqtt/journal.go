package mqtt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
)

// The journal keeps what the tracker knows about the current connection
// (redeliver.go) where a crash of the process cannot take it: in a file,
// written but never fsynced. A killed process's writes survive in the page
// cache; a power cut may lose them, so the file names the boot it was
// written in and a later boot ignores it. It costs no fsync and, at sensor
// rates, about a page of writeback every half minute.
//
// Records: 'A' a message arrived (packet id, payload length, hash of topic
// and payload), 'F' it is safe (delivered or spooled: written with the next
// PUBACK's records), 'S' a PUBACK is about to be written for a packet id,
// 'C' a new connection begins. A PUBACK's record is written before the PUBACK
// reaches the connection, with every arrival before it, so after a crash
// the file tells which messages of the last connection certainly had no
// PUBACK sent. When the file passes journalMax it is replaced by one that
// starts with the current connection's messages.
const (
	recArrival = 'A'
	recSafe    = 'F'
	recSent    = 'S'
	recConn    = 'C'

	journalMagic = "cloud-block mqtt journal 1\n"
)

// journalMax is the size past which the journal starts a new file (a var
// for tests).
var journalMax int64 = 1 << 20

type journal struct {
	path string
	boot string
	f    *os.File
	size int64
	buf  []byte // records not yet written
}

// bootID identifies this boot of the machine ("" if unknown).
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// openJournal reads what path holds from an earlier run in this boot (the
// messages of its last connection) and starts a fresh file. Without a boot
// id there is no journal (nil): redeliveries after a crash are not
// recognised.
func openJournal(path string) (*journal, []*rcvd, error) {
	boot := bootID()
	if boot == "" {
		return nil, nil, nil
	}
	var last []*rcvd
	if data, err := os.ReadFile(path); err == nil {
		last = parseJournal(data, boot)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	j := &journal{path: path, boot: boot}
	if err := j.replace(last); err != nil {
		return nil, nil, err
	}
	return j, last, nil
}

func (j *journal) header() []byte { return []byte(journalMagic + j.boot + "\n") }

// parseJournal returns the messages of the last connection recorded, if
// the file was written in this boot.
func parseJournal(data []byte, boot string) []*rcvd {
	head := []byte(journalMagic + boot + "\n")
	if !bytes.HasPrefix(data, head) {
		return nil
	}
	data = data[len(head):]
	var cur []*rcvd
	byID := map[uint16]*rcvd{}
	for len(data) > 0 {
		switch data[0] {
		case recConn:
			cur, byID = nil, map[uint16]*rcvd{}
			data = data[1:]
		case recArrival:
			if len(data) < 15 {
				return nil
			}
			e := &rcvd{id: binary.LittleEndian.Uint16(data[1:]), n: binary.LittleEndian.Uint32(data[3:]),
				sum: binary.LittleEndian.Uint64(data[7:]), dead: true}
			cur = append(cur, e)
			byID[e.id] = e
			data = data[15:]
		case recSent, recSafe:
			if len(data) < 3 {
				return nil
			}
			if e := byID[binary.LittleEndian.Uint16(data[1:])]; e != nil {
				e.safe = true // a PUBACK goes out only for a safe message
				e.sent = e.sent || data[0] == recSent
			}
			data = data[3:]
		default:
			return nil // not written by this version: recognise nothing
		}
	}
	if len(cur) > tracked {
		cur = cur[len(cur)-tracked:]
	}
	return cur
}

func (j *journal) arrival(e *rcvd) {
	var r [15]byte
	r[0] = recArrival
	binary.LittleEndian.PutUint16(r[1:], e.id)
	binary.LittleEndian.PutUint32(r[3:], e.n)
	binary.LittleEndian.PutUint64(r[7:], e.sum)
	j.buf = append(j.buf, r[:]...)
}

func (j *journal) sent(id uint16) {
	j.buf = append(j.buf, recSent, byte(id), byte(id>>8))
}

func (j *journal) safe(id uint16) {
	j.buf = append(j.buf, recSafe, byte(id), byte(id>>8))
}

func (j *journal) conn() { j.buf = append(j.buf, recConn) }

// flush writes the records held; cur is the current connection's list,
// for starting a new file once this one is large.
func (j *journal) flush(cur []*rcvd) error {
	if len(j.buf) == 0 {
		return nil
	}
	if j.size+int64(len(j.buf)) > journalMax {
		j.buf = j.buf[:0]
		return j.replace(cur)
	}
	n, err := j.f.Write(j.buf)
	j.size += int64(n)
	j.buf = j.buf[:0]
	return err
}

// replace starts a new file holding a new connection with the messages of
// cur, and makes it the journal (a rename: a crash leaves one or the other).
func (j *journal) replace(cur []*rcvd) error {
	tmp := j.path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	b := append(j.header(), recConn)
	saved := j.buf
	j.buf = b
	for _, e := range cur {
		j.arrival(e)
		switch {
		case e.sent:
			j.sent(e.id)
		case e.safe:
			j.safe(e.id)
		}
	}
	b, j.buf = j.buf, saved
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, j.path); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if j.f != nil {
		j.f.Close()
	}
	j.f, j.size = f, int64(len(b))
	return nil
}

// abandon removes the journal after a failed write: a file that may lack
// a PUBACK's record must not be read after a crash. If even that fails the
// PUBACK must not be sent.
func (j *journal) abandon() error {
	if j.f != nil {
		j.f.Close()
		j.f = nil
	}
	if err := os.Remove(j.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the MQTT journal could not be written nor removed: %w", err)
	}
	return nil
}

func (j *journal) close() {
	if j.f != nil {
		j.f.Close()
	}
}

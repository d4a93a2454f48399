package harness

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ProcStat is a process's CPU time and memory, from /proc.
type ProcStat struct {
	CPU    time.Duration // user + system
	RSS    int64         // bytes, now
	MaxRSS int64         // bytes, peak (VmHWM)
}

// ReadProcStat reads pid's CPU time and RSS.
func ReadProcStat(pid int) (ProcStat, error) {
	var st ProcStat
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const clk = 100 // USER_HZ on Linux
	st.CPU = time.Duration(utime+stime) * time.Second / clk
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	for _, line := range strings.Split(string(s), "\n") {
		fs := strings.Fields(line)
		if len(fs) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fs[1], 10, 64)
		switch fs[0] {
		case "VmRSS:":
			st.RSS = kb << 10
		case "VmHWM:":
			st.MaxRSS = kb << 10
		}
	}
	return st, nil
}

// PID is the running block's process id (0 when stopped).
func (b *Block) PID() int {
	if b.proc == nil {
		return 0
	}
	return b.proc.Cmd.Process.Pid
}

// CPUTime is pid's user+system CPU time so far; it fails tb if it cannot be read.
func CPUTime(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	st, err := ReadProcStat(pid)
	if err != nil {
		tb.Fatal(err)
	}
	return st.CPU
}

// EnvFields parses "K=V K2=V2" (as in BENCH_BLOCK_ENV, which benchmarks use
// to try runtime settings such as GOGC on the block) into a map.
func EnvFields(s string) map[string]string {
	env := map[string]string{}
	for _, kv := range strings.Fields(s) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// WrittenBytes is what pid has sent to the storage layer so far
// (/proc/<pid>/io write_bytes less cancelled_write_bytes: pages written and
// then truncated away before they reached the disk do not count).
func WrittenBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	var w, c int64
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "write_bytes":
			w = n
		case "cancelled_write_bytes":
			c = n
		}
	}
	return w - c, nil
}

// DiskWritten is what the block device holding path has written since
// boot, in bytes (/sys/dev/block/<major>:<minor>/stat, sectors written, of
// the partition or whole disk), after a sync(2) so that every dirty page
// and the filesystem's journal have gone out. Every process writing to
// that device counts: subtract an idle baseline over the same time.
func DiskWritten(path string) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	major, minor := (st.Dev>>8)&0xfff|(st.Dev>>32)&^0xfff, st.Dev&0xff|(st.Dev>>12)&^0xff
	syscall.Sync()
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/stat", major, minor))
	if err != nil {
		return 0, fmt.Errorf("%s is not on a block device (%d:%d): %w", path, major, minor, err)
	}
	f := strings.Fields(string(b))
	if len(f) < 7 {
		return 0, fmt.Errorf("/sys/dev/block/%d:%d/stat: %q", major, minor, b)
	}
	sectors, err := strconv.ParseInt(f[6], 10, 64)
	return sectors * 512, err
}

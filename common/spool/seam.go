//go:build spoolseam

// The spool's test seam, compiled only with -tags spoolseam (the fault
// suite and make bench build such binaries; the images never do). Two
// environment variables turn it on:
//
//	SPOOL_SEAM_FSYNC_DELAY=20ms  every file fsync takes this much longer
//	                             (an SD card's fsync, where a disk's is 1 ms)
//	SPOOL_SEAM_SHADOW=<dir>      with SPOOL_SEAM_ROOT=<the spool's dir>: record,
//	                             outside the process, what each fsync made
//	                             durable, for a power-cut emulation
//
// The shadow holds blobs/<inode>, the content of each file as of its last
// fsync, and names/<path>, the inode each name held when it last became
// durable: a name becomes durable with its file's fsync (as on ext4, where
// a new file's fsync commits its directory entry) or with an fsync of its
// directory, which also makes removals and renames durable. A power cut
// (testenv/harness PowerCut) kills the process and rebuilds the spool's
// directory from the shadow alone: every write not yet fsynced is gone,
// every cursor write not fsynced is undone, every removal not followed by
// a directory fsync is undone.
package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func init() {
	delay, err := time.ParseDuration(orZero(os.Getenv("SPOOL_SEAM_FSYNC_DELAY")))
	if err != nil {
		panic("SPOOL_SEAM_FSYNC_DELAY: " + err.Error())
	}
	sh := &shadow{dir: os.Getenv("SPOOL_SEAM_SHADOW"), root: os.Getenv("SPOOL_SEAM_ROOT")}
	if (sh.dir == "") != (sh.root == "") {
		panic("SPOOL_SEAM_SHADOW and SPOOL_SEAM_ROOT go together")
	}
	syncFile, syncDir := fsyncFile, fsyncDir
	fsyncFile = func(f *os.File) error {
		time.Sleep(delay)
		if err := syncFile(f); err != nil {
			return err
		}
		return sh.fileSynced(f)
	}
	fsyncDir = func(d *os.File) error {
		if err := syncDir(d); err != nil {
			return err
		}
		return sh.dirSynced(d)
	}
}

func orZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}

type shadow struct {
	mu        sync.Mutex
	dir, root string
}

// rel is path relative to the root, or false outside it.
func (sh *shadow) rel(path string) (string, bool) {
	if sh.dir == "" {
		return "", false
	}
	r, err := filepath.Rel(sh.root, path)
	if err != nil || r == ".." || strings.HasPrefix(r, "../") {
		return "", false
	}
	return r, true
}

func (sh *shadow) fileSynced(f *os.File) error {
	rel, ok := sh.rel(f.Name())
	if !ok {
		return nil
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	// The caller writes this file only from the goroutine now in fsync:
	// what is read here is exactly what the fsync made durable.
	data, err := os.ReadFile(f.Name())
	if err != nil {
		return err
	}
	if err := sh.put(filepath.Join("blobs", strconv.FormatUint(ino, 10)), data); err != nil {
		return err
	}
	return sh.put(filepath.Join("names", rel), []byte(strconv.FormatUint(ino, 10)))
}

func (sh *shadow) dirSynced(d *os.File) error {
	rel, ok := sh.rel(d.Name())
	if !ok {
		return nil
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ents, err := os.ReadDir(d.Name())
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		live[e.Name()] = true
		ino := strconv.FormatUint(fi.Sys().(*syscall.Stat_t).Ino, 10)
		name := filepath.Join("names", rel, e.Name())
		if was, _ := os.ReadFile(filepath.Join(sh.dir, name)); string(was) == ino {
			continue
		}
		// A name new to the shadow (a file just created, or renamed
		// over): its content as it is now, since its inode number may be
		// a deleted file's whose blob is stale. (For the spool's files
		// that content is empty or was just fsynced.)
		data, err := os.ReadFile(filepath.Join(d.Name(), e.Name()))
		if err != nil {
			continue // removed meanwhile
		}
		if err := sh.put(filepath.Join("blobs", ino), data); err != nil {
			return err
		}
		if err := sh.put(name, []byte(ino)); err != nil {
			return err
		}
	}
	names, _ := os.ReadDir(filepath.Join(sh.dir, "names", rel))
	for _, e := range names {
		if e.Type().IsRegular() && !live[e.Name()] {
			if err := os.Remove(filepath.Join(sh.dir, "names", rel, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// put replaces shadow/rel with data, atomically: a kill during put leaves
// the previous content.
func (sh *shadow) put(rel string, data []byte) error {
	path := filepath.Join(sh.dir, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(sh.dir, fmt.Sprintf("put-%d.tmp", os.Getpid()))
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

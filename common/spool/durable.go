package spool

import "os"

// How the spool makes its files and directory entries durable. Everything
// that must survive a power cut goes through these two, so that a test
// build (the spoolseam tag, seam.go) can make them slow, as an SD card's
// fsync is, or record what each one made durable, to emulate a power cut.
var (
	fsyncFile = func(f *os.File) error { return f.Sync() }
	fsyncDir  = func(d *os.File) error { return d.Sync() }
)

//go:build clockseam

// The clock's test seam, compiled only with -tags clockseam (the block
// suite's clock scenario builds such binaries; the images never do):
//
//	CLOCK_SEAM_FILE=<file>  the file holds an offset (a Go duration such as
//	                        -491000h or 0s) added to the wall clock; it is
//	                        read again every 50 ms, so a test sets the
//	                        clock by rewriting it. The monotonic clock is
//	                        left alone, as a real clock step leaves it.
//
// Nothing changes the machine's clock.
package clock

import (
	"os"
	"strings"
	"sync/atomic"
	"time"
)

func init() {
	path := os.Getenv("CLOCK_SEAM_FILE")
	if path == "" {
		return
	}
	var offset atomic.Int64
	read := func() {
		b, err := os.ReadFile(path)
		if err != nil {
			return // being replaced: keep the last offset
		}
		d, err := time.ParseDuration(strings.TrimSpace(string(b)))
		if err != nil {
			panic("CLOCK_SEAM_FILE " + path + ": " + err.Error())
		}
		offset.Store(int64(d))
	}
	read()
	go func() {
		for range time.Tick(50 * time.Millisecond) {
			read()
		}
	}()
	// Wall only: Add would shift a monotonic reading too.
	now = func() time.Time { return time.Now().Round(0).Add(time.Duration(offset.Load())) }
}

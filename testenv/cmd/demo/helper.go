package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloud-block/cloud-block/testenv/cmd/demo/internal/show"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// helper is a read-back program (peek-blob, peek-pubsub) run as a process:
// it sets its emulator up (container, topic and subscription), prints
// show.Ready, then one JSON line per arrival, which the demo reads from its
// log. They are programs of their own so that the cloud SDKs they need are
// compiled only for their destination's demo.
type helper struct {
	p      *procs.Proc
	offset int
}

func (d *demo) startHelper(name string, args ...string) (*helper, error) {
	p, err := d.startProc(procs.Spec{Name: name, Path: filepath.Join(d.bin, name), Args: args}, true)
	if err != nil {
		return nil, err
	}
	if err := d.waitLog(p, show.Ready, 60*time.Second); err != nil {
		return nil, err
	}
	return &helper{p: p}, nil
}

// waitLog waits until p's log contains text, failing early if a watched
// process exits.
func (d *demo) waitLog(p *procs.Proc, text string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.Log(), text) {
		if err := d.exited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not say %q within %s; its log:\n%s", p.Name, text, timeout, tail(p.Log(), 2000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// peek returns the arrivals the helper reported since the last call.
func (h *helper) peek() []show.Arrival {
	log := h.p.Log()
	if len(log) <= h.offset {
		return nil
	}
	fresh := log[h.offset:]
	end := strings.LastIndexByte(fresh, '\n')
	if end < 0 {
		return nil // a line still being written
	}
	h.offset += end + 1
	var out []show.Arrival
	for _, line := range strings.Split(fresh[:end], "\n") {
		if a, ok := show.Parse([]byte(line)); ok {
			out = append(out, a)
		}
	}
	return out
}

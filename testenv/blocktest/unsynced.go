package blocktest

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

// Power cut, emulated by the spool's seam (a block built with
// harness.SeamBuildTag): the block is killed mid-stream and its spool goes
// back to what its fsyncs made durable, as after a real power cut, while
// the broker survives. Every message the block acknowledged before the cut
// must be delivered from the spool; those it had not acknowledged are the
// broker's to send again. So nothing published may be missing.
//
// Two ways: the default window (BUFFER_SYNC_INTERVAL 1s) with the
// destination going down before the cut, so that what the window held was
// written and acknowledged by sync; and the strict mode (0) with the
// destination up and every fsync 20 ms long (an SD card's), so that the
// cut nearly always lands between a group's write and the end of its fsync.
func powerCutUnsynced(t *testing.T, tg *target, sc Scale) {
	const n, size, rate = 3000, 200, 500
	modes := []struct {
		name, interval, delay string
		down                  bool
	}{
		{"window-down", "1s", "0", true},
		{"strict-slow-fsync", "0", "20ms", false},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			r := newRig(t, tg, rigOpts{tags: harness.SeamBuildTag, env: map[string]string{
				"BUFFER_SYNC_INTERVAL":   m.interval,
				"SPOOL_SEAM_FSYNC_DELAY": m.delay,
			}})
			shadow := t.TempDir()
			for k, v := range harness.PowerCutEnv(r.block.BufDir, shadow) {
				r.block.Env[k] = v
			}
			r.start()
			pub := harness.NewPublisher(t, r.broker, "cloud-input", size)
			began := time.Now()
			done := make(chan struct{})
			go func() {
				defer close(done)
				pub.Publish(0, n, rate)
			}()
			stream := time.Duration(n / rate * int(time.Second))
			cutAt := time.Duration(float64(stream) * (0.4 + 0.4*rand.Float64()))
			if m.down {
				time.Sleep(time.Until(began.Add(cutAt / 3)))
				r.down()
			}
			time.Sleep(time.Until(began.Add(cutAt)))
			safe := r.metric("cloudblock_acknowledged_by_sync_total")
			r.block.Kill()
			files, before, after, err := harness.PowerCut(r.block.BufDir, shadow)
			if err != nil {
				t.Fatal(err)
			}
			if m.down {
				r.up()
			}
			r.block.Start()
			<-done
			tl, _ := r.waitAll(n, size, 3*time.Minute, true)
			note := fmt.Sprintf("%s: cut after %s (about %d acknowledged by sync before it); the spool went from %d to %d bytes in %d files",
				m.name, cutAt.Round(time.Millisecond), int(safe), before, after, files)
			t.Logf("%s: %s; %s", tg.name, tl, note)
			if tl.Lost != 0 || tl.Corrupt != 0 {
				t.Errorf("messages lost to the power cut: %s, missing %v", tl, tl.Missing)
			}
			if m.down && safe <= 0 {
				t.Errorf("nothing was acknowledged by sync before the cut: the scenario did not test the spool")
			}
			r.report("powercut-unsynced", tl, 0, note)
		})
	}
}

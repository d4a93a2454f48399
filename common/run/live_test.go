package run

import (
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/pipeline"
	"github.com/cloud-block/cloud-block/common/spool"
)

// Liveness says stuck only for what a restart can cure or must be told
// about: a write that never returns, writes failing for minutes, a
// destination call far past its deadline. An outage is not one of them.
func TestLiveness(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	s := &settings{pipe: pipeline.Config{SendTimeout: 10 * time.Second}}
	for _, c := range []struct {
		name string
		sst  spool.Stats
		st   pipeline.Status
		want string // a reason containing this; "" for live
	}{
		{"idle", spool.Stats{}, pipeline.Status{}, ""},
		{"destination down, retrying", spool.Stats{}, pipeline.Status{LastError: "connection refused", LastErrorAt: now, OldestUnsent: now.Add(-time.Hour)}, ""},
		{"write in progress", spool.Stats{CommitStarted: now.Add(-5 * time.Second)}, pipeline.Status{}, ""},
		{"write stuck", spool.Stats{CommitStarted: now.Add(-2 * time.Minute)}, pipeline.Status{}, "spool write has not returned for 2m0s"},
		{"disk full a while", spool.Stats{Failing: "no space left on device", FailingSince: now.Add(-time.Minute)}, pipeline.Status{}, ""},
		{"disk full for long", spool.Stats{Failing: "no space left on device", FailingSince: now.Add(-6 * time.Minute)}, pipeline.Status{}, "failed for 6m0s: no space left on device"},
		{"call within its deadline", spool.Stats{}, pipeline.Status{OldestCall: now.Add(-9 * time.Second)}, ""},
		{"call overrunning", spool.Stats{}, pipeline.Status{OldestCall: now.Add(-75 * time.Second)}, "has run 1m15s, past SEND_TIMEOUT (10s)"},
	} {
		got := strings.Join(s.liveness(c.sst, c.st, now), "; ")
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("%s: reasons %q, want %q", c.name, got, c.want)
		}
	}
	// The default SEND_TIMEOUT applies when none is set.
	if r := (&settings{}).liveness(spool.Stats{}, pipeline.Status{OldestCall: now.Add(-pipeline.DefaultSendTimeout - 30*time.Second)}, now); len(r) != 0 {
		t.Errorf("a call within the default SEND_TIMEOUT + 1 min: %v", r)
	}
}

package run

import (
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/clock"
)

type fixedClock time.Time

func (f fixedClock) Wall() time.Time     { return time.Time(f) }
func (f fixedClock) Mono() time.Duration { return 0 }

// check warns of a clock before the build's date, and says nothing of a
// plausible one.
func TestCheckClock(t *testing.T) {
	got := checkClock(fixedClock(time.Unix(300, 0)))
	if len(got) != 1 || got[0].status != statusWarn || got[0].subject != "clock" ||
		!strings.HasPrefix(got[0].text, "clock not synchronised: the system time 1970-01-01T00:05:00Z is before this build's date") ||
		!strings.Contains(got[0].text, "refuses signed requests until NTP sets it") {
		t.Errorf("1970: %+v", got)
	}
	if got := checkClock(fixedClock(clock.Floor().Add(time.Hour))); len(got) != 0 {
		t.Errorf("a plausible clock: %+v", got)
	}
}

package faults

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

// Sizes: the full sizes unless the environment says otherwise
// (`make test` runs the same scenarios smaller).
var (
	nMessages  = envInt("FAULTS_MESSAGES", 100_000)
	nKills     = envInt("FAULTS_KILLS", 10)
	outageTime = envDuration("FAULTS_OUTAGE", 60*time.Second)
	// crashRate is the publish rate of the crash stream (messages/s).
	crashRate = float64(envInt("FAULTS_RATE", 2000))
	// soakTime is the compressed hour: two minutes, ten with FAULTS_SOAK=1,
	// or FAULTS_SOAK_TIME.
	soakTime = func() time.Duration {
		if os.Getenv("FAULTS_SOAK") == "1" {
			return 10 * time.Minute
		}
		return envDuration("FAULTS_SOAK_TIME", 2*time.Minute)
	}()
)

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "faults: %s=%q is not a positive integer; using %d\n", name, v, def)
			return def
		}
		return n
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			fmt.Fprintf(os.Stderr, "faults: %s=%q is not a positive duration; using %s\n", name, v, def)
			return def
		}
		return d
	}
	return def
}

// row is one line of the summary table.
type row struct {
	Scenario, Target string
	Published        int
	Delivered        int // distinct messages
	Duplicates       int // deliveries beyond the first, any cause
	Expected         int // messages the scenario destroys on purpose (drop_oldest, damaged records)
	Stuck            int // not delivered, but still in the spool or at the broker: the block cannot proceed
	Lost             int // missing and not explained: must be 0
	Note             string
}

var (
	resultsMu sync.Mutex
	results   []row
	started   = time.Now()
)

func record(r row) {
	resultsMu.Lock()
	results = append(results, r)
	resultsMu.Unlock()
}

func TestMain(m *testing.M) {
	code := m.Run()
	resultsMu.Lock()
	defer resultsMu.Unlock()
	sort.SliceStable(results, func(i, j int) bool {
		if results[i].Scenario != results[j].Scenario {
			return results[i].Scenario < results[j].Scenario
		}
		return results[i].Target < results[j].Target
	})
	var b bytes.Buffer
	fmt.Fprintf(&b, "\nfault suite summary (FAULTS_MESSAGES=%d FAULTS_KILLS=%d FAULTS_OUTAGE=%s, %s):\n",
		nMessages, nKills, outageTime, time.Since(started).Round(time.Second))
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "scenario\ttarget\tpublished\tdelivered\tduplicates\tdestroyed\tstuck\tlost\t\tnote")
	lost := 0
	for _, r := range results {
		lost += r.Lost
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t\t%s\n", r.Scenario, r.Target, r.Published, r.Delivered, r.Duplicates, r.Expected, r.Stuck, r.Lost, r.Note)
	}
	w.Flush()
	fmt.Fprintln(&b, "destroyed: dropped by drop_oldest or damaged on purpose (counted by the block); stuck: not delivered but still held")
	fmt.Fprintln(&b, "(in the spool or unacknowledged at the broker) because the block cannot proceed; lost: anything else missing, must be 0.")
	os.Stdout.Write(b.Bytes())
	if lost > 0 {
		fmt.Printf("FAIL: %d messages lost\n", lost)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// msg is one message read back from a destination.
type msg struct {
	ID, Topic, Device string
	Payload           []byte
}

// tally compares deliveries with the numbered messages 0..n-1.
type tally struct {
	Published, Distinct int
	Copies              int // deliveries beyond the first of a payload (any cause)
	Resent              int // deliveries beyond the first of one id: the sink stored a spooled message twice
	Lost, Corrupt       int
	Missing             []int // the first ten
	LastMissing         int   // the highest missing (-1 if none)
}

func (t tally) String() string {
	return fmt.Sprintf("published %d, delivered %d distinct, %d duplicates (%d resends of a spooled message under its id, %d broker redeliveries under new ids), %d lost, %d corrupt",
		t.Published, t.Distinct, t.Copies, t.Resent, t.Copies-t.Resent, t.Lost, t.Corrupt)
}

// count tallies got against messages 0..n-1 of size (harness.Payload);
// anything else counts as corrupt.
func count(n, size int, got []msg) tally { return countRange(0, n, size, got) }

// countRange tallies got against messages from..to-1: other numbered
// messages are not counted, anything not numbered is corrupt.
func countRange(from, to, size int, got []msg) tally {
	t := tally{Published: to - from, LastMissing: -1}
	seen := make([]int, to-from)
	ids := make(map[string]int, len(got))
	for _, m := range got {
		i := harness.Index(m.Payload)
		if i >= 0 && (i < from || i >= to) {
			continue
		}
		if i < 0 || !bytes.Equal(m.Payload, harness.Payload(i, size)) {
			t.Corrupt++
			continue
		}
		seen[i-from]++
		if m.ID != "" {
			ids[m.ID]++
		}
	}
	for i, c := range seen {
		if c == 0 {
			t.Lost++
			t.LastMissing = from + i
			if len(t.Missing) < 10 {
				t.Missing = append(t.Missing, from+i)
			}
			continue
		}
		t.Distinct++
		t.Copies += c - 1
	}
	for _, c := range ids {
		t.Resent += c - 1
	}
	return t
}

// numbered keeps the messages made by harness.Payload.
func numbered(got []msg) []msg {
	var out []msg
	for _, m := range got {
		if harness.Index(m.Payload) >= 0 {
			out = append(out, m)
		}
	}
	return out
}

// selected returns the targets FAULTS_TARGETS names (all by default).
func selected(t *testing.T) []*target {
	want := os.Getenv("FAULTS_TARGETS")
	if want == "" {
		return targets
	}
	var out []*target
	for _, tg := range targets {
		for _, w := range strings.Split(want, ",") {
			if strings.TrimSpace(w) == tg.name {
				out = append(out, tg)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("FAULTS_TARGETS=%q names none of the targets", want)
	}
	return out
}

// forTargets runs f as a subtest per target; with parallel, all at once.
// The subtests run in goroutines of their own rather than with t.Parallel,
// so that `go test -parallel` (GOMAXPROCS by default: 2 here) does not
// serialise scenarios that mostly wait on outages.
func forTargets(t *testing.T, parallel bool, f func(t *testing.T, tg *target)) {
	var wg sync.WaitGroup
	for _, tg := range selected(t) {
		run := func() {
			t.Run(tg.name, func(t *testing.T) {
				tg.need(t)
				f(t, tg)
			})
		}
		if !parallel {
			run()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			run()
		}()
	}
	wg.Wait()
}

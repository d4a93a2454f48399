package blocktest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

// Scale is how large the scenarios run.
type Scale struct {
	Messages int           // the crash and redelivery streams' length
	Kills    int           // SIGKILLs (or cuts) per stream
	Outage   time.Duration // how long the destination is away
	Rate     float64       // the crash stream's publish rate (messages/s)
	Soak     time.Duration // the compressed hour
	// Scenarios names the scenarios to run (nil: all). A target runs only
	// those that apply to it.
	Scenarios []string
	// FileOnly names scenarios run for the file destination only: those
	// that prove the spool, the same code under every destination.
	FileOnly []string
	// HeavyAlone runs the heavy scenarios (streams of thousands of messages a
	// second) one at a time in the process, so that two cores keep up with
	// the publish rate.
	HeavyAlone bool
}

// Full is the size the delivery promises are stated at (`make test-faults`).
var Full = Scale{Messages: 100_000, Kills: 10, Outage: 60 * time.Second, Rate: 2000, Soak: 2 * time.Minute, HeavyAlone: true}

// Small runs every scenario a destination's code takes part in, small
// enough for `make test`; a full disk, which only the spool sees, runs for
// the file destination alone, and the soak only under Full.
var Small = Scale{Messages: 2000, Kills: 2, Outage: 5 * time.Second, Rate: 2000, Soak: 30 * time.Second,
	Scenarios: []string{"bytes", "config", "crash", "outage", "redelivery", "badinput", "security", "powercut", "disk", "toolbox"},
	FileOnly:  []string{"disk"}}

// ScaleFromEnv is base adjusted by BLOCKTEST_MESSAGES, BLOCKTEST_KILLS,
// BLOCKTEST_OUTAGE, BLOCKTEST_RATE, BLOCKTEST_SOAK_TIME (BLOCKTEST_SOAK=1:
// ten minutes) and BLOCKTEST_SCENARIOS (comma-separated; "all" for every
// one). A value that does not parse is reported on stderr and ignored.
func ScaleFromEnv(base Scale) Scale {
	sc := base
	sc.Messages = envInt("BLOCKTEST_MESSAGES", sc.Messages)
	sc.Kills = envInt("BLOCKTEST_KILLS", sc.Kills)
	sc.Outage = envDuration("BLOCKTEST_OUTAGE", sc.Outage)
	sc.Rate = float64(envInt("BLOCKTEST_RATE", int(sc.Rate)))
	sc.Soak = envDuration("BLOCKTEST_SOAK_TIME", sc.Soak)
	if os.Getenv("BLOCKTEST_SOAK") == "1" {
		sc.Soak = 10 * time.Minute
	}
	switch v := os.Getenv("BLOCKTEST_SCENARIOS"); v {
	case "":
	case "all":
		sc.Scenarios = nil
	default:
		sc.Scenarios = strings.Split(v, ",")
	}
	return sc
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "blocktest: %s=%q is not a positive integer; using %d\n", name, v, def)
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
			fmt.Fprintf(os.Stderr, "blocktest: %s=%q is not a positive duration; using %s\n", name, v, def)
			return def
		}
		return d
	}
	return def
}

// A scenario is one of the suite's tests, run against one target.
type scenario struct {
	name string // subtest name
	kind string // what Scale.Scenarios and target.only name
	run  func(t *testing.T, tg *target, sc Scale)
	// heavy scenarios stream thousands of messages a second (Scale.HeavyAlone).
	heavy bool
	// fileOnly: the spool's own code, the same under every destination.
	fileOnly bool
}

var scenarios = []scenario{
	{name: "bytes", kind: "bytes", run: byteExact},
	{name: "config", kind: "config", run: configExit},
	{name: "crash", kind: "crash", run: crash, heavy: true},
	{name: "outage", kind: "outage", run: outage},
	{name: "outage-past-cap", kind: "outage", run: outagePastCap},
	{name: "network-cut", kind: "outage", run: networkCut},
	{name: "broker-restart", kind: "outage", run: brokerRestart},
	{name: "redelivery", kind: "redelivery", run: redeliveries, heavy: true},
	{name: "badinput", kind: "badinput", run: badInput},
	{name: "security", kind: "security", run: security},
	{name: "powercut", kind: "powercut", run: powerCut},
	{name: "powercut-unsynced", kind: "powercut", run: powerCutUnsynced},
	{name: "torn-tail", kind: "powercut", run: tornTail, fileOnly: true},
	{name: "disk", kind: "disk", run: disk},
	{name: "toolbox", kind: "toolbox", run: toolbox},
	{name: "replay-crash", kind: "toolbox", run: replayCrash, fileOnly: true},
	{name: "soak", kind: "soak", run: soak, heavy: true},
}

var (
	heavyMu sync.Mutex
	// rigs bounds the scenarios running at once in the process: each has a
	// broker, an emulator and the block, and two cores.
	rigs = make(chan struct{}, envInt("BLOCKTEST_PARALLEL", 10))
)

// Targets lists the targets' names: "file" (the test destination, which
// runs the spool's own scenarios), then one or more per service.
func Targets() []string {
	out := make([]string, len(targets))
	for i, tg := range targets {
		out[i] = tg.name
	}
	return out
}

// ForService lists the targets of a service ("aws-sqs": its standard and
// FIFO variants).
func ForService(service string) []string {
	var out []string
	for _, tg := range targets {
		if tg.pkg == "services/"+service {
			out = append(out, tg.name)
		}
	}
	return out
}

// Run runs every scenario of sc that applies to the target, each a subtest,
// at once up to BLOCKTEST_PARALLEL rigs in the process.
func Run(t *testing.T, name string, sc Scale) {
	i := slices.IndexFunc(targets, func(tg *target) bool { return tg.name == name })
	if i < 0 {
		t.Fatalf("blocktest: no target %q (there are %v)", name, Targets())
	}
	tg := targets[i]
	var wg sync.WaitGroup
	for _, s := range scenarios {
		fileOnly := s.fileOnly || slices.Contains(sc.FileOnly, s.kind)
		if !tg.in(s.kind, sc) || (fileOnly && tg.name != "file") {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(s.name, func(t *testing.T) {
				rigs <- struct{}{}
				defer func() { <-rigs }()
				if s.heavy && sc.HeavyAlone {
					heavyMu.Lock()
					defer heavyMu.Unlock()
				}
				s.run(t, tg, sc)
			})
		}()
	}
	wg.Wait()
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

// Summary writes the table of every scenario run so far (scenario, target,
// published, delivered, duplicates, lost) and returns how many messages were
// lost in all.
func Summary(w io.Writer) (lost int) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return 0
	}
	sort.SliceStable(results, func(i, j int) bool {
		if results[i].Scenario != results[j].Scenario {
			return results[i].Scenario < results[j].Scenario
		}
		return results[i].Target < results[j].Target
	})
	var b bytes.Buffer
	fmt.Fprintf(&b, "\nblock suite summary (%s):\n", time.Since(started).Round(time.Second))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\ttarget\tpublished\tdelivered\tduplicates\tdestroyed\tstuck\tlost\t\tnote")
	for _, r := range results {
		lost += r.Lost
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t\t%s\n", r.Scenario, r.Target, r.Published, r.Delivered, r.Duplicates, r.Expected, r.Stuck, r.Lost, r.Note)
	}
	tw.Flush()
	fmt.Fprintln(&b, "destroyed: dropped by drop_oldest or damaged on purpose (counted by the block); stuck: not delivered but still held")
	fmt.Fprintln(&b, "(in the spool or unacknowledged at the broker) because the block cannot proceed; lost: anything else missing, must be 0.")
	w.Write(b.Bytes())
	return lost
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

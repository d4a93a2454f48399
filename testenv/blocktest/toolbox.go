package blocktest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// toolbox runs the operator's commands (deadletter, spool) through the real
// binary, against the running service and against its stopped spool:
//
//  1. Two messages over the spool's record limit are dead-lettered on
//     arrival; list and show find them; purge deletes one; replaying the
//     other while it still cannot be spooled leaves it, saying why.
//  2. With the limits raised (a new configuration), replay --all delivers it
//     under its own id; where the destination itself cannot take it (SQS's
//     256 KiB), it comes back with the destination's reason.
//  3. The destination away, a backlog builds; stats, peek and export (with
//     the service running, then stopped) see it; a second block with a
//     fresh BUFFER_DIR (the replacement device) imports the export while
//     stopped and delivers every message under its original id. Imported
//     again, it is delivered again under the same ids: where resends are
//     duplicate-free (object stores' keys), nothing is stored twice.
func toolbox(t *testing.T, tg *target, _ Scale) {
	const size = 200
	const over = 300 << 10 // over the record limit of a 1 MiB spool (256 KiB)
	env := map[string]string{"BUFFER_MAX_BYTES": "1MiB"}
	maps.Copy(env, tg.limitEnv)
	r := newRig(t, tg, rigOpts{broker: harness.MosquittoOptions{Persistence: true}, env: env})
	r.start()
	pub := harness.NewPublisher(t, r.broker, "cloud-input", size)
	pub.Publish(0, 50, 0)
	big := [][]byte{bytes.Repeat([]byte{'a'}, over), bytes.Repeat([]byte{'b'}, over)}
	for _, p := range big {
		pub.PublishRaw("cloud-input", p, false)
	}
	if tg.refused != nil {
		pub.PublishRaw("cloud-input", tg.refused, false)
	}
	r.waitRange(0, 50, size, time.Minute, false)

	// 1. list, show, purge; a replay that cannot be spooled; one the
	// destination refuses again.
	wantDead := 2
	if tg.refused != nil {
		wantDead = 3
	}
	dead := waitDead(r, r.block, wantDead)
	if tg.refused != nil {
		dead = refuseAgain(t, r, dead, tg.refused)
	}
	if !bytes.Equal(dead[0].payload(t, r.block), big[0]) || !bytes.Equal(dead[1].payload(t, r.block), big[1]) {
		t.Fatalf("deadletter show --raw: the payloads differ from those published")
	}
	out, _ := cli(t, r.block, 0, "deadletter", "list")
	if !strings.Contains(out, dead[0].ID) || !strings.Contains(out, fmt.Sprintf("%d dead letters", wantDead)) {
		t.Errorf("deadletter list: want both entries:\n%s", out)
	}
	out, _ = cli(t, r.block, 0, "deadletter", "purge", dead[0].ID)
	if !strings.Contains(out, "purged 1") {
		t.Errorf("deadletter purge: %s", out)
	}
	keep := dead[1]
	out, _ = cli(t, r.block, 1, "deadletter", "replay", keep.ID)
	if !strings.Contains(out, "larger than the spool's record limit") {
		t.Errorf("deadletter replay of a message over the spool's limit: want it left, saying why:\n%s", out)
	}
	if d := waitDead(r, r.block, wantDead-1); d[0].ID != keep.ID || !d[0].DeadAt.Equal(keep.DeadAt) {
		t.Errorf("the entry changed although it could not be replayed: %+v", d[0])
	}

	// 2. The limits raised: replayed, it is delivered under its own id, or
	// refused by the destination and dead-lettered again.
	r.block.Stop()
	for k := range tg.limitEnv {
		delete(r.block.Env, k)
	}
	r.block.Env["BUFFER_MAX_BYTES"] = "8MiB"
	r.block.Start()
	refusedAgain := tg.limitEnv == nil && tg.limit != nil && tg.limit(r) < over
	out, _ = cli(t, r.block, 0, "deadletter", "replay", "--all")
	if !strings.Contains(out, fmt.Sprintf("replayed %d", wantDead-1)) {
		t.Errorf("deadletter replay --all: %s", out)
	}
	err := procs.WaitFor(context.Background(), time.Minute, func() error {
		if refusedAgain {
			d := listDead(t, r.block)
			if len(d) == 1 && d[0].ID == keep.ID && d[0].DeadAt.After(keep.DeadAt) && d[0].Reason != keep.Reason {
				return nil
			}
			return fmt.Errorf("want %s dead-lettered again with the destination's reason, have %+v", keep.ID, d)
		}
		for _, m := range r.be.read(t) {
			if m.ID == keep.ID && bytes.Equal(m.Payload, big[1]) {
				return nil
			}
		}
		return fmt.Errorf("the replayed message %s has not arrived under its id", keep.ID)
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := listDead(t, r.block); !refusedAgain && len(d) != 0 {
		t.Errorf("dead letters left after a replay that went through: %+v", d)
	}

	// 3. A backlog: stats, peek, export; import on a replacement. First
	// the replayed message's delivery is marked in the spool (it arrived,
	// but the mark may lag on a busy machine, and a count of 50 could then
	// be it and 49 of the backlog).
	r.waitMetric("cloudblock_spool_messages", time.Minute, func(v float64) bool { return v == 0 })
	r.down()
	pub.Publish(50, 100, 0)
	r.waitMetric("cloudblock_spool_messages", time.Minute, func(v float64) bool { return v == 50 })
	var st struct {
		Running     bool   `json:"service_running"`
		Undelivered uint64 `json:"undelivered"`
		OldestID    string `json:"oldest_id"`
		Segments    []struct {
			Damaged string
		} `json:"segments"`
	}
	out, _ = cli(t, r.block, 0, "spool", "stats", "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("spool stats --json: %v: %s", err, out)
	}
	if !st.Running || st.Undelivered != 50 || st.OldestID == "" {
		t.Errorf("spool stats with 50 undelivered while running: %s", out)
	}
	for _, g := range st.Segments {
		if g.Damaged != "" {
			t.Errorf("spool stats: a damaged segment in a healthy spool: %s", out)
		}
	}
	out, _ = cli(t, r.block, 0, "spool", "peek", "5", "--json")
	peeked := exportIDs(t, out)
	fileA := filepath.Join(t.TempDir(), "backlog.ndjson")
	cli(t, r.block, 0, "spool", "export", fileA)
	exported := readExport(t, fileA)
	if len(exported) != 50 {
		t.Fatalf("spool export: %d messages, want 50", len(exported))
	}
	if len(peeked) != 5 || fmt.Sprint(peeked) != fmt.Sprint(exported[:5]) {
		t.Errorf("spool peek 5: %v; the export begins %v", peeked, exported[:5])
	}
	if exported[0].id != st.OldestID {
		t.Errorf("spool stats: oldest %s, the export's first is %s", st.OldestID, exported[0].id)
	}
	r.block.Stop()
	fileB := filepath.Join(t.TempDir(), "backlog-stopped.ndjson")
	cli(t, r.block, 0, "spool", "export", fileB)
	if a, b := readExport(t, fileB), exported; fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("export with the service stopped differs from the one while it ran:\nstopped %v\nrunning %v", a, b)
	}

	// The replacement device: its own, empty BUFFER_DIR; the old block
	// stays stopped for good.
	env2 := maps.Clone(r.block.Env)
	for _, k := range []string{"BUFFER_DIR", "HTTP_LISTEN", "LOCAL_MQTT_HOST"} {
		delete(env2, k) // the new block's own
	}
	for k := range tg.limitEnv {
		delete(env2, k)
	}
	b2 := harness.NewBlock(t, r.block.Bin, r.broker, env2)
	out, _ = cli(t, b2, 0, "spool", "import", fileA)
	if !strings.Contains(out, "imported 50 of 50") {
		t.Errorf("spool import: %s", out)
	}
	r.up()
	b2.Start()
	r.block = b2 // waitRange waits for this one's spool to drain
	tl, got := r.waitRange(50, 100, size, 2*time.Minute, false)
	checkIDs(t, "import", got, exported)
	// Imported again (the same file, while running): the same ids again.
	before := tl.Copies
	out, _ = cli(t, b2, 0, "spool", "import", fileA)
	if !strings.Contains(out, "imported 50 of 50") {
		t.Errorf("spool import again: %s", out)
	}
	b2.WaitMetric("cloudblock_spool_messages", time.Minute, func(v float64) bool { return v == 0 })
	tl, got = r.waitRange(50, 100, size, time.Minute, false)
	checkIDs(t, "import again", got, exported)
	if tg.dupFree && tl.Copies != before {
		t.Errorf("imported twice: %d copies stored beyond the first (was %d): resends under the same ids must not store twice here", tl.Copies, before)
	}
	replayed := "delivered under its id"
	if refusedAgain {
		replayed = "refused again by the destination, back with its reason"
	}
	r.report("toolbox", tl, 0, fmt.Sprintf("dead letters listed, shown, purged; replay: %s; 50 exported, imported twice: %d copies stored", replayed, tl.Copies-before))
}

// refuseAgain replays the entry of the refused payload while the
// destination still refuses it: it comes back under its id, dead since the
// replay. It returns the entries then, the big ones first.
func refuseAgain(t *testing.T, r *rig, dead []deadEntry, refused []byte) []deadEntry {
	var first deadEntry
	for _, d := range dead {
		if bytes.Equal(d.payload(t, r.block), refused) {
			first = d
		}
	}
	if first.ID == "" {
		t.Fatalf("no dead letter of the refused payload in %+v", dead)
	}
	out, _ := cli(t, r.block, 0, "deadletter", "replay", first.ID)
	if !strings.Contains(out, "replayed 1") {
		t.Errorf("deadletter replay: %s", out)
	}
	var now []deadEntry
	err := procs.WaitFor(context.Background(), time.Minute, func() error {
		now = listDead(t, r.block)
		for _, d := range now {
			if d.ID == first.ID && d.DeadAt.After(first.DeadAt) && len(now) == len(dead) {
				return nil
			}
		}
		return fmt.Errorf("want %s dead-lettered again after %s, have %+v", first.ID, first.DeadAt, now)
	})
	if err != nil {
		t.Fatal(err)
	}
	return now
}

type deadEntry struct {
	ID     string    `json:"id"`
	DeadAt time.Time `json:"dead_at"`
	Reason string    `json:"reason"`
	Size   int       `json:"size"`
}

func (d deadEntry) payload(t *testing.T, b *harness.Block) []byte {
	out, _ := cli(t, b, 0, "deadletter", "show", d.ID, "--raw")
	return []byte(out)
}

func listDead(t *testing.T, b *harness.Block) []deadEntry {
	out, _ := cli(t, b, 0, "deadletter", "list", "--json")
	var es []deadEntry
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var e deadEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("deadletter list --json: %v: %q", err, sc.Text())
		}
		es = append(es, e)
	}
	return es
}

func waitDead(r *rig, b *harness.Block, n int) []deadEntry {
	var es []deadEntry
	err := procs.WaitFor(context.Background(), time.Minute, func() error {
		if es = listDead(r.t, b); len(es) == n {
			return nil
		}
		return fmt.Errorf("%d dead letters, want %d", len(es), n)
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return es
}

// cli runs the block's binary with args and its environment, and wants
// the exit code code.
func cli(t *testing.T, b *harness.Block, code int, args ...string) (stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(b.Bin, args...)
	cmd.Env = os.Environ()
	for k, v := range b.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	got := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		got = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	if got != code {
		t.Errorf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, o.String(), e.String())
	}
	return o.String(), e.String()
}

type exportedMsg struct {
	id  string
	num int // the publisher's number of its payload
}

// readExport reads an export's messages (ids and numbers).
func readExport(t *testing.T, path string) []exportedMsg {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return exportIDs(t, string(data))
}

func exportIDs(t *testing.T, text string) []exportedMsg {
	var out []exportedMsg
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		var l struct {
			ID      string `json:"id"`
			Payload []byte `json:"payload_base64"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		if l.ID != "" {
			out = append(out, exportedMsg{l.ID, harness.Index(l.Payload)})
		}
	}
	return out
}

// checkIDs wants every exported message delivered under its exported id.
func checkIDs(t *testing.T, what string, got []msg, exported []exportedMsg) {
	t.Helper()
	byNum := map[int]map[string]bool{}
	for _, m := range got {
		if i := harness.Index(m.Payload); i >= 0 {
			if byNum[i] == nil {
				byNum[i] = map[string]bool{}
			}
			byNum[i][m.ID] = true
		}
	}
	bad := 0
	for _, e := range exported {
		if !byNum[e.num][e.id] {
			if bad < 5 {
				t.Errorf("%s: message %d not delivered under its exported id %s (ids seen: %v)", what, e.num, e.id, byNum[e.num])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d messages not under their exported ids", what, bad, len(exported))
	}
}

// storeBytes is the size of the block's dead-letter files.
func storeBytes(b *harness.Block) int64 {
	var n int64
	files, _ := filepath.Glob(filepath.Join(b.BufDir, "deadletter", "dead-*.ndjson"))
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// replayCrash kills the service (SIGKILL) in the middle of a replay of
// 6,000 dead letters, then replays again: every one is delivered under its
// id, none is lost, and what is sent twice is at most the chunk that was
// in the spool and the store at once (1,000) and the batches the sink had
// in flight, which the file destination may store again after a crash as
// in the crash scenario. The spool's and the store's own code: the file
// destination only.
func replayCrash(t *testing.T, tg *target, _ Scale) {
	const n, chunk = 6000, 1000
	env := map[string]string{"BATCH_CONCURRENCY": strconv.Itoa(crashConcurrency), "BATCH_MAX_MESSAGES": strconv.Itoa(tg.batch)}
	for k, v := range tg.limitEnv {
		env[k] = v
	}
	inFlight := (crashConcurrency + 1) * tg.batch
	r := newRig(t, tg, rigOpts{env: env})
	r.start()
	pub := harness.NewPublisher(t, r.broker, "cloud-input", 0)
	want := map[string]bool{}
	for i := range n {
		p := fmt.Sprintf("%s %06d", tg.refused, i)
		want[p] = true
		pub.PublishRaw("cloud-input", []byte(p), false)
	}
	waitDead(r, r.block, n)
	ids := map[string]string{} // payload -> id
	for _, d := range r.block.DeadLetters(t) {
		ids[string(d.Payload)] = d.ID
	}

	// The destination takes them now; replay, and kill the service as soon
	// as the first chunk has left the store.
	r.block.Stop()
	for k := range tg.limitEnv {
		delete(r.block.Env, k)
	}
	r.block.Start()
	cmd := exec.Command(r.block.Bin, "deadletter", "replay", "--all")
	for k, v := range r.block.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The store's size drops when the first chunk leaves it (polled
	// cheaply: reading the entries would take longer than a chunk).
	full := storeBytes(r.block)
	var err error
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		if storeBytes(r.block) < full {
			break
		}
		if time.Now().After(deadline) {
			err = errors.New("no chunk left the store within a minute")
			break
		}
	}
	r.block.Kill()
	cmd.Wait()
	if err != nil {
		t.Fatalf("%v; the command said: %s", err, out.String())
	}
	left := len(r.block.DeadLetters(t))
	if left == 0 {
		t.Logf("the replay finished before the kill landed: the crash was not mid-replay")
	}
	r.block.Start()
	if left > 0 {
		out, _ := cli(t, r.block, 0, "deadletter", "replay", "--all")
		if !strings.Contains(out, fmt.Sprintf("replayed %d", left)) {
			t.Errorf("second replay: %s (%d were left)", out, left)
		}
	}
	var copies int
	err = procs.WaitFor(context.Background(), 2*time.Minute, func() error {
		seen := map[string]int{}
		for _, m := range r.be.read(t) {
			if want[string(m.Payload)] {
				seen[string(m.Payload)]++
				if m.ID != ids[string(m.Payload)] {
					return fmt.Errorf("%q delivered under %s, its dead-letter id is %s", m.Payload, m.ID, ids[string(m.Payload)])
				}
			}
		}
		copies = 0
		for _, c := range seen {
			copies += c - 1
		}
		if len(seen) < n {
			return fmt.Errorf("%d of %d replayed messages delivered", len(seen), n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if copies > chunk+inFlight {
		t.Errorf("%d messages delivered twice after a crash mid-replay: more than the chunk in the spool and the store (%d) and the batches in flight (%d)", copies, chunk, inFlight)
	}
	if d := r.block.DeadLetters(t); len(d) != 0 {
		t.Errorf("%d dead letters left after the replay", len(d))
	}
	record(row{Scenario: "replay-crash", Target: tg.name, Published: n, Delivered: n, Duplicates: copies,
		Note: fmt.Sprintf("SIGKILL mid-replay with %d of %d left in the store; replayed again", left, n)})
}

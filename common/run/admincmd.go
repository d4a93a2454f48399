package run

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/deadletter"
	"github.com/cloud-block/cloud-block/common/spool"
)

// The deadletter and spool commands: see help.go for their usage and
// admin.go for how they reach the spool.

// operate runs `deadletter ...` or `spool ...`.
func operate(ctx context.Context, svc Service, group string, args []string, lookup config.Lookup, stdout, stderr io.Writer) int {
	usage := func(why string) int {
		fmt.Fprintf(stderr, "%s: %s\nusage:\n%s", group, why, commandUsage(group))
		return ExitConfig
	}
	if len(args) == 0 {
		return usage("which command?")
	}
	sub, rest := args[0], args[1:]
	flags, pos := splitFlags(rest)
	allowed := map[string][]string{
		"deadletter list": {"--json"}, "deadletter show": {"--raw"}, "deadletter replay": {"--all"}, "deadletter purge": {"--all"},
		"spool stats": {"--json"}, "spool peek": {"--json"}, "spool export": nil, "spool import": nil,
	}
	okFlags, known := allowed[group+" "+sub]
	if !known {
		return usage(fmt.Sprintf("unknown command %q", sub))
	}
	for f := range flags {
		if !contains(okFlags, f) {
			return usage(fmt.Sprintf("%s %s does not take %s", group, sub, f))
		}
	}
	s, err := loadForCommand(svc, lookup, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "cloud-block-%s: configuration error:\n", svc.Name)
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "  - %s\n", line)
		}
		return ExitConfig
	}
	deadDir := s.deadDir()

	// Reading the dead-letter store needs no owner: its files are only
	// appended to or replaced whole.
	switch group + " " + sub {
	case "deadletter list":
		return deadList(deadDir, flags["--json"], stdout, stderr)
	case "deadletter show":
		if len(pos) != 1 {
			return usage("show takes one id")
		}
		return deadShow(deadDir, pos[0], flags["--raw"], stdout, stderr)
	case "deadletter replay", "deadletter purge":
		if flags["--all"] == (len(pos) > 0) {
			return usage(sub + " takes ids or --all")
		}
	case "spool peek":
		if len(pos) > 1 {
			return usage("peek takes at most one number")
		}
		if len(pos) == 1 {
			if n, err := strconv.Atoi(pos[0]); err != nil || n < 1 {
				return usage(fmt.Sprintf("peek %q: want a number of messages, 1 or more", pos[0]))
			}
		}
	case "spool export", "spool import":
		if len(pos) != 1 {
			return usage(sub + " takes one file")
		}
	}

	c, err := connect(s, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "%s %s: %v\n", group, sub, err)
		return ExitFatal
	}
	defer c.close()
	var code int
	switch group + " " + sub {
	case "deadletter replay", "deadletter purge":
		code = c.selectionOp(ctx, sub, selection{IDs: pos, All: flags["--all"]}, stdout, stderr)
	case "spool stats":
		code = c.stats(ctx, flags["--json"], stdout, stderr)
	case "spool peek":
		n := 10
		if len(pos) == 1 {
			n, _ = strconv.Atoi(pos[0])
		}
		code = c.peek(ctx, n, flags["--json"], stdout, stderr)
	case "spool export":
		code = c.export(ctx, pos[0], stdout, stderr)
	case "spool import":
		code = c.importFile(ctx, pos[0], stdout, stderr)
	}
	return code
}

func commandUsage(group string) string {
	if group == "deadletter" {
		return "  deadletter list [--json]\n  deadletter show <id> [--raw]\n  deadletter replay <id>...|--all\n  deadletter purge <id>...|--all\n"
	}
	return "  spool stats [--json]\n  spool peek [n] [--json]\n  spool export <file>|-\n  spool import <file>\n"
}

func splitFlags(args []string) (map[string]bool, []string) {
	flags := map[string]bool{}
	var pos []string
	for _, a := range args {
		if strings.HasPrefix(a, "--") {
			flags[a] = true
		} else {
			pos = append(pos, a)
		}
	}
	return flags, pos
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// loadForCommand reads what the commands need: the buffer's variables
// and the device's name, from the environment. Warnings (a repair at
// start-up) go to stderr.
func loadForCommand(svc Service, lookup config.Lookup, stderr io.Writer) (*settings, error) {
	l := config.NewLoader(lookup, svc.AllVars())
	s := &settings{svc: svc, log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	s.device = l.String("BALENA_DEVICE_UUID")
	if s.device == "" {
		s.device, _ = os.Hostname()
	}
	s.loadBuffer(l)
	return s, l.Err()
}

func (s *settings) deadDir() string { return filepath.Join(s.spool.Dir, "deadletter") }

// client is a connection to an admin handler: the running service's, or
// one this command serves itself over an open spool.
type client struct {
	http  *http.Client
	close func()
}

// socketWait is how long a command waits for the admin socket of the
// process that holds the spool.
const socketWait = 10 * time.Second

// connect opens the spool if no process holds it, else reaches the
// service that does through its socket.
func connect(s *settings, stderr io.Writer) (*client, error) {
	opt := s.spool
	// Nothing delivers while the command holds the spool: write every
	// message at once rather than hold it waiting for a delivery.
	opt.SyncInterval = 0
	sp, err := spool.Open(opt)
	if errors.Is(err, spool.ErrInUse) {
		path := filepath.Join(s.spool.Dir, adminSocketName)
		fmt.Fprintf(stderr, "(the service is running: asking it through %s)\n", path)
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			// A service starting holds the spool a moment before its socket
			// listens; another command may hold it for a while.
			var d net.Dialer
			deadline := time.Now().Add(socketWait)
			for {
				c, err := d.DialContext(ctx, "unix", path)
				if err == nil {
					return c, nil
				}
				if time.Now().After(deadline) || ctx.Err() != nil {
					return nil, fmt.Errorf("the spool is in use by another process (the service, or another command) but %s does not answer: %w", path, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}}
		return &client{http: &http.Client{Transport: tr}, close: tr.CloseIdleConnections}, nil
	}
	if err != nil {
		return nil, err
	}
	dead, err := deadletter.Open(s.deadDir(), s.deadMax, s.log)
	if err != nil {
		sp.Close()
		return nil, err
	}
	fmt.Fprintf(stderr, "(the service is not running: opened %s)\n", s.spool.Dir)
	a := &admin{sp: sp, dead: dead, deadDir: s.deadDir(), opt: opt, service: s.svc.Name, device: s.device,
		log: s.log, fullWait: 2 * time.Second}
	ln := newPipeListener()
	srv := &http.Server{Handler: a.handler()}
	go srv.Serve(ln)
	tr := &http.Transport{DialContext: ln.dial}
	return &client{http: &http.Client{Transport: tr}, close: func() {
		tr.CloseIdleConnections()
		srv.Close()
		dead.Close()
		if err := sp.Close(); err != nil {
			fmt.Fprintf(stderr, "closing the spool: %v\n", err)
		}
	}}, nil
}

// pipeListener hands the server in-memory connections (net.Pipe).
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	c, srv := net.Pipe()
	select {
	case l.conns <- srv:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "in-memory" }

func (c *client) do(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://admin"+path, body)
	if err != nil {
		return nil, err
	}
	return c.http.Do(req)
}

// result decodes an opResult answer.
func result(resp *http.Response) (opResult, error) {
	defer resp.Body.Close()
	var res opResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return res, fmt.Errorf("reading the answer (HTTP %d): %w", resp.StatusCode, err)
	}
	if res.Error != "" {
		return res, errors.New(res.Error)
	}
	return res, nil
}

func (c *client) selectionOp(ctx context.Context, op string, sel selection, stdout, stderr io.Writer) int {
	body, _ := json.Marshal(sel)
	resp, err := c.do(ctx, http.MethodPost, "/deadletter/"+op, bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(stderr, "deadletter %s: %v\n", op, err)
		return ExitFatal
	}
	res, err := result(resp)
	verb := map[string]string{"replay": "replayed", "purge": "purged"}[op]
	fmt.Fprintf(stdout, "%s %d dead letters\n", verb, res.Done)
	for _, sk := range res.Skipped {
		fmt.Fprintf(stdout, "not replayed %s: %s\n", sk.ID, sk.Why)
	}
	for _, id := range res.Missing {
		fmt.Fprintf(stdout, "not found: %s\n", id)
	}
	if err != nil {
		fmt.Fprintf(stderr, "deadletter %s: %v\n", op, err)
		return ExitFatal
	}
	if len(res.Skipped) > 0 || len(res.Missing) > 0 {
		return ExitFatal
	}
	return ExitOK
}

// deadList prints the store's entries without their payloads.
func deadList(dir string, asJSON bool, stdout, stderr io.Writer) int {
	es, err := deadletter.ReadAll(dir)
	if err != nil && len(es) == 0 {
		fmt.Fprintf(stderr, "deadletter list: %v\n", err)
		return ExitFatal
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		for _, e := range es {
			enc.Encode(e.Info())
		}
	} else {
		fmt.Fprintf(stdout, "%d dead letters in %s\n", len(es), dir)
		if len(es) > 0 {
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tDEAD AT\tTOPIC\tBYTES\tREASON")
			for _, e := range es {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", e.ID, e.DeadAt.UTC().Format(time.RFC3339), printableText(e.Topic, 40), e.Info().Size, printableText(e.Reason, 200))
			}
			tw.Flush()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "deadletter list: %v\n", err)
		return ExitFatal
	}
	return ExitOK
}

func deadShow(dir, id string, raw bool, stdout, stderr io.Writer) int {
	es, err := deadletter.ReadAll(dir)
	found := 0
	for _, e := range es {
		if e.ID != id {
			continue
		}
		found++
		p, perr := base64.StdEncoding.DecodeString(e.PayloadBase64)
		if raw {
			stdout.Write(p)
			continue
		}
		if found > 1 {
			fmt.Fprintln(stdout)
		}
		fmt.Fprintf(stdout, "id:        %s\ntopic:     %s\nreceived:  %s\ndead at:   %s\nreason:    %s\n",
			e.ID, printableText(e.Topic, 0), e.Received.UTC().Format(time.RFC3339Nano), e.DeadAt.UTC().Format(time.RFC3339Nano), printableText(e.Reason, 0))
		if perr != nil {
			fmt.Fprintf(stdout, "payload:   not valid base64 in the store: %v\n", perr)
			continue
		}
		fmt.Fprintf(stdout, "payload:   %d bytes\n%s", len(p), describePayload(p, 64<<10))
	}
	if found == 0 {
		if err != nil {
			fmt.Fprintf(stderr, "deadletter show: %v\n", err)
		}
		fmt.Fprintf(stderr, "deadletter show: no dead letter %q in %s\n", id, dir)
		return ExitFatal
	}
	return ExitOK
}

// describePayload shows p as text when it is printable UTF-8, else as a
// hex dump; at most limit bytes of it.
func describePayload(p []byte, limit int) string {
	cut := ""
	if len(p) > limit {
		p, cut = p[:limit], fmt.Sprintf("... (%d bytes shown)\n", limit)
	}
	if isText(p) {
		s := string(p)
		if !strings.HasSuffix(s, "\n") && len(s) > 0 {
			s += "\n"
		}
		return s + cut
	}
	return hex.Dump(p) + cut
}

func isText(p []byte) bool {
	if !utf8.Valid(p) {
		return false
	}
	for _, r := range string(p) {
		if !unicode.IsPrint(r) && r != '\n' && r != '\r' && r != '\t' {
			return false
		}
	}
	return true
}

// printableText quotes s if it holds anything a terminal would act on,
// and cuts it at limit bytes (0: no limit).
func printableText(s string, limit int) string {
	if limit > 0 && len(s) > limit {
		s = s[:limit] + "..."
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func (c *client) stats(ctx context.Context, asJSON bool, stdout, stderr io.Writer) int {
	resp, err := c.do(ctx, http.MethodGet, "/spool/stats", nil)
	if err != nil {
		fmt.Fprintf(stderr, "spool stats: %v\n", err)
		return ExitFatal
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var st spoolStats
	if err := json.Unmarshal(body, &st); err != nil || resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "spool stats: HTTP %d: %s\n", resp.StatusCode, strings.TrimSpace(string(body)))
		return ExitFatal
	}
	if asJSON {
		stdout.Write(body)
		return ExitOK
	}
	state := "stopped"
	if st.Running {
		state = "running"
	}
	fmt.Fprintf(stdout, "buffer:       %s (service %s)\n", st.Dir, state)
	fmt.Fprintf(stdout, "backlog:      %d messages undelivered (%d held in memory, not yet written)\n", st.Undelivered, st.Held)
	if st.Oldest != nil {
		fmt.Fprintf(stdout, "oldest:       %s, received %s (%s ago)\n", st.OldestID, st.Oldest.UTC().Format(time.RFC3339),
			(time.Duration(st.OldestAgeSeconds) * time.Second).String())
	}
	full := ""
	if st.Full {
		full = " FULL: new messages are not acknowledged"
	}
	fmt.Fprintf(stdout, "disk:         %s of %s in %d segments%s\n", sizeText(st.Bytes), sizeText(st.MaxBytes), len(st.Segments), full)
	damaged := 0
	if len(st.Segments) > 0 {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  SEGMENT\tBYTES\tSEQS\tRECORDS\tUNDELIVERED\tHEALTH")
		for _, g := range st.Segments {
			health := "ok"
			if g.Damaged != "" {
				health, damaged = "DAMAGED: "+g.Damaged, damaged+1
			}
			fmt.Fprintf(tw, "  %s\t%d\t%d-%d\t%d\t%d\t%s\n", g.Name, g.Bytes, g.First, g.Last, g.Records, g.Undelivered, health)
		}
		tw.Flush()
	}
	fmt.Fprintf(stdout, "repaired:     %d bytes, %d messages lost to damage found at start-up\n", st.DamagedBytes, st.DamagedMessages)
	if len(st.SetAside) > 0 {
		fmt.Fprintf(stdout, "set aside:    %d files in %s: %s\n", len(st.SetAside), filepath.Join(st.Dir, "corrupt"), strings.Join(st.SetAside, ", "))
	}
	if st.WriteError != "" {
		fmt.Fprintf(stdout, "writes fail:  %s\n", st.WriteError)
	}
	fmt.Fprintf(stdout, "dead letters: %d (%s)\n", st.DeadLetters, sizeText(st.DeadLetterBytes))
	if damaged > 0 {
		return ExitFatal
	}
	return ExitOK
}

func (c *client) peek(ctx context.Context, n int, asJSON bool, stdout, stderr io.Writer) int {
	resp, err := c.do(ctx, http.MethodGet, "/spool/peek?n="+strconv.Itoa(n), nil)
	if err != nil {
		fmt.Fprintf(stderr, "spool peek: %v\n", err)
		return ExitFatal
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(stderr, "spool peek: HTTP %d: %s\n", resp.StatusCode, strings.TrimSpace(string(b)))
		return ExitFatal
	}
	dec := json.NewDecoder(resp.Body)
	shown := 0
	for {
		var l exportLine
		if err := dec.Decode(&l); err == io.EOF {
			break
		} else if err != nil {
			fmt.Fprintf(stderr, "spool peek: %v\n", err)
			return ExitFatal
		}
		if l.Error != "" {
			fmt.Fprintf(stderr, "spool peek: %s\n", l.Error)
			return ExitFatal
		}
		shown++
		if asJSON {
			json.NewEncoder(stdout).Encode(l)
			continue
		}
		p, _ := base64.StdEncoding.DecodeString(*l.PayloadBase64)
		fmt.Fprintf(stdout, "%s  received %s  topic %s  %d bytes\n%s", l.ID, l.Received.UTC().Format(time.RFC3339Nano),
			printableText(*l.Topic, 0), len(p), indent(describePayload(p, 256)))
	}
	if !asJSON {
		fmt.Fprintf(stdout, "(%d undelivered messages shown, oldest first)\n", shown)
	}
	return ExitOK
}

// sizeText is n in the units BUFFER_MAX_BYTES takes, "B" below a KiB.
func sizeText(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	return config.FormatBytes(n)
}

func indent(s string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString("    " + l)
		}
	}
	return b.String()
}

// export writes the backlog to file ("-": stdout) through a temporary
// file checked whole before it takes the name.
func (c *client) export(ctx context.Context, file string, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "spool export: %v\n", err)
		return ExitFatal
	}
	resp, err := c.do(ctx, http.MethodGet, "/spool/export", nil)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fail(fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b))))
	}
	if file == "-" {
		_, n, err := copyChecked(stdout, resp.Body)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stderr, "exported %d messages\n", n)
		return ExitOK
	}
	tmp := file + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fail(err)
	}
	_, n, err := copyChecked(f, resp.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err != nil {
		os.Remove(tmp)
		return fail(err)
	}
	fi, _ := os.Stat(file)
	fmt.Fprintf(stdout, "exported %d undelivered messages to %s (%s); they stay in this spool too\n", n, file, sizeText(fi.Size()))
	return ExitOK
}

// copyChecked copies an export and checks it as it goes: a stream cut
// short (the service stopped mid-way) is an error, not a short file.
func copyChecked(w io.Writer, r io.Reader) (header exportLine, n int, err error) {
	er, err := newExportReader(io.TeeReader(r, w))
	if err != nil {
		return header, 0, err
	}
	for {
		if _, err := er.next(); err == io.EOF {
			return er.Header, er.n, nil
		} else if err != nil {
			return er.Header, er.n, err
		}
	}
}

// importFile checks the whole file, then sends it.
func (c *client) importFile(ctx context.Context, file string, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "spool import: %v\n", err)
		return ExitFatal
	}
	f, err := os.Open(file)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	h, n, err := copyChecked(io.Discard, f)
	if err != nil {
		return fail(fmt.Errorf("%s: %w (nothing imported)", file, err))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	resp, err := c.do(ctx, http.MethodPost, "/spool/import", f)
	if err != nil {
		return fail(err)
	}
	res, err := result(resp)
	from := fmt.Sprintf(" (exported by %s on device %s", printableText(h.Service, 64), printableText(h.Device, 128))
	if h.ExportedAt != nil {
		from += " at " + h.ExportedAt.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(stdout, "imported %d of %d messages%s)\n", res.Done, n, from)
	if err != nil {
		return fail(err)
	}
	return ExitOK
}

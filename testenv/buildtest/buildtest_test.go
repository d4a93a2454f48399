// Package buildtest checks what ships: each service's release binary is
// static, within its size budget, and runs in an empty root holding only the
// CA bundle (what the scratch image holds), as the image's non-root user; and
// the six Dockerfiles stay generated from one template.
//
// By default it builds for linux/amd64 (make test-build, part of make test).
// BUILDTEST_ARCHS="amd64 arm64 arm" cross-builds the device architectures too
// (only amd64 binaries are run), and BUILDTEST_BIN_DIR=bin checks the binaries
// `make build` wrote instead of building (make build does both).
package buildtest

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

// budgets are the largest binaries accepted, per service, on every arch:
// about 1.5 MiB above their size on amd64 (the largest) on 2026-12-05,
// which was aws-sqs 15.9 MiB, aws-s3 20.4, azure-eh 12.9, azure-blob 18.5,
// gcp-pubsub 19.9 and gcp-storage 35.6. Every binary carries Azure Key
// Vault's client (azidentity, MSAL) besides its own SDK; S3's and Blob's
// generated clients are the big ones. A budget is there to catch growth
// nobody meant: raise one only with the reason in the commit.
var budgets = map[string]int64{
	"aws-sqs":     18 << 20,
	"aws-s3":      22 << 20,
	"azure-eh":    15 << 20,
	"azure-blob":  20 << 20,
	"gcp-pubsub":  22 << 20,
	"gcp-storage": 37 << 20,
}

// version is stamped into the test builds and read back by `version`.
const version = "buildtest"

// ldflags are the Makefile's release flags (LDFLAGS) with the test's version.
const ldflags = "-s -w -X github.com/cloud-block/cloud-block/common/run.Version=" + version

var root = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}()

// makeVar reads a `NAME := value` or `NAME ?= value` line of the Makefile,
// so the tests follow the Makefile rather than a copy of it.
func makeVar(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + `\s*[:?]?=\s*(.*)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("Makefile has no %s", name)
	}
	return strings.TrimSpace(string(m[1]))
}

func services(t testing.TB) []string { return strings.Fields(makeVar(t, "SERVICES")) }

// present reports whether the service's code has landed (a main package).
func archs() []string {
	if s := os.Getenv("BUILDTEST_ARCHS"); s != "" {
		return strings.Fields(s)
	}
	return []string{"amd64"}
}

// binDirName is the folder make build uses for an arch.
func binDirName(arch string) string {
	if arch == "arm" {
		return "linux-armv7"
	}
	return "linux-" + arch
}

var builds struct {
	mu   sync.Mutex
	dirs map[string]string // arch -> folder of binaries
	errs map[string]error
}

// binaries returns the folder holding cloud-block-<svc> for every service
// and arch: BUILDTEST_BIN_DIR's, or one built once per test run with the
// release flags (one go build for all, so it uses every core) into the
// test binaries' cache, where go build relinks only what changed.
func binaries(t *testing.T, arch string) string {
	t.Helper()
	if dir := os.Getenv("BUILDTEST_BIN_DIR"); dir != "" {
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(root, dir)
		}
		return filepath.Join(dir, binDirName(arch))
	}
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dirs == nil {
		builds.dirs, builds.errs = map[string]string{}, map[string]error{}
	}
	if dir, ok := builds.dirs[arch]; ok {
		if err := builds.errs[arch]; err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dir := filepath.Join(harness.BinCache(), "buildtest-"+arch)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	builds.dirs[arch] = dir
	var pkgs []string
	for _, svc := range services(t) {
		pkgs = append(pkgs, "./services/"+svc)
	}
	cmd := exec.Command("go", append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", dir + "/"}, pkgs...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOARM=7")
	if out, err := cmd.CombinedOutput(); err != nil {
		builds.errs[arch] = fmt.Errorf("go build for %s: %v\n%s", arch, err, out)
		t.Fatal(builds.errs[arch])
	}
	// Named as in the images; go build's own name stays, so that the next
	// build finds it up to date.
	for _, p := range pkgs {
		svc := filepath.Base(p)
		named := filepath.Join(dir, "cloud-block-"+svc)
		if err := os.Remove(named); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if err := os.Link(filepath.Join(dir, svc), named); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var machines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM}

// TestBinaries checks each service's release binary for each arch.
func TestBinaries(t *testing.T) {
	for _, arch := range archs() {
		if _, ok := machines[arch]; !ok {
			t.Fatalf("BUILDTEST_ARCHS: unknown arch %q (want amd64, arm64, arm)", arch)
		}
		for _, svc := range services(t) {
			t.Run(arch+"/"+svc, func(t *testing.T) {
				bin := filepath.Join(binaries(t, arch), "cloud-block-"+svc)
				checkELF(t, bin, arch)
				checkSize(t, bin, svc)
				if arch == runtime.GOARCH {
					checkInEmptyRoot(t, bin, svc)
				}
			})
		}
	}
}

// checkELF: the right machine, statically linked (no interpreter, no shared
// libraries: scratch has neither), and stripped (-s).
func checkELF(t *testing.T, bin, arch string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machines[arch] {
		t.Errorf("machine %v, want %v", f.Machine, machines[arch])
	}
	if want := map[string]elf.Class{"arm": elf.ELFCLASS32}[arch]; want != 0 && f.Class != want {
		t.Errorf("class %v, want %v", f.Class, want)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("has a PT_INTERP program header: dynamically linked (CGO_ENABLED=0 missing?)")
		}
		if p.Type == elf.PT_DYNAMIC {
			t.Errorf("has a PT_DYNAMIC program header: dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		t.Errorf("needs shared libraries %v", libs)
	}
	if f.Section(".symtab") != nil {
		t.Errorf("has a symbol table: not stripped (-s missing)")
	}
}

func checkSize(t *testing.T, bin, svc string) {
	t.Helper()
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	budget := budgets[svc]
	t.Logf("%s: %.1f MiB (budget %d MiB)", filepath.Base(bin), float64(st.Size())/(1<<20), budget>>20)
	if st.Size() > budget {
		t.Errorf("%s is %d bytes (%.1f MiB), over its budget of %d MiB", bin, st.Size(), float64(st.Size())/(1<<20), budget>>20)
	}
}

// emptyRoot makes a root holding only what the image holds: the binary, the
// CA bundle and /data owned by the image's user.
func emptyRoot(t *testing.T, bin string) string {
	t.Helper()
	dir := t.TempDir()
	// TempDir is 0700: the image's user must be able to enter its root.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, bin, filepath.Join(dir, filepath.Base(bin)), 0o755)
	copyFile(t, "/etc/ssl/certs/ca-certificates.crt", filepath.Join(dir, "etc/ssl/certs/ca-certificates.crt"), 0o644)
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, imageUID, imageUID); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// imageUID is the numeric user of the images (USER 65532:65532).
const imageUID = 65532

// inRoot runs the binary in the chroot as the image's user, with only env
// in its environment; it returns stdout, stderr and the exit code.
func inRoot(t *testing.T, dir, name string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command("chroot", append([]string{fmt.Sprintf("--userspec=%d:%d", imageUID, imageUID), dir, "/" + name}, args...)...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("chroot: %v", err)
		}
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

func canChroot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the empty-root checks need root (chroot)")
	}
	if _, err := exec.LookPath("chroot"); err != nil {
		t.Skip("the empty-root checks need chroot (coreutils)")
	}
}

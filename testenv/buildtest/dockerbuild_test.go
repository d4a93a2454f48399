package buildtest

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDockerfileBuildStage runs each Dockerfile's build stage without Docker
// (no engine exists on the build machines): the COPY lines copy from the
// repository into a temporary /src, the RUN lines run there with the image's
// absolute paths mapped into the temporary folder and the buildx platform
// arguments of linux/arm/v7, and the final stage's COPY sources must then
// exist. It proves the COPY set is complete (the module builds with
// GOWORK=off from only what the image gets) and the cross-compile command
// works; what it cannot prove is the golang image itself.
//
// Slow (a GOWORK=off build resolves the service's own versions), so it runs
// with BUILDTEST_DOCKERFILE=1, which make build sets.
func TestDockerfileBuildStage(t *testing.T) {
	if os.Getenv("BUILDTEST_DOCKERFILE") == "" {
		t.Skip("BUILDTEST_DOCKERFILE=1 runs the Dockerfiles' build stages (make build does)")
	}
	for _, svc := range services(t) {
		t.Run(svc, func(t *testing.T) {
			tmp := t.TempDir()
			out := runBuildStage(t, filepath.Join(root, "services", svc, "Dockerfile"), root, tmp, map[string]string{
				"BUILDPLATFORM": "linux/amd64", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7", "VERSION": version,
			})
			bin := filepath.Join(tmp, "out", "cloud-block-"+svc)
			checkELF(t, bin, "arm")
			checkSize(t, bin, svc)
			checkReproducible(t, bin, svc)
			for _, src := range out {
				if _, err := os.Stat(mapPath(tmp, src)); err != nil {
					t.Errorf("the final stage copies %s from the build stage, which does not have it: %v", src, err)
				}
			}
		})
	}
}

// TestSensorDockerfileBuildStage does the same for the example sensor, built
// from its own folder as a module of its own.
func TestSensorDockerfileBuildStage(t *testing.T) {
	if os.Getenv("BUILDTEST_DOCKERFILE") == "" {
		t.Skip("BUILDTEST_DOCKERFILE=1 runs the Dockerfiles' build stages (make build does)")
	}
	tmp := t.TempDir()
	dir := filepath.Join(root, "examples", "sensor")
	out := runBuildStage(t, filepath.Join(dir, "Dockerfile"), dir, tmp, map[string]string{
		"BUILDPLATFORM": "linux/amd64", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7",
	})
	checkELF(t, filepath.Join(tmp, "out", "sensor"), "arm")
	for _, src := range out {
		if _, err := os.Stat(mapPath(tmp, src)); err != nil {
			t.Errorf("the final stage copies %s from the build stage, which does not have it: %v", src, err)
		}
	}
}

// checkReproducible builds the service again, in the repository rather than
// the copy, with the Dockerfile's flags: the bytes must be the same, so an
// image's binary does not depend on where or by whom it was built.
func checkReproducible(t *testing.T, bin, svc string) {
	t.Helper()
	again := filepath.Join(t.TempDir(), "again")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -buildid= -X github.com/cloud-block/cloud-block/common/run.Version="+version,
		"-o", again, ".")
	cmd.Dir = filepath.Join(root, "services", svc)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm", "GOARM=7")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	a, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(again)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("the Dockerfile's build and a build in the repository differ (%d and %d bytes): not reproducible", len(a), len(b))
	}
}

// instructions reads a Dockerfile into instructions, continuation lines
// joined and comments dropped.
func instructions(t *testing.T, path string) [][2]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][2]string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		cont := strings.HasSuffix(line, "\\")
		cur.WriteString(strings.TrimSuffix(line, "\\"))
		cur.WriteString(" ")
		if cont {
			continue
		}
		op, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, [2]string{strings.ToUpper(op), strings.TrimSpace(args)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// mapPath maps an absolute path of the build stage into tmp; the CA bundle
// is the host's, as the golang image has its own.
func mapPath(tmp, p string) string {
	if p == "/etc/ssl/certs/ca-certificates.crt" {
		return p
	}
	return filepath.Join(tmp, p)
}

// runBuildStage executes the first stage and returns the paths the later
// stages copy from it.
func runBuildStage(t *testing.T, dockerfile, context, tmp string, args map[string]string) []string {
	t.Helper()
	stage := -1
	workdir := "/"
	env := os.Environ()
	var fromBuild []string
	for _, in := range instructions(t, dockerfile) {
		op, rest := in[0], in[1]
		if op == "FROM" {
			stage++
			continue
		}
		if stage > 0 {
			if op == "COPY" && strings.HasPrefix(rest, "--from=build ") {
				f := strings.Fields(rest)
				fromBuild = append(fromBuild, f[len(f)-2])
			}
			continue
		}
		switch op {
		case "ARG":
			name, def, _ := strings.Cut(rest, "=")
			v, ok := args[name]
			if !ok {
				v = def
			}
			env = append(env, name+"="+v)
		case "WORKDIR":
			workdir = rest
			if err := os.MkdirAll(mapPath(tmp, workdir), 0o755); err != nil {
				t.Fatal(err)
			}
		case "COPY":
			f := strings.Fields(rest)
			dst := f[len(f)-1]
			if !filepath.IsAbs(dst) {
				dst = filepath.Join(workdir, dst)
			}
			for _, pattern := range f[:len(f)-1] {
				srcs, err := filepath.Glob(filepath.Join(context, pattern))
				if err != nil || len(srcs) == 0 {
					t.Fatalf("COPY %s: nothing matches in %s", pattern, context)
				}
				for _, src := range srcs {
					copyTree(t, src, mapPath(tmp, dst), strings.HasSuffix(f[len(f)-1], "/"))
				}
			}
		case "RUN":
			// Cache mounts change nothing but speed; here the host's caches serve.
			for strings.HasPrefix(rest, "--mount=") {
				_, rest, _ = strings.Cut(rest, " ")
				rest = strings.TrimSpace(rest)
			}
			// The image's absolute paths live under tmp here.
			script := strings.ReplaceAll(rest, " /out/", " "+tmp+"/out/")
			cmd := exec.Command("sh", "-ec", script)
			cmd.Dir = mapPath(tmp, workdir)
			cmd.Env = env
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("RUN %s: %v\n%s", rest, err, b)
			}
		default:
			t.Fatalf("the build stage has %s, which this test does not know how to run", op)
		}
	}
	return fromBuild
}

// copyTree copies a file or a folder as COPY does: a file into a folder
// destination (ending in /) keeps its name; a folder's contents go into dst.
func copyTree(t *testing.T, src, dst string, dstIsDir bool) {
	t.Helper()
	st, err := os.Stat(src)
	if err != nil {
		t.Fatalf("COPY source: %v", err)
	}
	if !st.IsDir() {
		if dstIsDir {
			dst = filepath.Join(dst, filepath.Base(src))
		}
		copyFile(t, src, dst, st.Mode().Perm())
		return
	}
	err = filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if fi.Mode().IsRegular() {
			copyFile(t, p, filepath.Join(dst, rel), fi.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

package buildtest

import (
	"bufio"
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
			if !present(svc) {
				t.Skipf("services/%s/main.go is missing: the service has not landed yet", svc)
			}
			tmp := t.TempDir()
			out := runBuildStage(t, filepath.Join(root, "services", svc, "Dockerfile"), tmp, map[string]string{
				"BUILDPLATFORM": "linux/amd64", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7", "VERSION": version,
			})
			bin := filepath.Join(tmp, "out", "cloud-block-"+svc)
			checkELF(t, bin, "arm")
			checkSize(t, bin, svc)
			for _, src := range out {
				if _, err := os.Stat(mapPath(tmp, src)); err != nil {
					t.Errorf("the final stage copies %s from the build stage, which does not have it: %v", src, err)
				}
			}
		})
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
func runBuildStage(t *testing.T, dockerfile, tmp string, args map[string]string) []string {
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
			for _, src := range f[:len(f)-1] {
				copyTree(t, filepath.Join(root, src), mapPath(tmp, dst), strings.HasSuffix(f[len(f)-1], "/"))
			}
		case "RUN":
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

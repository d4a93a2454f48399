package buildtest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
)

// goImage is the golang image tag every Dockerfile builds with: the Go of the
// build machines, so images and `make build` compile with the same toolchain.
const goImage = "1.26.8"

// TestDockerfiles keeps services/<svc>/Dockerfile equal to the template
// rendered for the service; UPDATE_DOCKERFILES=1 (make dockerfiles) writes them.
func TestDockerfiles(t *testing.T) {
	tmpl := template.Must(template.ParseFiles(filepath.Join(root, "testenv", "buildtest", "Dockerfile.tmpl")))
	for _, svc := range services(t) {
		var want bytes.Buffer
		if err := tmpl.Execute(&want, map[string]any{"Service": svc, "GoVersion": goImage, "Modules": workModules(t)}); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(root, "services", svc, "Dockerfile")
		if os.Getenv("UPDATE_DOCKERFILES") != "" {
			if err := os.WriteFile(path, want.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%v (make dockerfiles writes it)", err)
			continue
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%s differs from testenv/buildtest/Dockerfile.tmpl: run make dockerfiles", path)
		}
		checkDockerfile(t, svc, string(got))
	}
}

// workModules lists the folders of go.work's use directive, which the images
// build in, except common (copied whole).
func workModules(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	var mods []string
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "use (":
			in = true
		case in && line == ")":
			in = false
		case in && line != "" && !strings.HasPrefix(line, "//"):
			if m := strings.TrimPrefix(line, "./"); m != "common" {
				mods = append(mods, m)
			}
		}
	}
	if len(mods) == 0 {
		t.Fatal("go.work: no use (...) block")
	}
	return mods
}

// checkDockerfile states what the issue asks of every image, so an edit of
// the template cannot drop one by accident.
func checkDockerfile(t *testing.T, svc, df string) {
	t.Helper()
	for _, want := range []string{
		"FROM --platform=$BUILDPLATFORM golang:" + goImage + "-",
		"ARG TARGETARCH", "ARG TARGETVARIANT",
		"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w`, "common/run.Version=${VERSION}",
		"\nFROM scratch\n",
		"COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
		"--chown=65532:65532 /out/data /data",
		"\nUSER 65532:65532\n",
		"\nVOLUME /data\n",
		`CMD ["/cloud-block-` + svc + `", "healthcheck"]`,
		`ENTRYPOINT ["/cloud-block-` + svc + `"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("services/%s/Dockerfile lacks %q", svc, want)
		}
	}
}

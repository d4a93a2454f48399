package imagetest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"path"
	"strings"
	"testing"
	"time"
)

// ImageInfo is what `docker image inspect` says, the parts the tests read.
type ImageInfo struct {
	Os, Architecture, Variant string
	Size                      int64
	Config                    struct {
		User        string
		Entrypoint  []string
		Volumes     map[string]struct{}
		Healthcheck *struct {
			Test                           []string
			Interval, Timeout, StartPeriod time.Duration
			Retries                        int
		}
	}
}

// ImageInfo inspects an image.
func (e *Engine) ImageInfo(t testing.TB, image string) ImageInfo {
	t.Helper()
	var i ImageInfo
	e.Inspect(t, "image", image, &i)
	return i
}

// File is an entry of an image's file system.
type File struct {
	Name     string // without a leading /, folders without a trailing /
	Type     byte   // tar.TypeReg, tar.TypeDir, ...
	UID, GID int
	Mode     int64
	Data     []byte // regular files only
}

// Files lists what an image holds: its layers from `docker save`, each
// applied over the ones before (a later entry replaces an earlier one; the
// images have no deletions to apply).
func (e *Engine) Files(t testing.TB, image string) map[string]File {
	t.Helper()
	// A deadline for a stuck engine, not a speed test: with the compose
	// tests and qemu runs beside it, one save of 37 MB took over 2 minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := e.Cmd(ctx, "save", image).Output()
	if err != nil {
		t.Fatalf("docker save %s: %v", image, err)
	}
	entries := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("docker save %s: %v", image, err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			entries[h.Name] = b
		}
	}
	var manifest []struct{ Layers []string }
	if err := json.Unmarshal(entries["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("docker save %s: manifest.json: %v", image, err)
	}
	files := map[string]File{}
	for _, layer := range manifest[0].Layers {
		lr := tar.NewReader(bytes.NewReader(entries[layer]))
		for {
			h, err := lr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s layer %s: %v", image, layer, err)
			}
			name := strings.TrimSuffix(path.Clean(strings.TrimPrefix(h.Name, "./")), "/")
			if strings.HasPrefix(path.Base(name), ".wh.") {
				t.Fatalf("%s: layer %s deletes %s: the test does not apply deletions", image, layer, name)
			}
			f := File{Name: name, Type: h.Typeflag, UID: h.Uid, GID: h.Gid, Mode: h.Mode}
			if h.Typeflag == tar.TypeReg {
				f.Data, _ = io.ReadAll(lr)
			}
			files[name] = f
		}
	}
	return files
}

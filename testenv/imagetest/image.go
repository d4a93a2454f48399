package imagetest

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
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
	// Content is a regular file's bytes, read from the saved image on
	// demand (an ELF check reads a binary's headers, not its 35 MB).
	Content *io.SectionReader
}

// Bytes reads a regular file whole.
func (f File) Bytes() ([]byte, error) {
	if f.Content == nil {
		return nil, fmt.Errorf("%s is not a regular file", f.Name)
	}
	return io.ReadAll(io.NewSectionReader(f.Content, 0, f.Content.Size()))
}

// Files lists what an image holds: its layers from `docker save`, each
// applied over the ones before (a later entry replaces an earlier one; the
// images have no deletions to apply).
//
// The image is saved to a file the test keeps open, and read in place: tar
// entries are found by seeking, and no byte is copied that a test does not
// read. (Reading the saves into memory cost the race-instrumented test 4
// minutes of CPU for 21 images, most of the images phase's.)
func (e *Engine) Files(t testing.TB, image string) map[string]File {
	t.Helper()
	// A deadline for a stuck engine, not a speed test: with the compose
	// tests and qemu runs beside it, one save of 37 MB took over 2 minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	saved := filepath.Join(t.TempDir(), "image.tar")
	if out, err := e.Cmd(ctx, "save", "-o", saved, image).CombinedOutput(); err != nil {
		t.Fatalf("docker save %s: %v\n%s", image, err, out)
	}
	f, err := os.Open(saved)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	info, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := tarEntries(io.NewSectionReader(f, 0, info.Size()))
	if err != nil {
		t.Fatalf("docker save %s: %v", image, err)
	}
	var manifest []struct{ Layers []string }
	if m, ok := entries["manifest.json"]; !ok {
		t.Fatalf("docker save %s: no manifest.json", image)
	} else if b, err := m.Bytes(); err != nil {
		t.Fatalf("docker save %s: manifest.json: %v", image, err)
	} else if err := json.Unmarshal(b, &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("docker save %s: manifest.json: %v", image, err)
	}
	files := map[string]File{}
	for _, layer := range manifest[0].Layers {
		l, ok := entries[layer]
		if !ok || l.Content == nil {
			t.Fatalf("docker save %s: no layer %s", image, layer)
		}
		layerFiles, err := tarEntries(l.Content)
		if err != nil {
			t.Fatalf("%s layer %s: %v", image, layer, err)
		}
		for _, lf := range layerFiles {
			name := strings.TrimSuffix(path.Clean(strings.TrimPrefix(lf.Name, "./")), "/")
			if strings.HasPrefix(path.Base(name), ".wh.") {
				t.Fatalf("%s: layer %s deletes %s: the test does not apply deletions", image, layer, name)
			}
			lf.Name = name
			files[name] = lf
		}
	}
	return files
}

// tarEntries indexes a tar archive in place: each entry's header, and for a
// regular file the section of r holding its bytes. Skipping a file's bytes
// is a seek.
func tarEntries(r *io.SectionReader) (map[string]File, error) {
	out := map[string]File{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		f := File{Name: h.Name, Type: h.Typeflag, UID: h.Uid, GID: h.Gid, Mode: h.Mode}
		if h.Typeflag == tar.TypeReg {
			// Next leaves r at the entry's first byte.
			at, err := r.Seek(0, io.SeekCurrent)
			if err != nil {
				return nil, err
			}
			f.Content = io.NewSectionReader(r, at, h.Size)
		}
		out[h.Name] = f
	}
}

package harness

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SeamBuildTag builds a block with the spool's test seam
// (common/spool/seam.go): slow fsyncs and the power-cut shadow.
const SeamBuildTag = "spoolseam"

// SpoolDir is where a block keeps its spool under BUFFER_DIR.
func SpoolDir(bufDir string) string { return filepath.Join(bufDir, "spool") }

// PowerCutEnv is the environment that makes a seam build record, in
// shadow, what each of its fsyncs made durable in the spool of bufDir.
func PowerCutEnv(bufDir, shadow string) map[string]string {
	return map[string]string{"SPOOL_SEAM_SHADOW": shadow, "SPOOL_SEAM_ROOT": SpoolDir(bufDir)}
}

// PowerCut turns the spool of bufDir back to what its fsyncs made durable,
// as recorded in shadow (see PowerCutEnv): the block must already be
// killed. Every file goes back to its content at its last fsync (a file
// never fsynced is empty, or gone if its name never became durable), and a
// removal not followed by a directory fsync is undone. It returns how many
// files it restored and the spool's bytes before and after the cut.
func PowerCut(bufDir, shadow string) (files int, before, after int64, err error) {
	root := SpoolDir(bufDir)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if fi, err := d.Info(); err == nil {
			before += fi.Size()
		}
		return os.Remove(p)
	})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("clearing %s: %w", root, err)
	}
	names := filepath.Join(shadow, "names")
	err = filepath.WalkDir(names, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(names, p)
		ino, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(filepath.Join(shadow, "blobs", string(ino)))
		if err != nil && !os.IsNotExist(err) {
			return err
		}
		to := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
			return err
		}
		files++
		after += int64(len(data))
		return os.WriteFile(to, data, 0o600)
	})
	if err != nil {
		return files, before, after, fmt.Errorf("restoring %s from %s: %w", root, shadow, err)
	}
	return files, before, after, nil
}

package filesink

import (
	"path/filepath"
	"testing"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

func newSink(t *testing.T, env map[string]string) sink.Sink {
	l := config.NewLoader(func(n string) (string, bool) { v, ok := env[n]; return v, ok }, Vars)
	s, err := New(l, run.Info{})
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.ndjson")
	env := map[string]string{"FILE_SINK_PATH": path, "FILE_SINK_MAX_MESSAGE_BYTES": "4096", "FILE_SINK_MAX_BATCH_MESSAGES": "50"}
	sinktest.Run(t, sinktest.Harness{
		New: func(t *testing.T) sink.Sink { return newSink(t, env) },
		NewBroken: func(t *testing.T) sink.Sink {
			return newSink(t, map[string]string{"FILE_SINK_PATH": "/proc/cannot/write/here"})
		},
		ReadBack: func(t *testing.T, ids []string) map[string][]byte {
			lines, err := Read(path)
			if err != nil {
				t.Fatal(err)
			}
			out := map[string][]byte{}
			for _, l := range lines {
				out[l.ID] = l.Bytes()
			}
			return out
		},
	})
}

package harness

import (
	"encoding/base64"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/deadletter"
)

// DeadLetter is one entry of a block's dead-letter store, its payload
// decoded.
type DeadLetter struct {
	ID, Topic, Reason string
	Received          time.Time
	Payload           []byte
}

// DeadLetters returns the entries of the block's dead-letter store
// (BUFFER_DIR/deadletter), oldest first; none if the store does not exist
// yet. An unreadable store or an entry that does not decode fails the test.
func (b *Block) DeadLetters(t testing.TB) []DeadLetter {
	t.Helper()
	// ReadAll globs the directory, so a missing one yields no entries.
	entries, err := deadletter.ReadAll(filepath.Join(b.BufDir, "deadletter"))
	if err != nil {
		t.Fatalf("dead-letter store: %v", err)
	}
	out := make([]DeadLetter, 0, len(entries))
	for _, e := range entries {
		p, err := base64.StdEncoding.DecodeString(e.PayloadBase64)
		if err != nil {
			t.Fatalf("dead-letter entry %s: payload: %v", e.ID, err)
		}
		out = append(out, DeadLetter{ID: e.ID, Topic: e.Topic, Reason: e.Reason, Received: e.Received, Payload: p})
	}
	return out
}

// String describes d without its payload, for test messages.
func (d DeadLetter) String() string {
	return fmt.Sprintf("{%s %s: %d bytes, %q}", d.ID, d.Topic, len(d.Payload), d.Reason)
}

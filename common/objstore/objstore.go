package objstore

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/cloud-block/cloud-block/common/clock"
	"github.com/cloud-block/cloud-block/common/sink"
)

// Mode says how messages become objects.
type Mode string

const (
	// Batch writes one NDJSON object per batch (or per topic with {topic}).
	Batch Mode = "batch"
	// PerMessage writes each payload unchanged as an object of its own.
	PerMessage Mode = "message"
)

// Default key templates, without extension.
const (
	DefaultBatchTemplate   = "{device}/{yyyy}/{mm}/{dd}/{hh}/{first}-{last}"
	DefaultMessageTemplate = "{device}/{yyyy}/{mm}/{dd}/{hh}/{id}"
)

// Extensions of batch objects.
const (
	extNDJSON     = ".ndjson"
	extNDJSONGzip = ".ndjson.gz"
)

// MaxKeyBytes is the longest key S3, Azure Blob and GCS all accept.
const MaxKeyBytes = 1024

// UnknownDevice stands in for an empty Options.Device.
const UnknownDevice = "unknown-device"

// Content types and encodings of the objects.
const (
	ContentTypeNDJSON = "application/x-ndjson"
	ContentTypeJSON   = "application/json"
	ContentTypeText   = "text/plain; charset=utf-8"
	ContentTypeBinary = "application/octet-stream"
	EncodingGzip      = "gzip"
)

// Options say how to lay out objects. The zero value is batch mode with the
// default template and no gzip.
type Options struct {
	Mode     Mode
	Gzip     bool   // batch mode only
	Prefix   string // prepended to every key ("" = none); a trailing "/" is added if missing
	Template string // key template without extension ("" = the mode's default)
	Device   string // the device id (BALENA_DEVICE_UUID or hostname), set by the caller
}

// Object is one PUT for a sink.
type Object struct {
	Key  string
	Body []byte // in message mode it aliases the message's Payload: do not modify
	// ContentType is "application/x-ndjson" in batch mode; in message mode
	// "application/json" for valid JSON, "text/plain; charset=utf-8" for other
	// UTF-8, else "application/octet-stream".
	ContentType     string
	ContentEncoding string // "gzip" or ""
	// Metadata, in message mode only (nil in batch mode), names the message
	// as its batch line would: MetaID, MetaTopic, MetaReceived and
	// MetaDevice, each value plain ASCII (see metaValue). A sink stores it as
	// the object's user metadata.
	Metadata map[string]string
	// Indexes are the positions in the batch of the messages this object
	// holds, ascending, so a sink can name them in a sink.BatchError when its
	// PUT fails.
	Indexes []int
}

// Build lays out batch as objects, in a deterministic order: one per message
// in message mode; in batch mode one, or one per topic in order of first
// appearance when the template has {topic}. An empty batch yields none.
//
// Errors mean the Options are invalid (Load reports those at start-up) or a
// key cannot fit MaxKeyBytes, or message-mode metadata MaxMetadataBytes,
// even with the topic shortened (an absurdly long prefix, device or id);
// retrying cannot fix either.
func (o Options) Build(batch []sink.Message) ([]Object, error) {
	mode := o.Mode
	if mode == "" {
		mode = Batch
	}
	if mode != Batch && mode != PerMessage {
		return nil, fmt.Errorf("objstore: mode %q is invalid: want %s or %s", o.Mode, Batch, PerMessage)
	}
	if mode == PerMessage && o.Gzip {
		return nil, errors.New("objstore: gzip is for batch mode only: message mode stores each payload unchanged")
	}
	t, err := compile(o.Template, mode)
	if err != nil {
		return nil, err
	}
	if len(batch) == 0 {
		return nil, nil
	}
	device := o.Device
	if device == "" {
		device = UnknownDevice
	}
	k := keyer{t: t, prefix: o.prefix(), device: string(appendEscaped(nil, device, false)), sent: clock.Now()}
	// One backing array for every object's Indexes: a batch holds up to
	// thousands of messages and message mode would otherwise allocate one
	// tiny slice each.
	all := make([]int, len(batch))
	for i := range all {
		all[i] = i
	}
	if mode == PerMessage {
		return k.perMessage(batch, all, metaValue(device))
	}
	return k.batch(batch, all, device, o.Gzip)
}

func (o Options) prefix() string {
	if o.Prefix != "" && !strings.HasSuffix(o.Prefix, "/") {
		return o.Prefix + "/"
	}
	return o.Prefix
}

// perMessage lays out one object per message; device is the metadata value
// of the device.
func (k *keyer) perMessage(batch []sink.Message, all []int, device string) ([]Object, error) {
	out := make([]Object, len(batch))
	for i := range batch {
		m := &batch[i]
		key, err := k.key(m, m, "")
		if err != nil {
			return nil, err
		}
		md, err := metadata(m, device)
		if err != nil {
			return nil, err
		}
		out[i] = Object{Key: key, Body: m.Payload, ContentType: contentType(m.Payload), Metadata: md, Indexes: all[i : i+1 : i+1]}
	}
	return out, nil
}

func contentType(p []byte) string {
	switch {
	case !utf8.Valid(p):
		return ContentTypeBinary
	case validJSON(p):
		return ContentTypeJSON
	default:
		return ContentTypeText
	}
}

func (k *keyer) batch(batch []sink.Message, all []int, device string, gz bool) ([]Object, error) {
	groups := [][]int{all}
	if k.t.topics > 0 {
		groups = groupByTopic(batch, all)
	}
	ext := extNDJSON
	enc := ""
	if gz {
		ext, enc = extNDJSONGzip, EncodingGzip
	}
	deviceField := appendDeviceField(nil, device)

	scratch := scratchPool.Get().(*[]byte)
	defer putScratch(scratch)

	out := make([]Object, 0, len(groups))
	for _, idx := range groups {
		key, err := k.key(&batch[idx[0]], &batch[idx[len(idx)-1]], ext)
		if err != nil {
			return nil, err
		}
		b := (*scratch)[:0]
		for _, i := range idx {
			b = appendLine(b, &batch[i], deviceField)
		}
		*scratch = b
		// The NDJSON is built in a pooled scratch buffer and copied (or
		// compressed) into a body of exactly the right size: the body
		// outlives Build, the scratch does not.
		var body []byte
		if gz {
			body, err = gzipBytes(b)
			if err != nil {
				return nil, err
			}
		} else {
			body = bytes.Clone(b)
		}
		out = append(out, Object{Key: key, Body: body, ContentType: ContentTypeNDJSON, ContentEncoding: enc, Indexes: idx})
	}
	return out, nil
}

// groupByTopic splits the batch indexes by topic, groups in order of first
// appearance and messages in batch order. The result is a reordering of all
// (sliced into groups) so the groups share its backing array.
func groupByTopic(batch []sink.Message, all []int) [][]int {
	single := true
	for i := range batch {
		if batch[i].Topic != batch[0].Topic {
			single = false
			break
		}
	}
	if single {
		return [][]int{all}
	}
	var order []string
	members := map[string][]int{}
	for i := range batch {
		t := batch[i].Topic
		if _, ok := members[t]; !ok {
			order = append(order, t)
		}
		members[t] = append(members[t], i)
	}
	groups := make([][]int, 0, len(order))
	n := 0
	for _, t := range order {
		m := members[t]
		copy(all[n:], m)
		groups = append(groups, all[n:n+len(m):n+len(m)])
		n += len(m)
	}
	return groups
}

// Pools: Build runs once per batch, on small ARM devices too. A new gzip
// writer allocates 1.2 MB of compressor state and costs about as much CPU as
// compressing a whole batch (measured: 1.8 ms on x86-64); the NDJSON scratch
// grows to the batch size. Reusing both keeps the garbage per batch to the
// bodies.
var (
	scratchPool = sync.Pool{New: func() any { return new([]byte) }}
	gzipPool    = sync.Pool{New: func() any {
		// BestSpeed, measured with BenchmarkGzipLevels (1,000 x 200-byte
		// JSON messages, half of each a random hex field: 356 KB of NDJSON)
		// on a 2-core x86-64 VM: level 1 compresses to 25% of the NDJSON
		// in about 4 ms, level 3 to 23% in 1.3x that time, the default
		// level 6 to 22% in 2x and level 9 to 21% in 3-4x. Doubling the CPU
		// for 3% less upload is the wrong trade on a Raspberry Pi.
		w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
		return w
	}}
	zbufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

// maxPooled bounds what a pool keeps: one batch of large payloads must not pin
// megabytes on a small device for the rest of the run.
const maxPooled = 4 << 20

func putScratch(b *[]byte) {
	if cap(*b) <= maxPooled {
		scratchPool.Put(b)
	}
}

// gzipBytes compresses src into a new, exactly sized slice. The gzip header
// carries no name and no time, so the same batch gives the same bytes.
func gzipBytes(src []byte) ([]byte, error) {
	buf := zbufPool.Get().(*bytes.Buffer)
	buf.Reset()
	zw := gzipPool.Get().(*gzip.Writer)
	zw.Reset(buf)
	_, err := zw.Write(src)
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	// Drop the reference to buf so the pooled writer pins nothing.
	zw.Reset(nil)
	gzipPool.Put(zw)
	var out []byte
	if err == nil {
		out = bytes.Clone(buf.Bytes())
	}
	if buf.Cap() <= maxPooled {
		zbufPool.Put(buf)
	}
	if err != nil {
		return nil, fmt.Errorf("objstore: gzip: %w", err)
	}
	return out, nil
}

package objstore

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/sink"
)

// benchBatch is 1,000 messages of 200-byte JSON, a typical sensor batch: a
// few fixed fields and a field of varying hex, so gzip sees realistic
// redundancy rather than padding.
func benchBatch() []sink.Message {
	batch := make([]sink.Message, 1000)
	at := time.Date(2024, 3, 5, 7, 8, 9, 0, time.UTC)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range batch {
		p := fmt.Appendf(nil, `{"sensor":"temp-%03d","ts":%d,"value":%d.%02d,"unit":"C","battery":%d,"rssi":-%d,"raw":"`,
			i%50, 1709622489000+i*1000, 15+r.IntN(15), r.IntN(100), 90-i%30, 40+r.IntN(50))
		for len(p) < 198 {
			p = append(p, "0123456789abcdef"[r.IntN(16)])
		}
		p = append(p, `"}`...)
		batch[i] = sink.Message{
			ID:       fmt.Sprintf("65e6c5a1beef-%012d", i+1),
			Topic:    "sensors/roof/temp",
			Received: at.Add(time.Duration(i) * 997 * time.Microsecond),
			Payload:  p,
		}
	}
	return batch
}

func BenchmarkBuild(b *testing.B) {
	batch := benchBatch()
	for _, gz := range []bool{false, true} {
		b.Run(fmt.Sprintf("gzip=%v", gz), func(b *testing.B) {
			o := Options{Gzip: gz, Device: "3f1c9a6e2b7d4c58a0e1f2b3c4d5e6f7"}
			b.SetBytes(int64(len(batch) * 200))
			b.ReportAllocs()
			var size int
			for b.Loop() {
				objs, err := o.Build(batch)
				if err != nil {
					b.Fatal(err)
				}
				size = len(objs[0].Body)
			}
			b.ReportMetric(float64(size), "body-bytes")
		})
	}
}

// BenchmarkGzipLevels is the measurement behind gzip.BestSpeed: time and
// compressed size of one benchmark batch's NDJSON per level.
func BenchmarkGzipLevels(b *testing.B) {
	objs, err := Options{Device: "3f1c9a6e2b7d4c58a0e1f2b3c4d5e6f7"}.Build(benchBatch())
	if err != nil {
		b.Fatal(err)
	}
	plain := objs[0].Body
	for _, level := range []int{gzip.BestSpeed, 3, gzip.DefaultCompression, gzip.BestCompression} {
		b.Run(fmt.Sprintf("level=%d", level), func(b *testing.B) {
			zw, _ := gzip.NewWriterLevel(nil, level)
			var out bytes.Buffer
			b.SetBytes(int64(len(plain)))
			for b.Loop() {
				out.Reset()
				zw.Reset(&out)
				zw.Write(plain)
				zw.Close()
			}
			b.ReportMetric(100*float64(out.Len())/float64(len(plain)), "%size")
		})
	}
}

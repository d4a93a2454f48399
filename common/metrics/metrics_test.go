package metrics

import (
	"bytes"
	"testing"
)

func TestTextFormat(t *testing.T) {
	r := NewRegistry("service", "aws-sqs")
	c := r.Counter("b_total", "A counter.")
	c.Add(3)
	c.Inc()
	r.GaugeFunc("a_bytes", "A gauge.", func() float64 { return 1.5 })
	h := r.Histogram("c_seconds", "A histogram.", 0.1, 1)
	h.Observe(0.05)
	h.Observe(0.5)
	h.Observe(5)
	var b bytes.Buffer
	r.Write(&b)
	want := `# HELP a_bytes A gauge.
# TYPE a_bytes gauge
a_bytes{service="aws-sqs"} 1.5
# HELP b_total A counter.
# TYPE b_total counter
b_total{service="aws-sqs"} 4
# HELP c_seconds A histogram.
# TYPE c_seconds histogram
c_seconds_bucket{service="aws-sqs",le="0.1"} 1
c_seconds_bucket{service="aws-sqs",le="1"} 2
c_seconds_bucket{service="aws-sqs",le="+Inf"} 3
c_seconds_sum{service="aws-sqs"} 5.55
c_seconds_count{service="aws-sqs"} 3
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestNoLabels(t *testing.T) {
	r := NewRegistry()
	r.Counter("x_total", "X.").Inc()
	r.Histogram("h", "H.", 1).Observe(2)
	var b bytes.Buffer
	r.Write(&b)
	for _, line := range []string{"x_total 1\n", `h_bucket{le="1"} 0` + "\n", "h_count 1\n"} {
		if !bytes.Contains(b.Bytes(), []byte(line)) {
			t.Errorf("missing %q in:\n%s", line, b.String())
		}
	}
}

package sqssink

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

const testDevice = "0123456789abcdef0123456789abcdef"

// connected returns a sink connected to mem.
func connected(t *testing.T, mem *memSQS, env map[string]string) *Sink {
	t.Helper()
	if env == nil {
		env = map[string]string{}
	}
	if env["AWS_SQS_QUEUE_NAME"] == "" {
		env["AWS_SQS_QUEUE_NAME"] = "q"
		if mem.fifo {
			env["AWS_SQS_QUEUE_NAME"] = "q.fifo"
		}
	}
	s := mustLoad(t, env, testDevice)
	s.dial = mem.dial
	return sinktest.Connected(t, s)
}

// msgs is a batch of the payloads; ids 0123456789ab-000000000001 and on.
func msgs(payloads ...[]byte) []sink.Message {
	return sinktest.Batch("0123456789ab", "cloud-input", sinktest.Received, payloads...)
}

// maxText is the largest text payload that fits a queue of maxSize with
// this topic, id length and device.
func maxText(maxSize int, topic string, idLen int, device string) int {
	c := &conn{device: textAttr(device)}
	return maxSize - c.overhead(topic, strings.Repeat("x", idLen))
}

func TestConformanceFake(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(map[bool]string{false: "standard", true: "fifo"}[fifo], func(t *testing.T) {
			mem := newMem(64<<10, fifo)
			name := "q"
			if fifo {
				name = "q.fifo"
			}
			env := map[string]string{"AWS_SQS_QUEUE_NAME": name}
			sinktest.Run(t, sinktest.Harness{
				New: func(t *testing.T) sink.Sink {
					s := mustLoad(t, env, testDevice)
					s.dial = mem.dial
					return s
				},
				NewBroken: func(t *testing.T) sink.Sink {
					s := mustLoad(t, env, testDevice)
					s.dial = func(context.Context) (Client, error) { return nil, errRefused }
					return s
				},
				ReadBack: func(t *testing.T, ids []string) map[string][]byte { return mem.stored(t) },
				// The suite's ids are 27 characters long.
				MaxMessageBytes: maxText(64<<10, "cloud-input/conformance", 27, testDevice),
			})
		})
	}
}

func TestMessageMapping(t *testing.T) {
	mem := newMem(1<<20, false)
	s := connected(t, mem, nil)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	payloads := [][]byte{
		[]byte(`{"t":21.5}`), {}, all, []byte("nul\x00inside"), []byte("tab\tcr\rlf\n"), {0xff},
		[]byte("\uFFFD is fine"), []byte("\xef\xbf\xbe"), // U+FFFE is not allowed
		[]byte("\xed\xa0\x80"), // a UTF-8-encoded surrogate is invalid UTF-8
		[]byte("emoji \U0001F600 and \x7f"),
	}
	wantEnc := []string{"", EncodingEmpty, EncodingBase64, EncodingBase64, "", EncodingBase64, "", EncodingBase64, EncodingBase64, ""}
	batch := msgs(payloads...)
	if err := s.WriteBatch(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	got := mem.all()
	if len(got) != len(payloads) {
		t.Fatalf("%d messages stored, want %d", len(got), len(payloads))
	}
	for i, m := range got {
		enc := aws.ToString(m.Attrs[AttrEncoding].StringValue)
		if enc != wantEnc[i] {
			t.Errorf("payload %d %q: encoding %q, want %q", i, payloads[i], enc, wantEnc[i])
		}
		p, err := decode(m.Body, m.Attrs)
		if err != nil || !bytes.Equal(p, payloads[i]) {
			t.Errorf("payload %d: decoded %q (%v), want %q", i, p, err, payloads[i])
		}
		if enc == "" && m.Body != string(payloads[i]) {
			t.Errorf("payload %d: text body %q changed", i, m.Body)
		}
		want := map[string]string{
			AttrTopic: "cloud-input", AttrReceived: "2024-03-05T07:08:09.123456789Z",
			AttrDevice: testDevice, AttrID: batch[i].ID,
		}
		for k, v := range want {
			if a := m.Attrs[k]; aws.ToString(a.StringValue) != v || aws.ToString(a.DataType) != "String" {
				t.Errorf("payload %d: attribute %s = %v %q, want String %q", i, k, aws.ToString(a.DataType), aws.ToString(a.StringValue), v)
			}
		}
		if m.Group != "" || m.DedupID != "" {
			t.Errorf("standard queue got group %q dedup %q", m.Group, m.DedupID)
		}
	}
	if got[1].Body != EmptyBody {
		t.Errorf("empty payload body %q", got[1].Body)
	}
}

func TestTopicWithControlCharacterIsBinaryAttribute(t *testing.T) {
	mem := newMem(1<<20, false)
	s := connected(t, mem, nil)
	m := msgs([]byte("x"))
	m[0].Topic = "a/\x01b"
	if err := s.WriteBatch(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	a := mem.all()[0].Attrs[AttrTopic]
	if aws.ToString(a.DataType) != "Binary" || string(a.BinaryValue) != "a/\x01b" {
		t.Errorf("topic attribute %+v", a)
	}
}

func TestLimits(t *testing.T) {
	mem := newMem(256<<10, false)
	s := connected(t, mem, nil)
	lim := s.Limits()
	if lim.MaxBatchMessages != 10 || lim.MaxBatchBytes != 256<<10 || lim.MaxInFlight != 0 {
		t.Errorf("limits %+v", lim)
	}
	c := s.conn.Load()
	// The declared maximum is an upper bound: nothing larger fits even with
	// an empty topic and id; the attributes are counted in MessageOverhead.
	if lim.MaxMessageBytes != 256<<10-c.overhead("", "") || lim.MessageOverhead <= 100 || lim.MessageOverhead > 300 {
		t.Errorf("limits %+v", lim)
	}
	fifo := connected(t, newMem(1<<20, true), nil)
	if lim := fifo.Limits(); lim.MaxInFlight != 1 || lim.MaxBatchBytes != 1<<20 {
		t.Errorf("FIFO limits %+v", lim)
	}
}

func TestSizeLimitCountsAttributesAndBase64(t *testing.T) {
	const maxSize = 64 << 10
	mem := newMem(maxSize, false)
	s := connected(t, mem, nil)
	batch := msgs(nil)
	text := maxText(maxSize, "cloud-input", len(batch[0].ID), testDevice)
	// Base64 of n bytes is 4*ceil(n/3) bytes, and the encoding attribute
	// (19+6+6 bytes) comes on top.
	bin := (text - len(AttrEncoding) - len("String") - len(EncodingBase64)) / 4 * 3
	cases := []struct {
		name    string
		payload []byte
		ok      bool
	}{
		{"text at the limit", bytes.Repeat([]byte("m"), text), true},
		{"text one over", bytes.Repeat([]byte("m"), text+1), false},
		{"binary at the limit", bytes.Repeat([]byte{0}, bin), true},
		{"binary one over", bytes.Repeat([]byte{0}, bin+1), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			batch := msgs([]byte("before"), tc.payload, []byte("after"))
			calls := mem.calls
			err := s.WriteBatch(context.Background(), batch)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var be *sink.BatchError
			if !errors.As(err, &be) || len(be.Failed) != 1 || !sink.IsPermanent(be.Failed[1]) {
				t.Fatalf("want message 1 failed permanently, got %v", err)
			}
			if !strings.Contains(err.Error(), "exceeds the queue's MaximumMessageSize of 65536 bytes") {
				t.Errorf("error %v", err)
			}
			if mem.calls != calls+1 {
				t.Errorf("%d calls for the rest of the batch, want 1", mem.calls-calls)
			}
		})
	}
	if got := mem.all(); len(got) != 3+2+3+2 {
		t.Errorf("%d stored", len(got))
	}
}

func TestBase64GrowthSplitsRequest(t *testing.T) {
	mem := newMem(1<<20, false)
	s := connected(t, mem, nil)
	// Ten binary payloads of 90 KiB fit MaxBatchBytes as the pipeline counts
	// them, but not one request once in base64.
	var payloads [][]byte
	for i := range 10 {
		payloads = append(payloads, bytes.Repeat([]byte{byte(i), 0}, 45<<10))
	}
	if n := 10 * (90<<10 + s.Limits().MessageOverhead); n > s.Limits().MaxBatchBytes {
		t.Fatalf("test payloads do not fit the limits: %d", n)
	}
	if err := s.WriteBatch(context.Background(), msgs(payloads...)); err != nil {
		t.Fatal(err)
	}
	if len(mem.entries) != 2 || mem.entries[0]+mem.entries[1] != 10 {
		t.Errorf("requests of %v entries, want two", mem.entries)
	}
	got := mem.all()
	for i, m := range got {
		if p, _ := decode(m.Body, m.Attrs); !bytes.Equal(p, payloads[i]) {
			t.Errorf("message %d out of order or changed", i)
		}
	}
}

func TestPartialFailureNamesTheFailedEntries(t *testing.T) {
	mem := newMem(1<<20, false)
	s := connected(t, mem, nil)
	mem.entryErr = func(e types.SendMessageBatchRequestEntry) *types.BatchResultErrorEntry {
		switch *e.MessageBody {
		case "internal":
			return &types.BatchResultErrorEntry{Code: aws.String("InternalError"), Message: aws.String("try again"), SenderFault: false}
		case "throttled":
			return &types.BatchResultErrorEntry{Code: aws.String("RequestThrottled"), SenderFault: true}
		case "kms":
			return &types.BatchResultErrorEntry{Code: aws.String("KMS.ThrottlingException"), SenderFault: true}
		case "denied":
			return &types.BatchResultErrorEntry{Code: aws.String("AccessDenied"), SenderFault: true}
		case "invalid":
			return &types.BatchResultErrorEntry{Code: aws.String("InvalidParameterValue"), Message: aws.String("no"), SenderFault: true}
		}
		return nil
	}
	batch := msgs([]byte("ok"), []byte("internal"), []byte("throttled"), []byte("ok"), []byte("kms"), []byte("denied"), []byte("invalid"), []byte("ok"))
	err := s.WriteBatch(context.Background(), batch)
	var be *sink.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("want a BatchError, got %v", err)
	}
	want := map[int]string{1: "retry", 2: "retry", 4: "retry", 5: "auth", 6: "permanent"}
	if len(be.Failed) != len(want) {
		t.Errorf("failed %v, want %v", be.Failed, want)
	}
	for i, class := range want {
		e := be.Failed[i]
		got := "retry"
		switch {
		case e == nil:
			got = "ok"
		case sink.IsPermanent(e):
			got = "permanent"
		case sink.IsAuth(e):
			got = "auth"
		}
		if got != class {
			t.Errorf("message %d: %s (%v), want %s", i, got, e, class)
		}
	}
	if n := len(mem.all()); n != 3 {
		t.Errorf("%d stored, want 3", n)
	}
}

// A request refused as a whole for one message's content is resent in
// halves until the culprit is alone; only it fails, permanently.
func TestContentErrorFindsTheCulprit(t *testing.T) {
	mem := newMem(1<<20, false)
	s := connected(t, mem, nil)
	mem.sendErr = func(in *sqs.SendMessageBatchInput) error {
		for _, e := range in.Entries {
			if *e.MessageBody == "poison" {
				return &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "bad", Fault: smithy.FaultClient}
			}
		}
		return nil
	}
	batch := msgs([]byte("a"), []byte("b"), []byte("c"), []byte("poison"), []byte("e"), []byte("f"), []byte("g"))
	err := s.WriteBatch(context.Background(), batch)
	var be *sink.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 1 || !sink.IsPermanent(be.Failed[3]) {
		t.Fatalf("want only message 3 failed permanently, got %v", err)
	}
	var bodies []string
	for _, m := range mem.all() {
		bodies = append(bodies, m.Body)
	}
	if strings.Join(bodies, "") != "abcefg" {
		t.Errorf("stored %v", bodies)
	}
	// Halving: the whole, then two requests per level down to the culprit.
	if mem.calls > 7 {
		t.Errorf("%d calls to find one message among 7", mem.calls)
	}
}

func TestWholeRequestFailure(t *testing.T) {
	denied := &smithy.GenericAPIError{Code: "AccessDenied", Message: "not allowed", Fault: smithy.FaultClient}
	throttled := &types.RequestThrottled{Message: aws.String("slow down")}
	unavailable := &smithy.GenericAPIError{Code: "ServiceUnavailable", Fault: smithy.FaultServer}
	kms := &types.KmsAccessDenied{Message: aws.String("key")}
	for _, tc := range []struct {
		name string
		err  error
		auth bool
	}{
		{"denied", denied, true}, {"kms denied", kms, true},
		{"throttled", throttled, false}, {"unavailable", unavailable, false}, {"network", errRefused, false},
		{"queue gone", &types.QueueDoesNotExist{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := newMem(1<<20, false)
			s := connected(t, mem, nil)
			mem.sendErr = func(*sqs.SendMessageBatchInput) error { return tc.err }
			err := s.WriteBatch(context.Background(), msgs([]byte("a"), []byte("b")))
			var be *sink.BatchError
			switch {
			case err == nil:
				t.Fatal("no error")
			case errors.As(err, &be):
				t.Errorf("a whole-request failure reported as a partial one: %v", err)
			case sink.IsPermanent(err):
				t.Errorf("permanent: %v", err)
			case sink.IsAuth(err) != tc.auth:
				t.Errorf("IsAuth = %v: %v", sink.IsAuth(err), err)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("%v does not wrap %v", err, tc.err)
			}
		})
	}
}

// When the second request of a split batch fails as a whole, the first
// request's messages are delivered and only the rest are retried.
func TestSecondRequestFails(t *testing.T) {
	mem := newMem(1<<20, false)
	s := connected(t, mem, nil)
	mem.sendErr = func(*sqs.SendMessageBatchInput) error {
		if mem.calls > 1 {
			return &smithy.GenericAPIError{Code: "ServiceUnavailable", Fault: smithy.FaultServer}
		}
		return nil
	}
	var payloads [][]byte
	for i := range 10 {
		payloads = append(payloads, bytes.Repeat([]byte{byte(i), 0}, 45<<10))
	}
	err := s.WriteBatch(context.Background(), msgs(payloads...))
	var be *sink.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("want a BatchError, got %v", err)
	}
	stored := len(mem.all())
	if stored == 0 || stored+len(be.Failed) != 10 {
		t.Errorf("%d stored, %d failed", stored, len(be.Failed))
	}
	for i := stored; i < 10; i++ {
		if e := be.Failed[i]; e == nil || sink.IsPermanent(e) {
			t.Errorf("message %d: %v", i, e)
		}
	}
}

func TestFIFOIds(t *testing.T) {
	long := strings.Repeat("t", 200)
	for _, tc := range []struct {
		group, topic, want string
	}{
		{"", "cloud-input", testDevice},
		{"topic", "sensors/kitchen", "sensors/kitchen"},
		{"topic", "with space", "sha256-"},
		{"topic", long, "sha256-"},
		{"fleet-1", "cloud-input", "fleet-1"},
	} {
		mem := newMem(1<<20, true)
		s := connected(t, mem, map[string]string{"AWS_SQS_MESSAGE_GROUP_ID": tc.group})
		m := msgs([]byte("x"), []byte("y"))
		m[0].Topic, m[1].Topic = tc.topic, tc.topic
		if err := s.WriteBatch(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		// Sent again, as after a crash: deduplicated.
		if err := s.WriteBatch(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		got := mem.all()
		if len(got) != 2 {
			t.Fatalf("group %q: %d stored, want 2", tc.group, len(got))
		}
		if !strings.HasPrefix(got[0].Group, tc.want) || got[0].Group != got[1].Group {
			t.Errorf("group %q topic %q: MessageGroupId %q, %q", tc.group, tc.topic, got[0].Group, got[1].Group)
		}
		if want := m[0].ID + "@" + testDevice; got[0].DedupID != want {
			t.Errorf("dedup id %q, want %q", got[0].DedupID, want)
		}
	}
}

func TestConnect(t *testing.T) {
	t.Run("denied attributes fall back", func(t *testing.T) {
		mem := newMem(4096, false)
		mem.attrErr = &smithy.GenericAPIError{Code: "AccessDenied", Fault: smithy.FaultClient}
		s := connected(t, mem, nil)
		if got := s.conn.Load().maxSize; got != assumedMaxSize {
			t.Errorf("max size %d", got)
		}
	})
	t.Run("bad key", func(t *testing.T) {
		mem := newMem(4096, false)
		mem.urlErr = &smithy.GenericAPIError{Code: "InvalidClientTokenId", Fault: smithy.FaultClient}
		s := mustLoad(t, map[string]string{"AWS_SQS_QUEUE_NAME": "q"}, testDevice)
		s.dial = mem.dial
		if err := s.Connect(context.Background()); !sink.IsAuth(err) {
			t.Errorf("want an AuthError, got %v", err)
		}
		if err := s.WriteBatch(context.Background(), msgs([]byte("x"))); !errors.Is(err, errNotConnected) {
			t.Errorf("write after a failed connect: %v", err)
		}
	})
	t.Run("queue URL skips GetQueueUrl", func(t *testing.T) {
		mem := newMem(4096, false)
		mem.urlErr = errors.New("must not be called")
		s := connected(t, mem, map[string]string{"AWS_SQS_QUEUE_NAME": mem.url})
		if got := s.conn.Load().maxSize; got != 4096 {
			t.Errorf("max size %d", got)
		}
	})
}

package blobsink

import (
	"bytes"
	"context"
	"io"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
	"github.com/cloud-block/cloud-block/testenv/emulators"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// azuriteEnv configures the sink for a's account with the original
// variable names plus the endpoint override.
func azuriteEnv(a *emulators.Azurite, ctr string) map[string]string {
	return map[string]string{
		"AZURE_BLOB_STORAGE_ACCOUNT":     a.AccountName,
		"AZURE_BLOB_STORAGE_ACCOUNT_KEY": a.AccountKey,
		"AZURE_BLOB_ENDPOINT":            a.BlobEndpoint,
		"AZURE_BLOB_CONTAINER_NAME":      ctr,
	}
}

// realSink builds the sink as New does, with the real SDK clients.
func realSink(t *testing.T, env map[string]string, logs *sinktest.LogBuffer) *Sink {
	t.Helper()
	c := loadEnv(t, env)
	cl, err := newClients(c)
	if err != nil {
		t.Fatal(err)
	}
	if logs == nil {
		logs = &sinktest.LogBuffer{}
	}
	return newSink(c, cl, logs.Logger())
}

// listBlobs downloads every blob of a container with its headers.
func listBlobs(t testing.TB, c *azblob.Client, ctr string) []storedBlob {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out []storedBlob
	pager := c.NewListBlobsFlatPager(ctr, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatalf("list %s: %v", ctr, err)
		}
		for _, it := range page.Segment.BlobItems {
			b := storedBlob{name: *it.Name}
			if p := it.Properties.ContentType; p != nil {
				b.contentType = *p
			}
			if p := it.Properties.ContentEncoding; p != nil {
				b.contentEncoding = *p
			}
			resp, err := c.DownloadStream(ctx, ctr, b.name, nil)
			if err != nil {
				t.Fatalf("download %s: %v", b.name, err)
			}
			b.body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("download %s: %v", b.name, err)
			}
			for k, v := range resp.Metadata {
				if b.metadata == nil {
					b.metadata = map[string]string{}
				}
				b.metadata[k] = *v
			}
			out = append(out, b)
		}
	}
	return out
}

func TestConformanceAzurite(t *testing.T) {
	t.Parallel()
	a := emulators.StartAzurite(t)
	client := a.Client(t)
	for _, tc := range []struct{ name, mode, gzip string }{
		{"batch", "batch", "false"},
		{"batch-gzip", "batch", "true"},
		{"message", "message", "false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctr := "conf-" + tc.name
			a.CreateContainer(t, ctr)
			env := with(azuriteEnv(a, ctr), "AZURE_BLOB_OBJECT_MODE", tc.mode, "AZURE_BLOB_GZIP", tc.gzip)
			sinktest.Run(t, sinktest.Harness{
				New: func(t *testing.T) sink.Sink { return realSink(t, env, nil) },
				NewBroken: func(t *testing.T) sink.Sink {
					return realSink(t, with(env, "AZURE_BLOB_ENDPOINT", "http://"+procs.Addr(procs.FreePort(t))+"/devstoreaccount1"), nil)
				},
				ReadBack: func(t *testing.T, ids []string) map[string][]byte {
					got, _ := decodeBlobs(t, listBlobs(t, client, ctr))
					return got
				},
			})
			for _, b := range listBlobs(t, client, ctr) {
				wantEnc := map[string]string{"true": "gzip", "false": ""}[tc.gzip]
				if tc.mode == "batch" && (b.contentType != "application/x-ndjson" || b.contentEncoding != wantEnc) {
					t.Errorf("%s: Content-Type %q, Content-Encoding %q", b.name, b.contentType, b.contentEncoding)
				}
			}
		})
	}
}

// What a user meets first: a container that does not exist, a wrong key,
// and what AZURE_BLOB_CREATE_CONTAINER does.
func TestAzuriteConnect(t *testing.T) {
	t.Parallel()
	a := emulators.StartAzurite(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	err := realSink(t, azuriteEnv(a, "missing"), nil).Connect(ctx)
	if err == nil || sink.IsAuth(err) || sink.IsPermanent(err) || !strings.Contains(err.Error(), "set AZURE_BLOB_CREATE_CONTAINER=true") {
		t.Fatalf("missing container: %v", err)
	}
	t.Logf("missing container: %v", err)

	s := realSink(t, with(azuriteEnv(a, "created"), "AZURE_BLOB_CREATE_CONTAINER", "true"), nil)
	if err := s.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(ctx); err != nil {
		t.Fatalf("second connect, the container exists: %v", err)
	}

	// A well-formed key of the wrong account.
	wrong := strings.Repeat("A", 86) + "=="
	logs := &sinktest.LogBuffer{}
	s = realSink(t, with(azuriteEnv(a, "created"), "AZURE_BLOB_STORAGE_ACCOUNT_KEY", wrong), logs)
	err = s.Connect(ctx)
	if !sink.IsAuth(err) {
		t.Fatalf("wrong key: got %v, want an AuthError", err)
	}
	t.Logf("wrong key: %v", err)
	werr := s.WriteBatch(ctx, msgs(2, oneTopic))
	if !sink.IsAuth(werr) {
		t.Fatalf("write with a wrong key: got %v, want an AuthError", werr)
	}
	for _, text := range []string{err.Error(), werr.Error(), logs.String()} {
		if strings.Contains(text, wrong[:20]) || strings.Contains(text, a.AccountKey[:20]) {
			t.Errorf("a key appears in %q", text)
		}
	}
}

// A SAS that may create and write blobs, but not read or list them, is
// enough; its token never shows in an error or a log, not even when the
// request never got an answer. (With create alone, Azurite refuses the
// conditional PUT of a resend with 403 AuthorizationPermissionMismatch
// rather than 409 BlobAlreadyExists, so write is needed too.)
func TestAzuriteWriteOnlySAS(t *testing.T) {
	t.Parallel()
	a := emulators.StartAzurite(t)
	a.CreateContainer(t, "sas")
	cred, err := azblob.NewSharedKeyCredential(a.AccountName, a.AccountKey)
	if err != nil {
		t.Fatal(err)
	}
	qp, err := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPSandHTTP,
		ExpiryTime:    time.Now().Add(time.Hour).UTC(),
		ContainerName: "sas",
		Permissions:   (&sas.ContainerPermissions{Create: true, Write: true}).String(),
	}.SignWithSharedKey(cred)
	if err != nil {
		t.Fatal(err)
	}
	sig := qp.Signature()
	env := map[string]string{
		"AZURE_BLOB_CONNECTIONSTRING": "BlobEndpoint=" + strings.TrimSuffix(a.BlobEndpoint, "/") + ";SharedAccessSignature=" + qp.Encode(),
		"AZURE_BLOB_CONTAINER_NAME":   "sas",
	}
	logs := &sinktest.LogBuffer{}
	s := realSink(t, env, logs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Connect(ctx); err != nil {
		t.Fatalf("connect with a write-only SAS: %v", err)
	}
	if !strings.Contains(logs.String(), "existence is not checked") {
		t.Errorf("no warning that the container could not be checked: %s", logs)
	}
	batch := msgs(3, oneTopic)
	if err := s.WriteBatch(ctx, batch); err != nil {
		t.Fatalf("write with a write-only SAS: %v", err)
	}
	if err := s.WriteBatch(ctx, batch); err != nil {
		t.Fatalf("resend with a write-only SAS: %v", err)
	}
	got, seen := decodeBlobs(t, listBlobs(t, a.Client(t), "sas"))
	for _, m := range batch {
		if !bytes.Equal(got[m.ID], m.Payload) || seen[m.ID] != 1 {
			t.Errorf("message %s: seen %d times, payload %q", m.ID, seen[m.ID], got[m.ID])
		}
	}

	a.Stop()
	short, cancel2 := context.WithTimeout(ctx, 20*time.Second)
	defer cancel2()
	err = s.WriteBatch(short, msgs(1, oneTopic))
	if err == nil || sink.IsPermanent(err) {
		t.Fatalf("write while Azurite is down: %v", err)
	}
	t.Logf("while down: %v", err)
	for _, text := range []string{err.Error(), logs.String()} {
		if strings.Contains(text, sig) || strings.Contains(text, "sig=") {
			t.Errorf("the SAS appears in %q", text)
		}
	}
}

// Topics with characters that need escaping become blob names that
// Azurite stores and lists as they were written.
func TestAzuriteTopicNames(t *testing.T) {
	t.Parallel()
	a := emulators.StartAzurite(t)
	a.CreateContainer(t, "topics")
	s := realSink(t, with(azuriteEnv(a, "topics"), "AZURE_BLOB_KEY_TEMPLATE", "{topic}/{first}-{last}"), nil)
	topics := []string{"sensors/temp", "a b/ü/..", "x%2Fy/#?&=+", "/leading/and/trailing/"}
	batch := msgs(8, func(i int) string { return topics[i%len(topics)] })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	blobs := listBlobs(t, a.Client(t), "topics")
	objs, err := s.cfg.Layout.Build(batch)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, b := range blobs {
		names[b.name] = true
	}
	for _, o := range objs {
		if !names[o.Key] {
			t.Errorf("blob %q not listed under its name; listed %v", o.Key, keys(names))
		}
	}
	got, _ := decodeBlobs(t, blobs)
	for _, m := range batch {
		if !bytes.Equal(got[m.ID], m.Payload) {
			t.Errorf("message %s on %q not read back", m.ID, m.Topic)
		}
	}
}

// In message mode each blob's metadata, as Azurite stores and returns it,
// is the message's id, topic, time and device, whatever bytes the topic
// holds (UTF-8, a control byte, '%', not UTF-8 at all).
func TestAzuriteMessageMetadata(t *testing.T) {
	t.Parallel()
	a := emulators.StartAzurite(t)
	a.CreateContainer(t, "metadata")
	s := realSink(t, with(azuriteEnv(a, "metadata"), "AZURE_BLOB_OBJECT_MODE", "message"), nil)
	topics := []string{"sensors/temp", "café/\x01/100% a+b", "bad\xff/ü"}
	batch := msgs(len(topics), func(i int) string { return topics[i] })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	objs, err := s.cfg.Layout.Build(batch)
	if err != nil {
		t.Fatal(err)
	}
	blobs := map[string]storedBlob{}
	for _, b := range listBlobs(t, a.Client(t), "metadata") {
		blobs[b.name] = b
	}
	for i, o := range objs {
		b, ok := blobs[o.Key]
		got := map[string]string{}
		for k, v := range b.metadata {
			got[strings.ToLower(k)] = v // the SDK hands names back as HTTP canonicalised them
		}
		if !ok || !maps.Equal(got, o.Metadata) {
			t.Errorf("blob %s (found %v): metadata %q, want %q", o.Key, ok, b.metadata, o.Metadata)
		}
		l, err := objstore.DecodeMetadata(b.metadata)
		m := batch[i]
		if err != nil || l.ID != m.ID || l.Topic != m.Topic || !l.Received.Equal(m.Received) || l.Device != "test-device" {
			t.Errorf("blob %s: metadata decode to %+v (%v), want %q %q %v test-device", o.Key, l, err, m.ID, m.Topic, m.Received)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/cloud-block/cloud-block/testenv/cmd/demo/internal/show"
	"github.com/cloud-block/cloud-block/testenv/sqsfake"
)

// destinations are the services the demo can show, by SERVICE name.
var destinations = map[string]func() destination{
	"aws-s3":      func() destination { return &s3Dest{} },
	"aws-sqs":     func() destination { return &sqsDest{} },
	"azure-eh":    func() destination { return &ehDest{} },
	"azure-blob":  func() destination { return &blobDest{} },
	"gcp-pubsub":  func() destination { return &pubsubDest{} },
	"gcp-storage": func() destination { return &gcsDest{} },
}

// serveLocal serves h on a free 127.0.0.1 port until the demo stops.
func serveLocal(d *demo, h http.Handler) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	d.onStop(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return "http://" + l.Addr().String(), nil
}

// --- AWS S3: gofakes3 in this process ------------------------------------------

const demoBucket = "demo-bucket"

// objectStoreWait shortens the object stores' batching: they write an object
// a minute by default, and a demo wants to show objects within seconds.
const objectStoreWait = "BATCH_MAX_WAIT=2s"

type s3Dest struct {
	backend *s3mem.Backend
	seen    map[string]bool
}

func (s *s3Dest) Describe() string {
	return "gofakes3 (an S3 emulator, in this process), bucket " + demoBucket
}
func (s *s3Dest) Helpers() []string { return nil }

func (s *s3Dest) Start(ctx context.Context, d *demo) ([]string, error) {
	s.backend = s3mem.New()
	s.seen = map[string]bool{}
	if err := s.backend.CreateBucket(demoBucket); err != nil {
		return nil, err
	}
	url, err := serveLocal(d, gofakes3.New(s.backend, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	if err != nil {
		return nil, err
	}
	d.say("S3 emulator on %s with bucket %s", url, demoBucket)
	return []string{
		"AWS_S3_BUCKET=" + demoBucket,
		objectStoreWait,
		"AWS_S3_REGION=us-east-1",
		"AWS_S3_ENDPOINT=" + url,
		// gofakes3 takes any credentials; the block wants some.
		"AWS_S3_ACCESS_KEY=demo-access-key",
		"AWS_S3_SECRET_KEY=demo-secret-key",
	}, nil
}

func (s *s3Dest) Peek(ctx context.Context) ([]show.Arrival, error) {
	list, err := s.backend.ListBucket(demoBucket, nil, gofakes3.ListBucketPage{})
	if err != nil {
		return nil, err
	}
	var out []show.Arrival
	for _, c := range list.Contents {
		if s.seen[c.Key] {
			continue
		}
		obj, err := s.backend.GetObject(demoBucket, c.Key, nil)
		if err != nil {
			return out, err
		}
		body, err := io.ReadAll(obj.Contents)
		obj.Contents.Close()
		if err != nil {
			return out, err
		}
		s.seen[c.Key] = true
		out = append(out, show.Object("s3://"+demoBucket+"/"+c.Key, body))
	}
	return out, nil
}

func (s *s3Dest) Stop() {}

// --- AWS SQS: the project's SQS fake in this process ---------------------------

const demoQueue = "demo-queue"

type sqsDest struct {
	fake     *sqsfake.Server
	url      string
	queueURL string
}

func (s *sqsDest) Describe() string {
	return "the project's SQS fake (testenv/sqsfake, in this process), queue " + demoQueue
}
func (s *sqsDest) Helpers() []string { return nil }

func (s *sqsDest) Start(ctx context.Context, d *demo) ([]string, error) {
	s.fake = sqsfake.New()
	url, err := serveLocal(d, s.fake)
	if err != nil {
		return nil, err
	}
	// End long polls first, so the HTTP server's shutdown does not wait on them.
	d.onStop(s.fake.Close)
	s.url = url
	var created struct{ QueueUrl string }
	if err := s.call(ctx, "CreateQueue", map[string]any{"QueueName": demoQueue}, &created); err != nil {
		return nil, fmt.Errorf("create queue: %w", err)
	}
	s.queueURL = created.QueueUrl
	d.say("SQS emulator on %s with queue %s", url, s.queueURL)
	return []string{
		"AWS_SQS_QUEUE_NAME=" + demoQueue,
		"AWS_SQS_REGION=us-east-1",
		"AWS_SQS_ENDPOINT=" + url,
		"AWS_SQS_ACCESS_KEY=demo-access-key",
		"AWS_SQS_SECRET_KEY=demo-secret-key",
	}, nil
}

// call makes one SQS API call in AWS JSON 1.0, the protocol the SDKs speak.
func (s *sqsDest) call(ctx context.Context, action string, in, out any) error {
	body, _ := json.Marshal(in)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-Amz-Target", "AmazonSQS."+action)
	req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", action, resp.Status, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, out)
}

// Peek receives what is queued, as a consumer would, and deletes it.
func (s *sqsDest) Peek(ctx context.Context) ([]show.Arrival, error) {
	type message struct{ MessageId, ReceiptHandle, Body string }
	var all []message
	for {
		var got struct{ Messages []message }
		err := s.call(ctx, "ReceiveMessage", map[string]any{"QueueUrl": s.queueURL, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0}, &got)
		if err != nil {
			return nil, err
		}
		if len(got.Messages) == 0 {
			break
		}
		var entries []map[string]string
		for i, m := range got.Messages {
			entries = append(entries, map[string]string{"Id": fmt.Sprint(i), "ReceiptHandle": m.ReceiptHandle})
		}
		var deleted struct{ Failed []any }
		if err := s.call(ctx, "DeleteMessageBatch", map[string]any{"QueueUrl": s.queueURL, "Entries": entries}, &deleted); err != nil {
			return nil, err
		}
		if len(deleted.Failed) > 0 {
			return nil, errors.New("DeleteMessageBatch failed for some messages")
		}
		all = append(all, got.Messages...)
	}
	if len(all) == 0 {
		return nil, nil
	}
	var bodies [][]byte
	for _, m := range all {
		bodies = append(bodies, []byte(m.Body))
	}
	return []show.Arrival{show.Messages("received from "+demoQueue+" (and deleted)", bodies)}, nil
}

func (s *sqsDest) Stop() {}

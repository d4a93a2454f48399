package buildtest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runEnv is the least each service needs to start, pointing at a closed
// local port: the block must come up (and stay up, retrying) without its
// destination. A service missing here is started only for the fast checks.
var runEnv = map[string][]string{
	"aws-sqs": {"AWS_SQS_QUEUE_NAME=buildtest", "AWS_SQS_REGION=us-east-1", "AWS_SQS_ENDPOINT=http://127.0.0.1:9"},
	"aws-s3":  {"AWS_S3_BUCKET=buildtest", "AWS_S3_REGION=us-east-1", "AWS_S3_ENDPOINT=http://127.0.0.1:9"},
	"azure-eh": {"AZURE_EH_CONNECTIONSTRING=Endpoint=sb://127.0.0.1:9;SharedAccessKeyName=k;SharedAccessKey=v;" +
		"EntityPath=hub;UseDevelopmentEmulator=true"},
	// Azurite's well-known development account; not a secret.
	"azure-blob": {"AZURE_BLOB_CONTAINER_NAME=buildtest", "AZURE_BLOB_CONNECTIONSTRING=DefaultEndpointsProtocol=http;" +
		"AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
		"BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"},
	"gcp-pubsub":  {"GCP_PUBSUB_TOPIC=buildtest", "GCP_PUBSUB_PROJECT_ID=buildtest", "PUBSUB_EMULATOR_HOST=127.0.0.1:9"},
	"gcp-storage": {"GCP_STORAGE_BUCKET=buildtest", "GCP_STORAGE_PROJECT_ID=buildtest", "STORAGE_EMULATOR_HOST=127.0.0.1:9"},
}

// checkInEmptyRoot runs the binary the way the image does: in a root with
// nothing but itself, the CA bundle and /data, as user 65532.
func checkInEmptyRoot(t *testing.T, bin, svc string) {
	t.Helper()
	canChroot(t)
	dir := emptyRoot(t, bin)
	name := filepath.Base(bin)

	// make build stamps its own VERSION; the test's builds stamp version.
	want := name + " " + version
	if os.Getenv("BUILDTEST_BIN_DIR") != "" {
		want = name + " "
	}
	out, errOut, code := inRoot(t, dir, name, nil, "version")
	if code != 0 || !strings.HasPrefix(strings.TrimSpace(out), want) {
		t.Errorf("version: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}
	out, errOut, code = inRoot(t, dir, name, nil, "env")
	if code != 0 || !strings.Contains(out, "| `LOCAL_MQTT_HOST` |") {
		t.Errorf("env: exit %d, stderr %q; want the env table, got:\n%s", code, errOut, out)
	}
	// A bad variable: exit code 2 before connecting to anything, naming it.
	_, errOut, code = inRoot(t, dir, name, []string{"LOCAL_MQTT_HOST=ftp://nowhere", "BUFFER_DIR=/data/spool"})
	if code != 2 || !strings.Contains(errOut, "LOCAL_MQTT_HOST") {
		t.Errorf("bad LOCAL_MQTT_HOST: exit %d, stderr %q; want exit 2 naming the variable", code, errOut)
	}

	env, ok := runEnv[svc]
	if !ok {
		t.Logf("no start-up settings for %s in runEnv: not started in the empty root", svc)
		return
	}
	checkRuns(t, dir, name, env)
}

// checkRuns starts the service in the empty root against a broker and a
// destination that are not there, and expects it to serve /live, answer
// its healthcheck (liveness) with "ok" while /ready says why it is not
// ready, and stop cleanly on SIGTERM.
func checkRuns(t *testing.T, dir, name string, env []string) {
	t.Helper()
	addr := freeAddr(t)
	env = append([]string{
		"LOCAL_MQTT_HOST=mqtt://127.0.0.1:9",
		"HTTP_LISTEN=" + addr,
		"BALENA_DEVICE_UUID=buildtest",
		"SHUTDOWN_TIMEOUT=2s",
		// The default /data/cloud-block/<service> is used, as in the image.
	}, env...)
	cmd := exec.Command("chroot", fmt.Sprintf("--userspec=%d:%d", imageUID, imageUID), dir, "/"+name)
	cmd.Env = env
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// done is closed once the process has exited; waitErr is then its result.
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	defer func() {
		cmd.Process.Kill()
		<-done
	}()

	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/live")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-done:
			t.Fatalf("%s exited in the empty root (%v) before serving /live:\n%s", name, waitErr, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not serve /live within 20s:\n%s", name, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Neither broker nor destination exists: not ready, but live (it waits
	// for them, as it should), so the image's HEALTHCHECK passes.
	out, errOut, code := inRoot(t, dir, name, []string{"HTTP_LISTEN=" + addr}, "healthcheck")
	if code != 0 || strings.TrimSpace(out) != "ok" {
		t.Errorf("healthcheck: exit %d, stdout %q, stderr %q; want exit 0, ok (live, though not ready)", code, out, errOut)
	}
	if resp, err := http.Get("http://" + addr + "/ready"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/ready with neither broker nor destination: %v %v, want 503", resp, err)
	} else {
		resp.Body.Close()
	}

	stopAt := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", waitErr, log.String())
		}
	case <-time.After(15 * time.Second):
		t.Errorf("did not stop within 15s of SIGTERM (SHUTDOWN_TIMEOUT=2s):\n%s", log.String())
	}
	t.Logf("ran in the empty root as %d: /live served, healthcheck live while /ready 503, stopped %.1fs after SIGTERM",
		imageUID, time.Since(stopAt).Seconds())
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

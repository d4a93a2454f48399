// Command sqsfake serves the in-memory SQS-compatible server of package sqsfake as a process, so
// the block and its integration tests reach it through AWS_ENDPOINT_URL the way they would reach
// a real emulator (none that speaks the current SDK's protocol installs on the build machines).
//
//	sqsfake -listen 127.0.0.1:9324
//
// It prints "listening on http://<addr>" once it accepts connections (with port 0, <addr> has the
// port chosen) and exits on SIGTERM or SIGINT. All state is in memory and lost on exit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cloud-block/cloud-block/testenv/sqsfake"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9324", "host:port to serve HTTP on")
	flag.Parse()
	if err := run(*listen); err != nil {
		fmt.Fprintln(os.Stderr, "sqsfake:", err)
		os.Exit(1)
	}
}

func run(addr string) error {
	// Registered before serving so a signal that arrives right after "listening" is not lost
	// to the default handler.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	fake := sqsfake.New()
	srv := &http.Server{Handler: fake, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Printf("listening on http://%s\n", ln.Addr())

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// End long polls first: Shutdown waits for requests in progress, and a receive may wait 20 s.
	fake.Close()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

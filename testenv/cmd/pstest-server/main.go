// Command pstest-server serves Google's in-process Pub/Sub fake (pstest) as a
// process, so tests and the block itself can reach it via PUBSUB_EMULATOR_HOST
// the way they would reach the real emulator. No standalone binary of pstest
// exists upstream.
//
//	pstest-server -listen 127.0.0.1:8085
//
// It prints "listening <addr>" once it accepts connections and exits on
// SIGTERM or SIGINT. All state is in memory and lost on exit.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8085", "host:port to serve gRPC on")
	flag.Parse()

	// Registered before serving so a SIGTERM that arrives right after
	// "listening" is never lost to the default handler.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)

	// NewServerWithAddress panics if it cannot listen; that message and the
	// non-zero exit are what a launcher needs to see.
	srv := pstest.NewServerWithAddress(*listen)
	fmt.Println("listening", srv.Addr)

	<-sig
	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		os.Exit(1)
	}
}

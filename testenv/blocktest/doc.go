// Package blocktest is the block-level suite: every scenario written once
// and run against every destination through the real binaries, a real
// Mosquitto and the cloud emulators. A target is a destination binary with
// its backend (the emulator, how to stop and start it, how to read back
// what was delivered, which values are secrets) and the settings only it
// has (invalid values for its variables, its own payload limit).
//
// The scenarios: byte-exact delivery of every payload shape with its
// metadata and the destination's largest payload and one byte more
// (bytes); every variable invalid (config); SIGKILL mid-stream (crash); the
// destination away, past the retry cap, the network cut and the broker
// restarted (outage); the broker's redeliveries after a cut connection, a
// broker restart and a kill (redelivery); hostile payloads and topics at
// the spool's limit (badinput); secrets in logs and the image's user
// (security); power cuts and torn spools (powercut); a full disk (disk);
// a compressed hour with outages (soak).
//
// Run(t, target, scale) runs them for one target; TestBlock runs them for
// every target at once: at the Small scale in `make test` and
// `make test-<service>` (BLOCKTEST_TARGETS=<service>), at Full in
// `make test-faults` (BLOCKTEST_SCALE=full). It prints a summary table
// (scenario, target, published, delivered, duplicates, lost) at the end and
// fails on any lost message. ScaleFromEnv lists the variables that adjust a
// scale.
package blocktest

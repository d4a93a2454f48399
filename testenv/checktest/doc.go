// Package checktest runs every subcommand of each service's real binary
// against Mosquitto and the destination's emulator: check with a valid
// configuration (exit 0, an ok line for the broker and the destination,
// --write), with a wrong secret where the emulator checks credentials and
// with a wrong broker password (exit 4, denied), with the emulator and the
// broker stopped (exit 3, unreachable) and with bad variables (exit 2,
// named as start-up names them), no secret in any output; help, version,
// env, healthcheck against a running block and an unknown command. And
// check against a broker requiring TLS with a client certificate: trusted,
// untrusted, refused.
//
// It only has tests; make test runs them (./testenv/...).
package checktest

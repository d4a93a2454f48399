package run

import "fmt"

// help is the help subcommand's text: every subcommand and exit code.
func help(svc Service) string {
	return fmt.Sprintf(`Usage: cloud-block-%[1]s [command]

Without a command it runs the service: MQTT messages from the local broker
to %[1]s. Settings come from environment variables (and Azure Key Vault);
the env command lists them.

Commands:
  check [--write]  Validate the configuration as start-up does, connect to the
                   broker (a client id of its own, clean session) and subscribe,
                   and make a harmless call to the destination that proves the
                   credentials; one line a finding, secrets never printed.
                   --write: an object store also writes a test object under the
                   key prefix and deletes it.
                   Before deploying: docker run --rm --env-file FILE IMAGE check
  deadletter list [--json]         What was refused: id, when, topic, size, why.
  deadletter show <id> [--raw]     One entry and its payload (--raw: the bytes only).
  deadletter replay <id>...|--all  Send entries again through the spool under their
                   own ids; each leaves the store once it is spooled again. One that
                   fails again comes back with the new reason.
  deadletter purge <id>...|--all   Delete entries.
  spool stats [--json]   Backlog, its oldest message, disk use, each segment's health
                   (read back and checksummed now), damage repaired at start-up.
  spool peek [n] [--json]  The first n (10) undelivered messages, oldest first.
  spool export <file>|-    Copy the undelivered backlog, with ids, to one file
                   (checksummed; the messages stay here too).
  spool import <file>      Spool an export's messages under their own ids; they are
                   delivered as if received here (object stores: the same keys).
                   deadletter and spool work with the service running (through
                   BUFFER_DIR/admin.sock) or stopped (they open BUFFER_DIR);
                   they read the BUFFER_* variables from the environment.
  healthcheck      Ask the running service's /live (the image's HEALTHCHECK).
  env              Print the table of variables (Markdown).
  version          Print the version.
  help             Print this.

Exit codes:
  %[2]d  ok
  %[3]d  the service stopped on an error; healthcheck: not live; deadletter,
     spool: the operation failed or did not do all it was asked (ids not
     found, entries not replayed, a damaged segment)
  %[4]d  configuration error (every problem is named), or an unknown command
  %[5]d  check: the broker, the destination or the vault is unreachable, or did
     not answer as expected (a missing queue, bucket, topic or hub)
  %[6]d  check: the broker, the destination or the vault refused the
     credentials or a permission the block needs
`, svc.Name, ExitOK, ExitFatal, ExitConfig, ExitUnreachable, ExitDenied)
}

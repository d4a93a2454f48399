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
  healthcheck      Ask the running service's /live (the image's HEALTHCHECK).
  env              Print the table of variables (Markdown).
  version          Print the version.
  help             Print this.

Exit codes:
  %[2]d  ok
  %[3]d  the service stopped on an error; healthcheck: not live
  %[4]d  configuration error (every problem is named), or an unknown command
  %[5]d  check: the broker, the destination or the vault is unreachable, or did
     not answer as expected (a missing queue, bucket, topic or hub)
  %[6]d  check: the broker, the destination or the vault refused the
     credentials or a permission the block needs
`, svc.Name, ExitOK, ExitFatal, ExitConfig, ExitUnreachable, ExitDenied)
}

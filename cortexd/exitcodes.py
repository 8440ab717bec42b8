"""Every exit code cortexd can end with, in one place (documented in docs/architecture.md)."""

OK = 0
#: Something unexpected; the log says what.
ERROR = 1
#: Bad command line or configuration (includes an unreadable key or certificate).
CONFIG_ERROR = 2
#: A child process failed to boot; the supervisor halts instead of respawning in a loop.
BOOT_ERROR = 3
#: Another cortexd holds the lock for this state directory or node port.
ALREADY_RUNNING = 4
#: The node or Control port is in use by another program.
PORT_IN_USE = 5
#: A child kept crashing after boot (more restarts than the budget allows).
CRASH_LOOP = 6

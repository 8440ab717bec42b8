"""The node agent's process exit codes, in one place."""

OK = 0  # clean exit, including a graceful or forced shutdown on SIGTERM/SIGINT
CONFIG = 2  # bad flags, unreadable token or hub key, unusable state directory or ran log
STATE_LOCKED = 3  # another agent holds the state directory
# The hub address is no node port (e.g. the Control port answering UNIMPLEMENTED), or the
# hub proved it does not hold the key --hub-key names: retrying cannot help (issue 13).
WRONG_HUB = 4

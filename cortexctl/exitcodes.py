"""Every exit status cortexctl can end with, in one place.

Plain commands (get, cancel, input, nodes, tasks, shards, submit without
``--follow``) exit with one of the cortexctl codes below.

Commands whose status is a task's (``submit --follow`` and ``watch``) exit with
the task's own status when it ran: its exit code (0-255, passed through as is),
or 128+N when it was killed by signal N. When it did not end by itself:
TIMED_OUT 124, CANCELLED 130, LOST 129 (a hang-up: its node went away), FAILED
without an exit code 1. cortexctl's own failures in those commands exit 125
(the ``docker run`` / ``timeout`` convention), so a script can tell them apart
from most task results.
"""

OK = 0
#: The hub refused the request (unknown task, bad argument, finished task, ...).
ERROR = 1
#: Bad command line or local configuration (token file, TLS files, address).
USAGE = 2
#: The hub could not be reached, or did not answer in time.
UNREACHABLE = 3
#: The hub refused the credential (UNAUTHENTICATED or PERMISSION_DENIED).
AUTH = 4
#: Interrupted by the operator (Ctrl-C), as a shell would report SIGINT.
INTERRUPTED = 130

# -- statuses of commands that report a task's result ------------------------

#: The task ended FAILED and has no exit code (it could not be started).
TASK_FAILED_NO_CODE = 1
#: The task ran past its timeout (the ``timeout`` command's convention).
TASK_TIMED_OUT = 124
#: cortexctl itself failed while following a task.
FOLLOW_ERROR = 125
#: The task's node was lost (128 + SIGHUP).
TASK_LOST = 129
#: The task was cancelled (128 + SIGINT).
TASK_CANCELLED = 130

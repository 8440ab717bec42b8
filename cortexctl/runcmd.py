"""``cortexctl run -- CMD``: submit, wait for the end in one Run call, print the journal.

stdout gets the task's journal (the first 10 KB, a marker for what was left out,
the last 30 KB; ``--json``: one object with the task and the journal, base64), and
the status is the task's own (see ``exitcodes``). ``--wait S`` bounds the wait:
a task still running then is reported with its id and goes on (status 125);
``--cancel-on-drop`` asks the hub to cancel it instead when the call ends early
(the deadline, Ctrl-C, a lost connection).
"""

import argparse
import json

from cortex.v1 import control_pb2 as pb
from cortexctl import exitcodes, render
from cortexctl.client import RunDeadline
from cortexctl.commands import connect, submit_request, task_status
from cortexctl.errors import CtlError, UsageError
from cortexctl.follow import notice
from cortexctl.logcmds import journal_dict, write_journal


def cmd_run(args: argparse.Namespace) -> int:
    if args.wait is not None and args.wait <= 0:
        raise UsageError("--wait must be positive")
    request = submit_request(args)
    with connect(args) as client:
        try:
            response = client.run(request, args.wait, cancel_on_drop=args.cancel_on_drop)
        except RunDeadline as e:
            then = "is cancelled" if args.cancel_on_drop else "goes on"
            what = f"task {e.task_id}" if e.task_id else "the task"
            raise CtlError(f"--wait {args.wait:g}s passed before {what} ended; it {then} "
                           f"(hub: {e})", exitcodes.FOLLOW_ERROR) from e
        except CtlError as e:
            raise CtlError(str(e), exitcodes.FOLLOW_ERROR) from e
        except KeyboardInterrupt:
            if not args.cancel_on_drop:
                notice("stopped waiting; the task goes on (cortexctl tasks lists it)")
            raise
    task = response.task
    if args.json:
        print(json.dumps({"task": render.task_dict(task), "deduplicated": response.deduplicated,
                          "journal": journal_dict(response.journal)}))
    else:
        write_journal(response.journal)
        if task.state != pb.SUCCEEDED:
            code = f", exit code {task.exit_code}" if task.has_exit_code else ""
            reason = f": {task.reason}" if task.reason else ""
            notice(f"task {task.task_id} {render.state_name(task.state)}{code}{reason}")
    return task_status(task)

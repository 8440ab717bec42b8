"""``nodeagent detect FILE...``: the edge prompt detector run over raw transcripts.

Prints JSON lines: per file, first ``{"file", "note", "reads"}`` (whether the kernel layer
applied; how the reads were chosen, see :mod:`nodeagent.detect.transcript`), then
one ``{"file", "offset", "kind", "detector", "confidence", "excerpt"}`` per event (plus
``exit_code``/``cwd`` for markers). Needs no hub, token or state directory. Exit status:
0, or 2 when a file cannot be read (the others are still processed).

``--kernel FILE.json`` maps a transcript's file name to what /proc showed of its
terminal's foreground process group when it ended: ``{"members": [{"comm", "state",
"wchan", "syscall", "fds"}]}`` (``syscall`` the text of ``/proc/PID/syscall`` or its
number; ``fds`` fd → link target). The last quiet tick of that file's replay gets those
facts, decided by the live layer's own rule (:func:`nodeagent.detect.kernel.decide`).
"""

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from cortex.cliargs import Parser
from nodeagent.detect.kernel import facts_from_record
from nodeagent.detect.transcript import KERNEL_NOTE, replay_file


def run(argv: Sequence[str]) -> int:
    p = Parser(prog="nodeagent detect",
                                description="print the prompt events a transcript would raise")
    p.add_argument("files", nargs="+", metavar="FILE", help="raw terminal transcript")
    p.add_argument("--nonce", default=None,
                   help="the task's marker nonce (markers with another nonce never fire)")
    p.add_argument("--cols", type=int, default=None,
                   help="terminal width (default: from NAME.reads, else 80)")
    p.add_argument("--rule", action="store_true", help="also print which table entry fired")
    p.add_argument("--kernel", metavar="FILE.json",
                   help="what /proc showed at each transcript's end (file name -> members)")
    ns = p.parse_args(argv)
    status = 0
    records: dict[str, object] = {}
    if ns.kernel:
        try:
            loaded = json.loads(Path(ns.kernel).read_text())
        except (OSError, ValueError) as e:
            print(f"nodeagent detect: --kernel {ns.kernel}: {e}", file=sys.stderr)
            return 2
        if not isinstance(loaded, dict):
            print(f"nodeagent detect: --kernel {ns.kernel}: expected an object "
                  "(transcript file name -> {\"members\": [...]})", file=sys.stderr)
            return 2
        records = loaded
    for name in ns.files:
        path = Path(name)
        record = records.get(path.name, records.get(name))
        facts = facts_from_record(record) if isinstance(record, dict) else None
        try:
            detections, how = replay_file(path, ns.nonce, ns.cols, facts)
        except OSError as e:
            print(f"nodeagent detect: {name}: {e.strerror or e}", file=sys.stderr)
            status = 2
            continue
        note = (KERNEL_NOTE if facts is None
                else f"kernel layer at the end: {facts.waiting or 'not waiting'}")
        lines = [{"file": name, "note": note, "reads": how}]
        for d in detections:
            obj = d.as_json()
            if not ns.rule:
                obj.pop("rule", None)
            lines.append({"file": name, **obj})
        sys.stdout.write("".join(json.dumps(line) + "\n" for line in lines))
    return status

"""``nodeagent detect FILE...``: the edge prompt detector run over raw transcripts.

Prints JSON lines: per file, first ``{"file", "note", "reads"}`` (the kernel layer cannot
apply to a file; how the reads were chosen, see :mod:`nodeagent.detect.transcript`), then
one ``{"file", "offset", "kind", "detector", "confidence", "excerpt"}`` per event (plus
``exit_code``/``cwd`` for markers). Needs no hub, token or state directory. Exit status:
0, or 2 when a file cannot be read (the others are still processed).
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from nodeagent.detect.transcript import KERNEL_NOTE, replay_file


def run(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="nodeagent detect",
                                description="print the prompt events a transcript would raise")
    p.add_argument("files", nargs="+", metavar="FILE", help="raw terminal transcript")
    p.add_argument("--nonce", default=None,
                   help="the task's marker nonce (markers with another nonce never fire)")
    p.add_argument("--cols", type=int, default=None,
                   help="terminal width (default: from NAME.reads, else 80)")
    p.add_argument("--rule", action="store_true", help="also print which table entry fired")
    ns = p.parse_args(argv)
    status = 0
    for name in ns.files:
        path = Path(name)
        try:
            detections, how = replay_file(path, ns.nonce, ns.cols)
        except OSError as e:
            print(f"nodeagent detect: {name}: {e.strerror or e}", file=sys.stderr)
            status = 2
            continue
        lines = [{"file": name, "note": KERNEL_NOTE, "reads": how}]
        for d in detections:
            obj = d.as_json()
            if not ns.rule:
                obj.pop("rule", None)
            lines.append({"file": name, **obj})
        sys.stdout.write("".join(json.dumps(line) + "\n" for line in lines))
    return status

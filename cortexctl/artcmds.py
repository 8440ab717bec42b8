"""``cortexctl artifacts put/get/ls/rm/gc`` and the artifact half of ``submit``.

``put FILE`` hashes the file, then uploads what the hub does not have (resuming after a
disconnect) and names it (``--name``, default the file's name); ``get NAME|SHA256 -o
FILE`` downloads and checks it. Progress bars (tqdm) go to stderr when it is a
terminal, or always with ``--progress``; ``--json`` prints one JSON object instead.
``submit --input FILE:PATH`` uploads FILE the same way and places it at PATH (relative
to the task's working directory) on the node; ``--output PATH`` collects PATH after the
command ends (``cortexctl get TASK`` lists them).
"""

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cortex.cliargs import UINT32
from cortex.digests import file_sha256
from cortex.v1 import artifacts_pb2 as apb
from cortex.v1 import control_pb2 as pb
from cortexctl import commands, exitcodes, render
from cortexctl.errors import UsageError
from cortexctl.transfer import ArtifactClient, Progress

SHA_LEN = 64


def _client(args: argparse.Namespace) -> ArtifactClient:
    return ArtifactClient(commands.settings(args))


@contextmanager
def _bar(args: argparse.Namespace, total: int, what: str) -> Iterator[Progress]:
    show = getattr(args, "progress", False) or (not args.json and sys.stderr.isatty())
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
              disable=not show, file=sys.stderr, leave=False) as bar:
        def step(n: int) -> None:
            if n < 0:
                bar.reset(total=total)  # resuming: the hub says where we stand
            else:
                bar.update(n)
        yield step


def _split(target: str) -> tuple[str, str]:
    """(sha256, name) from NAME or SHA256 or sha256:SHA256."""
    target = target.removeprefix("sha256:")
    if len(target) == SHA_LEN and all(c in "0123456789abcdef" for c in target):
        return target, ""
    return "", target


def put_file(client: ArtifactClient, args: argparse.Namespace, path: Path,
             name: str) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"{path}: not a readable file")
    size = path.stat().st_size
    with _bar(args, size, f"hash {path.name}") as step:
        sha, size = file_sha256(path, step)
    started = time.monotonic()
    with _bar(args, size, f"put {path.name}") as step:
        sent = client.upload(path, sha, size, name=name, progress=step)
    return {"sha256": sha, "size_bytes": size, "name": name, "uploaded": sent,
            "resumes": client.resumes, "resumed_from": client.resumed_from,
            "upload_s": round(time.monotonic() - started, 3)}


def cmd_put(args: argparse.Namespace) -> int:
    path = Path(args.file)
    name = args.name if args.name is not None else path.name
    with _client(args) as client:
        result = put_file(client, args, path, name)
    if args.json:
        print(json.dumps(result))
    else:
        how = "uploaded" if result["uploaded"] else "already on the hub"
        print(f"{result['sha256']}  {render.size(result['size_bytes'])}  {name}  ({how})")
    return exitcodes.OK


def cmd_get(args: argparse.Namespace) -> int:
    sha, name = _split(args.target)
    with _client(args) as client:
        info = client.stat(sha, name)
        dest = Path(args.output or (name or info.sha256)).expanduser()
        started = time.monotonic()
        with _bar(args, info.size_bytes, f"get {dest.name}") as step:
            got, size = client.download(info.sha256, "", dest, step)
    if args.json:
        print(json.dumps({"sha256": got, "size_bytes": size, "path": str(dest),
                          "download_s": round(time.monotonic() - started, 3)}))
    else:
        print(f"{got}  {render.size(size)}  {dest}")
    return exitcodes.OK


def info_dict(a: apb.ArtifactInfo) -> dict[str, Any]:
    return {"sha256": a.sha256, "size_bytes": a.size_bytes, "owner": a.owner,
            "created_ms": a.created_ms, "last_used_ms": a.last_used_ms,
            "refs": [{"ref": r.ref, "created_ms": r.created_ms, "expires_ms": r.expires_ms}
                     for r in a.refs]}


def cmd_ls(args: argparse.Namespace) -> int:
    with _client(args) as client:
        items = client.list(args.limit)
    if args.json:
        text = render.json_lines([info_dict(a) for a in items])
    else:
        text = render.table(("SHA256", "SIZE", "USED", "REFS"), [
            (a.sha256[:16], render.size(a.size_bytes), render.age(a.last_used_ms),
             ", ".join(r.ref for r in a.refs) or "-") for a in items])
    if text:
        print(text)
    return exitcodes.OK


def cmd_rm(args: argparse.Namespace) -> int:
    sha, name = _split(args.target)
    with _client(args) as client:
        n = client.remove(sha, name)
    print(json.dumps({"refs_removed": n}) if args.json else
          f"{n} reference(s) removed; the bytes go at the next gc once nothing refers to them")
    return exitcodes.OK


def cmd_gc(args: argparse.Namespace) -> int:
    with _client(args) as client:
        r = client.collect(dry_run=args.dry_run)
    fields = ("refs_expired", "artifacts_removed", "blobs_removed", "bytes_freed",
              "partials_removed", "partial_bytes_freed")
    result = {f: getattr(r, f) for f in fields} | {"dry_run": args.dry_run}
    print(json.dumps(result) if args.json else
          " ".join(f"{k}={v}" for k, v in result.items()))
    return exitcodes.OK


# -- submit --input/--output ----------------------------------------------------

def add_submit_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", action="append", metavar="FILE:PATH",
                   help="upload FILE (unless the hub has it) and place it at PATH on the node "
                        "before the command runs (PATH relative to the task's directory)")
    p.add_argument("--output", action="append", metavar="PATH",
                   help="collect PATH as an artifact after the command ends")


def task_files(args: argparse.Namespace, request: pb.SubmitRequest) -> None:
    """Upload the --input files and put them and the --output paths on ``request``."""
    request.outputs.extend(args.output or [])
    specs = []
    for item in args.input or []:
        local, sep, path = item.rpartition(":")
        if not sep or not local or not path:
            raise UsageError(f"--input {item!r}: expected FILE:PATH")
        specs.append((Path(local).expanduser(), path))
    if not specs:
        return
    with _client(args) as client:
        for local, path in specs:
            result = put_file(client, args, local, "")
            request.inputs.append(apb.ArtifactInput(
                path=path, digest=apb.Digest(sha256=result["sha256"],
                                             size_bytes=result["size_bytes"])))


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]",
               global_flags: Callable[[argparse.ArgumentParser, bool], None]) -> None:
    p = sub.add_parser("artifacts", help="store and fetch artifacts (files named by sha256)",
                       description="Store and fetch artifacts: files named by their sha256.")
    actions = p.add_subparsers(dest="artifact_action", metavar="ACTION", required=True)

    def action(name: str, run: Callable[[argparse.Namespace], int],
               help_text: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help_text, description=help_text)
        global_flags(a, True)
        a.add_argument("--json", action="store_true", help="one JSON object (line) per item")
        a.set_defaults(run=run)
        return a

    a = action("put", cmd_put, "upload FILE (resumable; nothing is sent if the hub has it)")
    a.add_argument("file", metavar="FILE")
    a.add_argument("--name", help="the name to pin it by (default: the file's name; '' none)")
    a.add_argument("--progress", action="store_true", help="show the progress bar anyway")
    a = action("get", cmd_get, "download an artifact by NAME or SHA256 (checked)")
    a.add_argument("target", metavar="NAME|SHA256")
    a.add_argument("-o", "--output", metavar="FILE", help="where (default: the name)")
    a.add_argument("--progress", action="store_true", help="show the progress bar anyway")
    a = action("ls", cmd_ls, "list artifacts, most recently used first")
    a.add_argument("--limit", type=UINT32, default=0, help="at most N (hub default 1000)")
    a = action("rm", cmd_rm, "drop a name (or every name of a SHA256)")
    a.add_argument("target", metavar="NAME|SHA256")
    a = action("gc", cmd_gc, "collect expired references and unreferenced bytes (admin)")
    a.add_argument("--dry-run", action="store_true", help="only say what would go")

"""Precision and recall of the prompt detector over the golden corpus.

``python -m tests.corpus.score [-v]`` prints the figures (and, with ``-v``, every miss
and every false alarm). An expected event matches a produced one of the same kind whose
offset is within :data:`OFFSET_TOLERANCE` bytes; each produced event matches at most
one expected event. Expectations marked ``kernel_only`` are not scored without the kernel
layer (see ``capture.py``).

``tests/corpus/kernel/`` holds transcripts cut where a real program waited and only the
kernel could tell, with what /proc showed then (``kernel.json``, the shape of
``nodeagent detect --kernel``). They are scored twice: without the kernel layer (the
wait at the end unscored, as above), and with it — the facts reach the replay's last
quiet tick through the live layer's own rule, and the wait at the end (``any_wait``:
any waiting kind) is scored. The figures: the pattern corpus alone, the kernel corpus
without and with the kernel layer, and all transcripts without and with it; and, to
say what the pattern layers reach alone on the waits only the kernel is sure of, the
kernel corpus and all transcripts with those waits scored without kernel facts
("patterns only").

``tests/corpus/heldout/`` (``heldout_capture.py``) holds real programs cut where they
stopped, each cut labelled waiting or not by how it was made, with /proc at the cut. Every
wait there is scored, without the kernel layer and with it (``any_wait``); earlier waits of
the same run (``prior``) only absorb a detection. ``--heldout`` prints only its figures;
"whole corpus" adds it to all of the above, every wait scored (the goals in
tests/unit/test_prompt_corpus.py).
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nodeagent.detect.events import (
    CONFIRM,
    INPUT_REQUIRED,
    PAGER,
    PASSWORD,
    REPL,
    Detection,
    KernelFacts,
)
from nodeagent.detect.kernel import facts_from_record
from nodeagent.detect.transcript import replay_file
from tests.corpus.capture import NONCE

CORPUS = Path(__file__).parent / "prompts"
KERNEL_CORPUS = Path(__file__).parent / "kernel"
HELDOUT = Path(__file__).parent / "heldout"
WAIT_KINDS = frozenset({INPUT_REQUIRED, PASSWORD, CONFIRM, PAGER, REPL})
OFFSET_TOLERANCE = 64


@dataclass
class Score:
    files: int = 0
    expected: int = 0
    produced: int = 0
    matched: int = 0
    kernel_only: int = 0
    misses: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.matched / self.produced if self.produced else 1.0

    @property
    def recall(self) -> float:
        return self.matched / self.expected if self.expected else 1.0


def expected_of(path: Path) -> list[dict[str, object]]:
    lines = path.with_suffix("").with_suffix(".expected.jsonl").read_text().splitlines()
    return [obj for line in lines if line.strip() and not (obj := json.loads(line)).get("meta")]


def _kinds(exp: dict[str, object]) -> frozenset[str]:
    return WAIT_KINDS if exp.get("any_wait") or exp.get("prior") else frozenset({str(exp["kind"])})


def score_file(raw: Path, score: Score, facts: KernelFacts | None = None,
               waits: bool = False) -> None:
    produced: list[Detection] = replay_file(raw, NONCE, kernel=facts)[0]
    expected = expected_of(raw.with_suffix(".expected.jsonl"))
    score.files += 1
    score.produced += len(produced)
    used: set[int] = set()

    def unscored(exp: dict[str, object]) -> bool:
        if exp.get("prior"):  # an earlier wait of a held-out run: scored in its own cut
            return True
        return bool(exp.get("kernel_only")) and not ((facts is not None or waits)
                                                     and exp.get("any_wait"))
    # Scored expectations take their events first; an unscored one only takes what is left.
    for exp in sorted(expected, key=unscored):
        hit = next((i for i, d in enumerate(produced) if i not in used
                    and d.kind in _kinds(exp)
                    and abs(d.offset - int(str(exp["offset"]))) <= OFFSET_TOLERANCE), None)
        if unscored(exp):
            score.kernel_only += 1
            if hit is not None:  # found anyway (a REPL's prompt pattern): neither way scored
                used.add(hit)
                score.produced -= 1
            continue
        score.expected += 1
        if hit is None:
            score.misses.append(f"{raw.stem}: {exp['kind']} at {exp['offset']}")
        else:
            used.add(hit)
            score.matched += 1
    for i, d in enumerate(produced):
        if i not in used:
            score.false_alarms.append(f"{raw.stem}: {d.kind}/{d.detector}/{d.rule} at {d.offset}"
                                      f" {d.excerpt[-60:]!r}")


def kernel_records(corpus: Path = KERNEL_CORPUS) -> dict[str, dict[str, object]]:
    index = corpus / "kernel.json"
    return json.loads(index.read_text()) if index.exists() else {}


def score_corpus(corpus: Path = CORPUS, kernel: bool = False,
                 score: Score | None = None, waits: bool = False) -> Score:
    """``kernel``: give each file its recorded /proc facts (``kernel.json``) if any;
    ``waits``: score the wait at the end of a kernel cut without them too (what the
    pattern layers alone find of the waits only the kernel is sure of)."""
    score = score if score is not None else Score()
    records = kernel_records(corpus) if kernel else {}
    for raw in sorted(corpus.glob("*.raw")):
        record = records.get(raw.name)
        score_file(raw, score, facts_from_record(record) if record is not None else None,
                   waits)
    return score


def whole(kernel: bool) -> Score:
    """Every transcript, every wait scored: without the kernel layer (the kernel cuts'
    waits scored on the patterns alone) or with it."""
    s = score_corpus(CORPUS)
    score_corpus(KERNEL_CORPUS, kernel=kernel, score=s, waits=True)
    return score_corpus(HELDOUT, kernel=kernel, score=s)


def heldout_figures() -> list[tuple[str, Score]]:
    return [("held-out, no kernel layer", score_corpus(HELDOUT)),
            ("held-out, kernel layer", score_corpus(HELDOUT, kernel=True))]


def figures() -> list[tuple[str, Score]]:
    both_without = score_corpus(CORPUS)
    score_corpus(KERNEL_CORPUS, score=both_without)
    both_with = score_corpus(CORPUS)
    score_corpus(KERNEL_CORPUS, kernel=True, score=both_with)
    both_waits = score_corpus(CORPUS)
    score_corpus(KERNEL_CORPUS, score=both_waits, waits=True)
    return [("pattern corpus", score_corpus(CORPUS)),
            ("kernel corpus, no kernel layer", score_corpus(KERNEL_CORPUS)),
            ("kernel waits, patterns only", score_corpus(KERNEL_CORPUS, waits=True)),
            ("all, waits scored, patterns only", both_waits),
            ("kernel corpus, kernel layer", score_corpus(KERNEL_CORPUS, kernel=True)),
            ("all, no kernel layer", both_without), ("all, kernel layer", both_with),
            *heldout_figures(),
            ("whole corpus, no kernel layer", whole(False)),
            ("whole corpus, kernel layer", whole(True))]


def main(argv: list[str]) -> int:
    for label, s in (heldout_figures() if "--heldout" in argv else figures()):
        print(f"{label:32} files {s.files:3}  expected {s.expected:3} "
              f"(+{s.kernel_only} not scored)  produced {s.produced:3}  "
              f"matched {s.matched:3}  precision {s.precision:.3f}  recall {s.recall:.3f}")
        if "-v" in argv:
            for m in s.misses:
                print("  miss:", m)
            for f in s.false_alarms:
                print("  false alarm:", f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

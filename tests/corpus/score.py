"""Precision and recall of the prompt detector over the golden corpus.

``python -m tests.corpus.score [-v]`` prints the figures (and, with ``-v``, every miss
and every false alarm). An expected event matches a produced one of the same kind whose
offset is within :data:`OFFSET_TOLERANCE` bytes; each produced event matches at most
one expected event. Expectations marked ``kernel_only`` are not scored (the kernel layer
cannot apply to a file; see ``capture.py``).
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nodeagent.detect.events import Detection
from nodeagent.detect.transcript import replay_file
from tests.corpus.capture import NONCE

CORPUS = Path(__file__).parent / "prompts"
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


def score_file(raw: Path, score: Score) -> None:
    produced: list[Detection] = replay_file(raw, NONCE)[0]
    expected = expected_of(raw.with_suffix(".expected.jsonl"))
    score.files += 1
    score.produced += len(produced)
    used: set[int] = set()
    for exp in expected:
        if exp.get("kernel_only"):
            score.kernel_only += 1
            continue
        score.expected += 1
        hit = next((i for i, d in enumerate(produced) if i not in used
                    and d.kind == exp["kind"]
                    and abs(d.offset - int(str(exp["offset"]))) <= OFFSET_TOLERANCE), None)
        if hit is None:
            score.misses.append(f"{raw.stem}: {exp['kind']} at {exp['offset']}")
        else:
            used.add(hit)
            score.matched += 1
    for i, d in enumerate(produced):
        if i not in used:
            score.false_alarms.append(f"{raw.stem}: {d.kind}/{d.detector}/{d.rule} at {d.offset}"
                                      f" {d.excerpt[-60:]!r}")


def score_corpus(corpus: Path = CORPUS) -> Score:
    score = Score()
    for raw in sorted(corpus.glob("*.raw")):
        score_file(raw, score)
    return score


def main(argv: list[str]) -> int:
    s = score_corpus()
    print(f"files {s.files}  expected {s.expected} (+{s.kernel_only} kernel-only, not scored)  "
          f"produced {s.produced}  matched {s.matched}  "
          f"precision {s.precision:.3f}  recall {s.recall:.3f}")
    if "-v" in argv:
        for m in s.misses:
            print("miss:", m)
        for f in s.false_alarms:
            print("false alarm:", f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

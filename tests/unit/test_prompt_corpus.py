"""The golden prompt corpus (tests/corpus/prompts): precision and recall of the detector.

Each ``NAME.raw`` was captured from a real PTY by ``tests/corpus/capture.py`` beside its
reads and its expected events (written from the scenario, not from the detector).
Transcripts cannot ask the kernel, so weak patterns are expected not to fire in them and
``kernel_only`` expectations are not scored (see capture.py).
"""

from pathlib import Path

from tests.corpus.score import CORPUS, score_corpus

MIN_PRECISION = 0.98
MIN_RECALL = 0.95


def test_corpus_has_at_least_80_transcripts_each_with_expectations() -> None:
    raws = sorted(CORPUS.glob("*.raw"))
    assert len(raws) >= 80
    for raw in raws:
        assert raw.with_suffix(".expected.jsonl").exists(), raw.name
        assert raw.with_suffix(".reads").exists(), raw.name
    negatives = [r for r in raws if r.name.startswith("neg-")]
    assert len(negatives) >= 20


def test_precision_and_recall() -> None:
    s = score_corpus()
    detail = "\n".join([*(f"miss: {m}" for m in s.misses),
                        *(f"false alarm: {f}" for f in s.false_alarms)])
    assert s.precision >= MIN_PRECISION, detail
    assert s.recall >= MIN_RECALL, detail


def test_hard_negatives_raise_nothing() -> None:
    from nodeagent.detect.transcript import replay_file
    from tests.corpus.capture import NONCE
    for raw in sorted(Path(CORPUS).glob("neg-*.raw")):
        assert replay_file(raw, NONCE)[0] == [], raw.name

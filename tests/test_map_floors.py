"""MAP floors on the 10,000-product offline index: CI catches a real ranking regression.

The index is the one ``make run`` serves (the first 10,000 offline products, the configured
offline models ``fashion-lit-minilm`` + ``splade-tiny-offline``), built here through the real
reindex pipeline into this module's own database; the evaluation is the reported one
(``fashion-search eval``: the test half of every family, query understanding in its
held-out configuration "split", query set seed 0).

``MEASURED`` holds MAP@10 of family "all" per mode at the service's default alphas, the lower
of two fresh builds and evaluations of this very test on 2026-12-06 (query set
qs3-89bb799e51). Two builds of the same code do not rank identically (measured; the likely
cause: HNSW graphs built by parallel workers differ from build to build, and so do the
answers the certificate cannot prove exact; issue #25) (fresh builds: hybrid 0.740 / 0.739, sparse 0.647 / 0.643, photo + text 0.770 / 0.770; the
``make run`` index of the same products, run 7: 0.741, 0.642, 0.781). Each floor sits
``MARGIN`` under its measured value: above that spread, close enough that a real regression
(a filter, a weight, a tokeniser, an understanding rule gone wrong) fails. The 200-product
floors of test_evaluation.py stay: they check plumbing on a tiny index, these check quality.
"""

from __future__ import annotations

import pytest

from evaluation.summary import value
from services.config import get_settings

SIZE = 10_000
MARGIN = 0.02
MEASURED = {  # mode -> MAP@10 of family "all" at the mode's alpha (ALPHA)
    "dense": 0.604,  # CLIP alone
    "sparse": 0.643,  # SPLADE alone
    "hybrid": 0.739,  # text queries, understood
    "literal": 0.459,  # text queries as typed (no understanding)
    "multi": 0.770,  # photo + text, understood
    "multi_literal": 0.738,  # photo + text as typed
}
TEXT_ALPHA, PHOTO_ALPHA = 0.5, 0.8  # the service's defaults (text; photo + text)
ALPHA = {"dense": 1.0, "sparse": 0.0, "hybrid": TEXT_ALPHA, "literal": TEXT_ALPHA}
ALPHA |= {"multi": PHOTO_ALPHA, "multi_literal": PHOTO_ALPHA}


@pytest.fixture(scope="module")
def ten_thousand(settings):
    from services.pipeline.reindex import run_reindex

    s = get_settings()
    assert (s.dense_model, s.sparse_model) == ("fashion-lit-minilm", "splade-tiny-offline"), (
        "the floors were measured with the offline default models"
    )
    report = run_reindex(source="offline", size=SIZE)
    assert report["status"] == "success", report.get("error")
    return report


@pytest.mark.slow
def test_every_mode_stays_above_its_measured_map(ten_thousand, conn):
    from evaluation.run import evaluate
    from services.store import evaluations as storage

    outcome = evaluate(conn, alphas=[0.0, TEXT_ALPHA, 1.0], fast_recall_queries=0)
    run = storage.get_run(conn, outcome.run_id)
    rows = storage.metrics_for(conn, run.id)
    conn.commit()
    assert run.status == "succeeded"
    assert (run.details["default_alpha"], run.details["default_alpha_multi"]) == (
        TEXT_ALPHA,
        PHOTO_ALPHA,
    )
    assert run.details["split"] == "test" and run.details["understanding"]["config"] == "split"
    assert outcome.query_set.version == "qs3-89bb799e51", "another query set: re-measure"
    got = {mode: value(rows, mode, ALPHA[mode]) for mode in MEASURED}
    assert None not in got.values(), got
    below = {
        mode: (round(got[mode], 4), measured)
        for mode, measured in MEASURED.items()
        if got[mode] < measured - MARGIN
    }
    assert not below, f"MAP@10 (got, measured) under measured - {MARGIN}: {below}; all: {got}"

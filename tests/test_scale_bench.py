"""`pioneer bench scale`'s own measuring parts: the traces it generates, the memory it samples, the growth it fits.

The benchmark's figures go into the README, so what produces them is held to its definition here (the runs
themselves take an hour and are not tests).
"""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest

from pioneer.bench import scale
from pioneer.traces import store as trace_store

CORPUS = [(f"please do thing number {i}", f"intent_{i % 5}") for i in range(200)]
INTENTS = sorted({y for _, y in CORPUS})


def test_generated_traces_are_judged_rows_the_store_imports_with_the_shares_asked_for(tmp_path):
    path = tmp_path / "traces.jsonl"
    counts = scale.generate(path, 2_000, CORPUS, INTENTS, seed=0, failure_share=0.15, poison=0.05)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert counts["traces"] == len(rows) == 2_000
    failing = [r for r in rows if r["verdict"] == "fail"]
    assert counts["failing"] == len(failing) and 0.12 < len(failing) / 2_000 < 0.18
    assert all(r["prediction"] != r["corrected"] for r in failing)
    assert all(r["prediction"] == r["corrected"] for r in rows if r["verdict"] == "pass")
    assert 0 < counts["poisoned"] < 2_000 * 0.15
    engine = trace_store.connect(tmp_path / "traces.db")
    assert trace_store.import_file(engine, path).added == 2_000
    assert trace_store.count_failures(engine, f"{scale.DEPLOYED}@1") == counts["failing"]
    # the next ids continue where the first file stopped: the incremental traces are new rows, not duplicates
    scale.generate(tmp_path / "new.jsonl", 20, CORPUS, INTENTS, seed=0, failure_share=0.15, poison=0.05, start=2_000)
    assert trace_store.import_file(engine, tmp_path / "new.jsonl").added == 20


def _hold(megabytes: int, seconds: float) -> None:
    block = bytearray(megabytes * 2**20)
    for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[i] = 1
    time.sleep(seconds)


def test_the_memory_sampler_counts_the_worker_processes_a_measurement_starts():
    sampler = scale.TreeRss(interval=0.05)
    sampler.start()
    worker = multiprocessing.get_context("spawn").Process(target=_hold, args=(300, 1.5))
    worker.start()
    worker.join()
    peak = sampler.stop()
    assert not sampler.is_alive()
    assert peak >= 300 * 2**20 + 20 * 2**20  # the worker's 300 MB, and this process besides


def test_the_fitted_exponent_is_the_slope_of_cost_against_size_on_log_scales():
    ns = [10_000, 100_000, 1_000_000]
    assert scale.exponent(ns, [2.0 * n for n in ns]) == pytest.approx(1.0)
    assert scale.exponent(ns, [5.0 * n ** 0.5 for n in ns]) == pytest.approx(0.5)
    assert scale.exponent([10], [1.0]) is None


def test_the_growth_table_lists_every_n_and_names_the_ones_that_failed():
    runs = {"10000": {"traces": 10_000, "import_rows_per_second": 60_000.0, "import_seconds": 0.2, "prepare_seconds": 100.0,
                      "peak_rss_bytes": 2**30, "peak_rss_tree_bytes": 2**31, "incremental_prepare_seconds": 2.0,
                      "incremental_share_of_first": 0.02},
            "100000": {"traces": 100_000, "error": "over --timeout 60 s"}}
    table = scale.growth_table(runs)
    assert "| 10,000 | 60,000 | 100.0 | 1,024 (2,048) | 2.0 (2%) |" in table
    assert "| 100,000 | failed: over --timeout 60 s" in table

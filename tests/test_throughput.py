"""``xmlbench bench throughput``: the FLOP count behind MFU, the epoch estimates, the clustered overhead, the
README block, the sweep's order, its row-by-row saving and time budget, ``--from-saved``, and one real CPU
row per head (tiny encoder). No speed is asserted: the figures are reported."""

from __future__ import annotations

import re
from dataclasses import asdict

import pytest
import torch

from xmlbench.benchmarks import throughput as tp


def test_recipe_rows_take_the_original_hyper_parameters_from_the_manifests():
    assert tp.recipe_case("amazon670k") == tp.Case(128, "clustered", 670_091, 16, hidden=400, top_b=75,
                                                  recipe="amazon670k")
    assert tp.recipe_case("wiki500k") == tp.Case(128, "clustered", 501_070, 32, hidden=500, top_b=32,
                                                recipe="wiki500k")


def test_epoch_estimate_by_hand():
    # 490,449 training documents less the original's 4,000 held out, at 486,449 / 3,600 docs/s: one hour;
    # the recipe is 20 epochs (15 + 5) x 3 clusterings
    row = {"recipe": "amazon670k", "train_docs_per_s": 486_449 / 3600}
    e = tp.epoch_estimate(row)
    assert e["epoch_hours"] == pytest.approx(1.0) and e["recipe_hours"] == pytest.approx(60.0)
    assert (e["epochs"], e["original_hours"]) == (20, 159.0)
    wiki = tp.epoch_estimate({"recipe": "wiki500k", "train_docs_per_s": 1_775_881 / 7200})
    assert wiki["epoch_hours"] == pytest.approx(2.0) and wiki["recipe_hours"] == pytest.approx(2.0 * 15 * 3)


def _row(mode, max_len, batch, docs_s, update="dense", compile=False, recipe="", status="ok"):
    return {"mode": mode, "max_len": max_len, "batch_size": batch, "train_docs_per_s": docs_s,
            "label_update": update, "compile": compile, "recipe": recipe, "status": status}


def test_clustered_overhead_pairs_rows_of_the_same_length_and_batch_only():
    rows = [_row("flat", 512, 16, 100.0), _row("clustered", 512, 16, 80.0),
            _row("clustered", 512, 16, 50.0, update="sparse"),  # not the dense head: not paired
            _row("flat", 512, 64, 300.0, compile=True), _row("clustered", 512, 64, 200.0),  # no plain flat row
            _row("flat", 128, 64, 100.0), _row("clustered", 128, 64, None, status="out of memory")]
    assert tp.clustered_overhead(rows) == [{"max_len": 512, "batch_size": 16, "overhead": pytest.approx(0.25)}]


def test_flops_per_doc_match_a_hand_count_of_the_tiny_encoder():
    from xmlbench.encoders import load_encoder
    from xmlbench.models.lightxml.model import LightXMLConfig, LightXMLNet

    enc = load_encoder("tiny", seed=0)
    c = enc.model.config
    h, i, layers, T = c.hidden_size, c.intermediate_size, c.num_hidden_layers, 32
    # one BERT layer: Q, K, V, output projections; two LayerNorms; the feed-forward pair
    per_layer = 4 * (h * h + h) + 2 * 2 * h + (h * i + i) + (i * h + h)
    body = layers * per_layer
    # the pooler (if the encoder has one) runs forward on one token and gets no gradient: 2 FLOPs a weight
    pooler = 2 * (h * h + h) if getattr(enc.model, "pooler", None) is not None else 0
    attention = 12 * layers * T * T * h + pooler
    flat = LightXMLNet(enc.model, enc.hidden_size, enc.cls_position, 50, LightXMLConfig(encoder="tiny"), None)
    assert tp.training_flops_per_doc(enc.model, T, flat, "flat") == 6 * body * T + attention + 6 * 5 * h * 50

    cfg = LightXMLConfig(encoder="tiny", mode="clustered", hidden=24, top_b=3, leaf_size=4)
    clusters = tp.random_clusters(60, cfg.leaf_size)
    net = LightXMLNet(enc.model, enc.hidden_size, enc.cls_position, 60, cfg, clusters)
    k, leaf = net.generator.out_features, net.cluster_labels.shape[1]
    assert (k, leaf) == (16, 4)  # 60 / 4 = 15 leaves, rounded up to a power of two
    head = 6 * 5 * h * k + 6 * 5 * h * 24 + 6 * 3 * leaf * 24
    assert tp.training_flops_per_doc(enc.model, T, net, "clustered") == 6 * body * T + attention + head


@pytest.mark.parametrize("case", [tp.Case(32, "flat", 40, 4), tp.Case(32, "clustered", 300, 4, hidden=16, top_b=4),
                                  tp.Case(32, "clustered", 300, 4, hidden=16, top_b=4, label_update="sparse")])
def test_one_real_row_per_head_on_the_cpu(case):
    row = tp.run_case(case, steps=2, encoder="tiny", amp="off")
    assert row["status"] == "ok" and row["device"] == "cpu"
    # the update the network built, read back from it (not the option echoed)
    assert row["label_update"] == (case.label_update if case.mode == "clustered" else None)
    assert row["train_docs_per_s"] > 0 and row["predict_docs_per_s"] > 0
    assert row["mfu"] is None and row["peak_gpu_memory_gib"] is None  # no peak to divide by, no GPU memory
    assert (row["mode"], row["n_labels"], row["batch_size"]) == (case.mode, case.n_labels, case.batch_size)


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12), ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H200 NVL", 835e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("Tesla V100-SXM2-16GB", None), ("cpu", None),
])
def test_peak_flops_by_device_name(name, peak):
    assert tp.peak_bf16_flops(name) == peak


def test_mfu_is_docs_per_second_times_flops_over_the_devices_peak(monkeypatch):
    monkeypatch.setattr(tp, "peak_bf16_flops", lambda name: 1e9)
    row = tp.run_case(tp.Case(16, "flat", 30, 2), steps=2, encoder="tiny", amp="off")
    assert row["mfu"] == pytest.approx(row["train_docs_per_s"] * row["train_flops_per_doc"] / 1e9, rel=0.01)


def test_prediction_out_of_memory_keeps_the_training_figures(monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(tp, "time_prediction", oom)
    row = tp.run_case(tp.Case(16, "flat", 30, 2), steps=2, encoder="tiny", amp="off")
    assert row["status"] == "ok (predict out of memory at batch 8)"
    assert row["train_docs_per_s"] > 0 and row["predict_docs_per_s"] is None


def test_a_case_out_of_device_memory_is_a_row_not_the_end_of_the_sweep(monkeypatch):
    def oom(**kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(tp, "bench_throughput", oom)
    result = tp.sweep(steps=1, cases=[tp.Case(512, "flat", 10, 4096), tp.recipe_case("amazon670k")])
    assert [r["status"] for r in result["rows"]] == ["out of memory"] * 2
    assert result["estimates"] == [] and result["overheads"] == []
    table = tp.format_rows(result)
    assert table.count("out of memory") == 2 and "| - |" in table


def test_a_case_that_fails_says_why_in_its_row(monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("inductor: no kernel\nsecond line")

    monkeypatch.setattr(tp, "bench_throughput", broken)
    (row,) = tp.sweep(steps=1, cases=[tp.Case(512, "flat", 10, 4, compile=True)])["rows"]
    assert row["status"] == "failed: RuntimeError: inductor: no kernel"


def test_the_readme_block_gives_overhead_estimates_and_elmo_beside_the_table():
    rows = [
        {**_row("flat", 512, 16, 400.0), "n_labels": 3956, "hidden": 400, "top_b": 75, "mfu": 0.41,
         "predict_docs_per_s": 3000.0, "peak_gpu_memory_gib": 5.0, "device": "NVIDIA H200", "precision": "bf16",
         "parameters_m": 112.0},
        {**_row("clustered", 512, 16, 350.0), "n_labels": 670091, "hidden": 400, "top_b": 75, "mfu": 0.36,
         "predict_docs_per_s": 2900.0, "peak_gpu_memory_gib": 9.0, "device": "NVIDIA H200", "precision": "bf16",
         "parameters_m": 380.0},
        {**_row("clustered", 128, 16, 486_449 / 3600, recipe="amazon670k"), "n_labels": 670091, "hidden": 400,
         "top_b": 75, "mfu": 0.2, "predict_docs_per_s": 9000.0, "peak_gpu_memory_gib": 6.25,
         "device": "NVIDIA H200", "precision": "bf16", "parameters_m": 380.0},
    ]
    result = {"device": "NVIDIA H200", "encoder": "bert-base-random", "steps": 20, "rows": rows,
              "estimates": [tp.epoch_estimate(rows[2])], "overheads": tp.clustered_overhead(rows)}
    text = tp.format_rows(result)
    assert "| 512 | flat | 3,956 | 16 | - | no | 400 | 41.0% | 3,000 | 5.0 | ok |" in text
    assert "clustered head over flat at max_len 512, batch 16: +14% time per step" in text
    assert "amazon670k: one epoch (486,449 documents) 1.0 h; the recipe (20 epochs x 3 clusterings) 60 h" in text
    assert "~159 h on 8 V100s, not saying for how many models); train peak memory 6.25 GiB (ELMO reports 5.68" in text


@pytest.mark.parametrize("argv, message", [
    (["bench", "throughput", "congress"], "takes no dataset"),
    (["bench", "throughput"], "none is visible"),
])
def test_command_line_errors_are_one_line(argv, message, capsys, monkeypatch):
    from xmlbench.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_readme_has_the_block_the_benchmark_writes():
    from xmlbench.benchmarks import readme_text
    from xmlbench.paths import CHECKOUT_ROOT

    readme_text(CHECKOUT_ROOT / "README.md", tp.README_BEGIN, tp.README_END)  # raises without its markers


def _measured(case):
    return {**asdict(case), "status": "ok", "device": "NVIDIA H200", "precision": "bf16",
            "train_docs_per_s": 100.0, "predict_docs_per_s": 1000.0, "mfu": 0.4, "peak_gpu_memory_gib": 5.0}


def test_the_sweep_saves_each_row_as_it_finishes_so_a_kill_keeps_them(tmp_path, monkeypatch):
    from xmlbench.io import read_json

    cases = [tp.Case(512, "flat", 3956, 16), tp.Case(512, "clustered", 670_091, 16), tp.Case(128, "flat", 3956, 64)]
    done = []

    def run_then_die(case, *args):
        if len(done) == 2:
            raise KeyboardInterrupt  # what a kill in the third row leaves behind
        done.append(case)
        return _measured(case)

    monkeypatch.setattr(tp, "run_case", run_then_die)
    save = tmp_path / "throughput.json"
    with pytest.raises(KeyboardInterrupt):
        tp.sweep(steps=1, cases=cases, save=save)
    saved = read_json(save)
    assert [(r["max_len"], r["mode"]) for r in saved["rows"]] == [(512, "flat"), (512, "clustered")]
    assert (saved["complete"], saved["cases"]) == (False, 3)
    assert saved["overheads"] == [{"max_len": 512, "batch_size": 16, "overhead": 0.0}]
    assert "The sweep was stopped after 2 of its 3 cases" in tp.format_rows(saved)


def test_cases_not_started_within_the_budget_are_rows_that_say_so(monkeypatch):
    clock = iter([0.0, 0.0, 30.0, 31.0])  # start; before case 1; before case 2 (past 20 s); before case 3
    monkeypatch.setattr(tp.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(tp, "run_case", lambda case, *args: _measured(case))
    cases = [tp.Case(512, "flat", 3956, 16), tp.Case(512, "clustered", 670_091, 16), tp.recipe_case("amazon670k")]
    result = tp.sweep(steps=1, cases=cases, budget_s=20)
    assert [r["status"] for r in result["rows"]] == ["ok", tp.NOT_RUN, tp.NOT_RUN]
    assert result["complete"] and result["estimates"] == []  # the recipe row never ran: no estimate from it
    table = tp.format_rows(result)
    assert table.count(tp.NOT_RUN) == 2 and "stopped" not in table


def test_the_sweep_puts_both_heads_at_both_lengths_and_the_recipes_first_and_compiles_last():
    cases = tp.sweep_cases()
    first = {(c.max_len, c.mode) for c in cases[:4]}
    assert first == {(512, "flat"), (512, "clustered"), (128, "flat"), (128, "clustered")}
    assert {c.recipe for c in cases[4:6]} == {"amazon670k", "wiki500k"}
    compiled = [c for c in cases if c.compile]
    assert {c.mode for c in compiled} == {"flat", "clustered"} and cases[-len(compiled):] == compiled


def _checkout_with_readme(tmp_path, monkeypatch):
    from xmlbench import paths

    monkeypatch.setattr(paths, "CHECKOUT_ROOT", tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{tp.README_BEGIN}\nold\n{tp.README_END}\nafter\n")
    return readme


def test_from_saved_writes_the_block_of_a_sweep_run_elsewhere_without_measuring(tmp_path, monkeypatch, capsys):
    from xmlbench.benchmarks import readme_text
    from xmlbench.cli import main
    from xmlbench.io import write_json

    readme = _checkout_with_readme(tmp_path, monkeypatch)
    monkeypatch.setattr(tp, "sweep", lambda **kw: pytest.fail("--from-saved measured"))
    monkeypatch.setattr(tp, "run_case", lambda case, *args: _measured(case))
    result = tp.summarise([_measured(tp.Case(512, "flat", 3956, 16))], 20, "bert-base-random", 13)
    write_json(tmp_path / tp.RESULTS, result)
    assert main(["bench", "throughput", "--from-saved", "--readme"]) == 0
    block = readme_text(readme, tp.README_BEGIN, tp.README_END)
    assert block.strip() == tp.format_rows(result).strip() and "| 512 | flat | 3,956 | 16 |" in block
    assert "stopped after 1 of its 13 cases" in block and readme.read_text().endswith("after\n")


def _saved_with(row=None, **top):
    import json

    good = tp.summarise([_measured(tp.recipe_case("amazon670k"))], 20, "bert-base-random", 13)
    good["rows"][0].update(row or {})
    return json.dumps({**good, **top})


@pytest.mark.parametrize("saved, message", [
    (None, "--from-saved: no .*throughput.json; run `xmlbench bench throughput` on a GPU"),
    ('{"device": "x", "encoder', "throughput.json: damaged or truncated"),
    ('[1, 2]', "throughput.json: damaged: expected a JSON object"),
    ('{"device": "", "encoder": "e", "steps": 1, "rows": [{"status": "ok"}], "estimates": [], "overheads": []}',
     r"throughput.json: cannot be shown in the README block \(KeyError: 'mode'\); measure it again or delete it"),
    ('{"device": "", "encoder": "e", "steps": 1, "rows": {"a": 1}, "estimates": [], "overheads": []}',
     r"throughput.json: cannot be shown in the README block \(TypeError"),
    (_saved_with({"status": 5}), r"cannot be shown in the README block \(AttributeError"),
    (_saved_with({"n_labels": "x"}), r"cannot be shown in the README block \(ValueError"),
    (_saved_with({"train_docs_per_s": "fast"}), r"cannot be shown in the README block \(ValueError"),
    (_saved_with(estimates=[{}]), r"cannot be shown in the README block \(KeyError"),
    (_saved_with(overheads=[1]), r"cannot be shown in the README block \(TypeError"),
])
def test_from_saved_without_a_good_saved_sweep_is_one_line(saved, message, tmp_path, monkeypatch, capsys):
    from xmlbench.cli import main

    readme = _checkout_with_readme(tmp_path, monkeypatch)
    if saved is not None:
        (tmp_path / tp.RESULTS).parent.mkdir(parents=True)
        (tmp_path / tp.RESULTS).write_text(saved)
    before = readme.read_text()
    assert main(["bench", "throughput", "--from-saved", "--readme"]) != 0
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert readme.read_text() == before


def test_from_saved_takes_the_file_put_there_last(tmp_path, monkeypatch):
    import os

    from xmlbench.benchmarks import readme_text
    from xmlbench.cli import main
    from xmlbench.io import write_json

    readme = _checkout_with_readme(tmp_path, monkeypatch)
    finished = tp.summarise([_measured(tp.Case(512, "flat", 3956, 16))], 20, "bert-base-random", 1)
    cut_short = tp.summarise([_measured(tp.Case(128, "flat", 3956, 64))], 20, "bert-base-random", 13)
    write_json(tmp_path / tp.RESULTS, finished)
    write_json(tmp_path / tp.PARTIAL, cut_short)
    for older, newer in ((tp.RESULTS, tp.PARTIAL), (tp.PARTIAL, tp.RESULTS)):
        os.utime(tmp_path / older, (1_000_000, 1_000_000))
        os.utime(tmp_path / newer, (2_000_000, 2_000_000))
        assert main(["bench", "throughput", "--from-saved", "--readme"]) == 0
        block = readme_text(readme, tp.README_BEGIN, tp.README_END)
        assert ("| 128 | flat |" in block) == (newer == tp.PARTIAL) and ("| 512 | flat |" in block) == (newer == tp.RESULTS)


class _Clock:
    """time.monotonic for the sweep; the fake measurement moves it on by ``per_row`` seconds a row."""

    def __init__(self, per_row):
        self.now, self.per_row = 0.0, per_row

    def __call__(self):
        return self.now


def test_the_command_writes_rows_to_the_partial_file_and_the_whole_sweep_at_the_end(tmp_path, monkeypatch):
    """--timeout reaches the sweep, rows go to throughput-partial.json as they finish, and throughput.json is
    written (the partial removed) only when the sweep ends."""
    from xmlbench.cli import main
    from xmlbench.io import read_json

    _checkout_with_readme(tmp_path, monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    clock = _Clock(per_row=100.0)
    monkeypatch.setattr(tp.time, "monotonic", clock)
    seen = []

    def measure(case, *args):
        partial = tmp_path / tp.PARTIAL
        seen.append(len(read_json(partial)["rows"]) if partial.is_file() else 0)
        assert not (tmp_path / tp.RESULTS).exists()
        clock.now += clock.per_row
        return _measured(case)

    monkeypatch.setattr(tp, "run_case", measure)
    assert main(["bench", "throughput", "--timeout", "150"]) == 0
    assert seen == [0, 1]  # the third case starts past 150 s: not run
    saved = read_json(tmp_path / tp.RESULTS)
    assert [r["status"] for r in saved["rows"]] == ["ok", "ok"] + [tp.NOT_RUN] * (len(tp.sweep_cases()) - 2)
    assert saved["complete"] and not (tmp_path / tp.PARTIAL).exists()


def test_a_killed_sweep_leaves_the_finished_one_before_it_whole(tmp_path, monkeypatch, capsys):
    from xmlbench.cli import main
    from xmlbench.io import read_json, write_json

    _checkout_with_readme(tmp_path, monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    earlier = tp.summarise([_measured(c) for c in tp.sweep_cases()], 20, "bert-base-random", len(tp.sweep_cases()))
    write_json(tmp_path / tp.RESULTS, earlier)
    calls = []

    def die_in_the_second_row(case, *args):
        calls.append(case)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return _measured(case)

    monkeypatch.setattr(tp, "run_case", die_in_the_second_row)
    assert main(["bench", "throughput"]) == 130
    assert read_json(tmp_path / tp.RESULTS) == earlier
    assert len(read_json(tmp_path / tp.PARTIAL)["rows"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the sweep's progress lines
    assert last.startswith("xmlbench: interrupted; a benchmark does not resume") and "--resume" not in last


@pytest.mark.parametrize("argv, message", [
    (["bench", "metrics", "--from-saved"], "--from-saved is an option of 'bench throughput' only"),
    (["bench", "throughput", "--from-saved", "--timeout", "9"], "--from-saved measures nothing, so --timeout"),
    (["bench", "throughput", "--from-saved", "--steps", "5"], "--from-saved measures nothing, so --timeout"),
    (["bench", "throughput", "--timeout", "inf"], "--timeout must be positive (seconds), got inf"),
    (["bench", "metrics", "--timeout", "5"], "--timeout is an option of 'bench scaling', 'bench tree-memory'"),
    (["bench", "throughput", "--timeout", "0"], "--timeout must be positive (seconds), got 0"),
    (["bench", "scaling", "--timeout", "nan"], "--timeout must be positive (seconds), got nan"),
    (["bench", "tree-memory", "--timeout", "-3"], "--timeout must be positive (seconds), got -3"),
])
def test_bench_option_errors_are_one_line(argv, message, capsys):
    from xmlbench.cli import main

    assert main(argv) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

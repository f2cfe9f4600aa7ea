"""Hostile input to every command: each case must exit non-zero (2 for what the user can fix, 1 for what
the machine refused), print exactly one error line naming the file, option or key at fault, print no
traceback, and leave every file that existed before exactly as it was (hashed before and after).

The CLI runs in-process (``xmlbench.cli.main`` with capsys); subprocesses only where a case needs a
second process (locks) or a process-wide limit (a full disk, simulated with RLIMIT_FSIZE). Shared
artefacts (a finished label-frequency run, a tiny LightXML run) are built once per module and only ever
read; cases that damage something damage their own copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import write_text_dataset
from xmlbench.cli import main

REPO = Path(__file__).resolve().parents[1]
NEURAL = [
    "--model",
    "lightxml",
    "--preset",
    "smoke",
    "--no-progress",
    "--set",
    "max_len=16",
    "--set",
    "epochs=1",
    "--set",
    "max_steps=1",
    "--set",
    "eval_batch_size=128",
    "--set",
    "checkpoint_every=0",
]


# ------------------------------------------------------------------------------------------ harness
@dataclass
class World:
    """Artefacts shared by every case (never modified by one): datasets and finished runs."""

    root: Path
    tiny: Path
    short: Path  # 2-word titles: many documents without TF-IDF features
    lf: Path  # finished label-frequency run on tiny, seed 0
    lf1: Path  # the same, seed 1 (an ensemble member)
    request: pytest.FixtureRequest = field(repr=False)

    def neural(self) -> Path:
        """A finished tiny LightXML run (built on first use: it costs a transformers import)."""
        return self.request.getfixturevalue("neural_run")


@dataclass(frozen=True)
class Case:
    """``make(world, tmp, monkeypatch)`` prepares the case in ``tmp`` and returns (argv, words the error
    line must contain)."""

    name: str
    make: Callable[..., tuple[list[str], list[str]]]
    code: int = 2


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under the roots (hidden ones too) -> a hash of its bytes."""
    out = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file() and not path.is_symlink():
                out[str(path)] = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals
        code = e.code if isinstance(e.code, int) else 2
    return code, capsys.readouterr().err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("xmlbench: ") or ": error:" in line]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_dataset, request) -> World:
    root = tmp_path_factory.mktemp("world")
    short = _short_titles(root / "short")
    for seed in (0, 1):
        assert (
            main(
                [
                    "train",
                    str(tiny_dataset),
                    "--model",
                    "label-frequency",
                    "--no-progress",
                    "--seed",
                    str(seed),
                    "--out",
                    str(root / f"lf{seed}"),
                ]
            )
            == 0
        )
    return World(
        root=root, tiny=tiny_dataset, short=short, lf=root / "lf0", lf1=root / "lf1", request=request
    )


@pytest.fixture(scope="module")
def neural_run(world) -> Path:
    out = world.root / "lightxml"
    assert main(["train", str(world.tiny), *NEURAL, "--out", str(out)]) == 0
    return out


def _short_titles(folder: Path, n_train: int = 60, n_test: int = 20) -> Path:
    """Two-word titles: one common word (kept by min_df=2) or a word seen once, then a word seen once; every
    seventh text empty. Many documents have no TF-IDF feature at all, on train and test."""
    common = ["red", "blue", "green", "fast", "slow", "big"]

    def rows(n: int, offset: int) -> list[tuple[str, str]]:
        out = []
        for i in range(offset, offset + n):
            first = common[i % 6] if i % 3 else f"rare{i}"
            labels = f"L{i % 4}" + (f" L{(i + 1) % 4}" if i % 5 == 0 else "")
            out.append(("" if i % 7 == 0 else f"{first} once{i}", labels))
        return out

    return write_text_dataset(folder, rows(n_train, 0), rows(n_test, 1000))


# ------------------------------------------------------------------------------------------ builders
def _train(*extra: str, model: str = "lightxml"):
    """A train command on tiny; the error must name ``words``."""

    def make(words: list[str]):
        def build(w: World, tmp: Path, mp):
            return [
                "train",
                str(w.tiny),
                "--model",
                model,
                "--no-progress",
                "--out",
                str(tmp / "run"),
                *extra,
            ], words

        return build

    return make


def _set(key_value: str, *words: str, model: str = "lightxml") -> Case:
    return Case(f"set-{model}-{key_value}", _train("--set", key_value, model=model)(list(words)))


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def _config_case(name: str, filename: str, content: bytes | str, *words: str) -> Case:
    def build(w: World, tmp: Path, mp):
        path = _write(tmp / filename, content)
        return [
            "train",
            str(w.tiny),
            "--model",
            "lightxml",
            "--config",
            str(path),
            "--out",
            str(tmp / "r"),
        ], [path.name, *words]

    return Case(name, build)


def _dataset_case(name: str, setup: Callable[[Path], list[str]], *extra: str, code: int = 2) -> Case:
    """``setup(folder)`` writes a (broken) dataset and returns the words the error must name."""

    def build(w: World, tmp: Path, mp):
        words = setup(tmp / "data")
        return [
            "train",
            str(tmp / "data"),
            "--model",
            "label-frequency",
            "--no-progress",
            "--out",
            str(tmp / "r"),
            *extra,
        ], words

    return Case(name, build, code)


def _text(
    folder: Path, train="a b\nc d\ne f\ng h\n", train_labels="x\ny\nx\ny\n", test="a c\n", test_labels="x\n"
) -> Path:
    for name, content in (
        ("train_texts.txt", train),
        ("train_labels.txt", train_labels),
        ("test_texts.txt", test),
        ("test_labels.txt", test_labels),
    ):
        if content is not None:
            _write(folder / name, content)
    return folder


def _bow(folder: Path, header: str, lines: tuple[str, ...]) -> Path:
    for split in ("train", "test"):
        _write(folder / f"{split}.txt", header + "\n" + "\n".join(lines) + "\n")
    return folder


def _copy_run(src: Path, dst: Path, parts: tuple[str, ...] | None = None) -> Path:
    if parts is None:
        shutil.copytree(src, dst)
        return dst
    dst.mkdir(parents=True)
    for part in parts:
        (shutil.copytree if (src / part).is_dir() else shutil.copy2)(src / part, dst / part)
    return dst


def _foreign(folder: Path, name: str = "notes.txt") -> Path:
    _write(folder / name, "the user's own file\n")
    return folder


# ------------------------------------------------------------------------------------------ cases
CONFIG_BOUNDS = [
    _set("batch_size=0", "batch_size", ">= 1"),
    _set("batch_size=-4", "batch_size", "-4"),
    _set("epochs=-1", "epochs"),
    _set("epochs=0", "epochs"),
    _set("max_len=0", "max_len"),
    _set("accumulate=0", "accumulate"),
    _set("swa_step=0", "swa_step"),
    _set("swa_warmup=-2", "swa_warmup"),
    _set("dropout=2", "dropout", "[0, 1)"),
    _set("encoder_dropout=1.5", "encoder_dropout"),
    _set("lr=NaN", "lr", "finite"),
    _set("lr=nan", "lr"),
    _set("lr=Infinity", "lr", "finite"),
    _set("lr=-0.1", "lr"),
    _set("weight_decay=-1", "weight_decay"),
    _set("eval_every=-1", "eval_every"),
    _set("eval_batch_size=0", "eval_batch_size"),
    _set("max_steps=-5", "max_steps"),
    _set("select_metric=P@7", "select_metric", "P@5"),
    _set("select_metric=PSP@5", "select_metric"),
    _set("device=gpu", "device"),
    _set("num_workers=100000", "num_workers"),
    _set("amp=fp8", "amp"),
    _set("top_b=0", "top_b"),
    _set("leaf_size=1", "leaf_size"),
    _set("hidden=0", "hidden"),
    _set("hidden=10000000", "hidden"),
    _set("cluster_seed=-1", "cluster_seed"),
    _set("mode=flatt", "mode"),
    _set("epochz=3", "epochz"),
    _set("se=3", "'se'", "section"),
    _set("se.expand=0", "se.expand"),
    _set("doc_rep.placement=head", "doc_rep.placement"),
    _set("random_negatives.count=-1", "random_negatives.count"),
    _set("loss_correction.weight=-1", "loss_correction.weight"),
    _set("tf32=maybe", "tf32"),
    _set("C=0", "'C'", model="tfidf-ovr"),
    _set("ngram_max=0", "ngram_max", model="tfidf-ovr"),
    _set("tol=nan", "tol", model="tfidf-ovr"),
    _set("n_jobs=0", "n_jobs", model="tfidf-ovr"),
    _set("cluster_k=1", "cluster_k", model="tree"),
    _set("max_sparse_density=2", "max_sparse_density", model="tree"),
    _set("n_trees=0", "n_trees", model="tree"),
    _set("beam_size=0", "beam_size", model="tree"),
    _set("x=1", "'x'", model="label-frequency"),
    _set("dropout=1", "dropout", model="sigmoid-linear"),
    _set("encoder_lr=-1", "encoder_lr", model="softmax-linear"),
    _set("pooling=max", "pooling", model="sigmoid-linear"),
    Case("variants-unknown", _train("--variants", "foo")(["variants", "foo"])),
    Case("variants-twice", _train("--variants", "se,se")(["se"])),
    Case("seed-negative", _train("--seed", "-1")(["--seed"])),
    Case("valid-size-nan", _train("--valid-size", "nan")(["--valid-size", "finite"])),
    Case("valid-size-negative", _train("--valid-size", "-0.5")(["--valid-size"])),
    Case("valid-size-fractional-count", _train("--valid-size", "1.5")(["--valid-size"])),
    Case(
        "valid-size-all-of-train", _train("--valid-size", "100000", model="label-frequency")(["--valid-size"])
    ),
    Case("preset-unknown", _train("--preset", "huge")(["huge"])),
    Case("resume-and-force", _train("--resume", "--force")(["--resume", "--force"])),
    Case("init-from-missing", _train("--init-from", "/nonexistent/init.pt")(["--init-from"])),
    Case("model-unknown", _train(model="nope")(["nope"])),
    Case("encoder-unknown", _train("--encoder", "/no/such/encoder")(["/no/such/encoder"])),
]


def _empty_encoder(w, tmp, mp):
    (tmp / "enc").mkdir()
    return ["train", str(w.tiny), *NEURAL, "--encoder", str(tmp / "enc"), "--out", str(tmp / "r")], [
        str(tmp / "enc"),
        "config.json",
    ]


def _too_big(w, tmp, mp):
    import xmlbench.runtime

    mp.setattr(xmlbench.runtime, "available_memory_bytes", lambda: 1 << 20)  # a 1 MiB machine
    return ["train", str(w.tiny), *NEURAL, "--out", str(tmp / "r")], ["parameters", "available"]


def _blocked_cache(w, tmp, mp):
    blocker = _write(tmp / "blocker", "a file where the cache folder should be\n")
    mp.setenv("XMLBENCH_CACHE", str(blocker / "cache"))
    return ["train", str(w.tiny), *NEURAL, "--out", str(tmp / "r")], [str(blocker)]


MODEL_CHECKS = [
    Case("n-layers-beyond-the-encoder", _train(*NEURAL[2:], "--set", "n_layers=50")(["n_layers", "tiny"])),
    Case("max-len-beyond-positions", _train(*NEURAL[2:], "--set", "max_len=100000")(["max_len", "512"])),
    Case("device-missing", _train(*NEURAL[2:], "--set", "device=cuda:7")(["device", "cuda:7"])),
    Case("encoder-folder-empty", _empty_encoder),
    Case("model-too-big-for-memory", _too_big),
    Case("token-cache-folder-is-a-file", _blocked_cache, code=1),
]

CONFIG_FILES = [
    _config_case("config-json-list", "list.json", "[1, 2]", "a list"),
    _config_case("config-not-utf8", "latin1.json", b'{"epochs": "\xe9t\xe9"}', "UTF-8"),
    _config_case("config-unknown-key", "typo.json", '{"epochz": 3}', "epochz"),
    _config_case("config-bad-value", "bad.json", '{"batch_size": -4}', "batch_size"),
    _config_case("config-nan", "nan.json", '{"lr": NaN}', "lr"),
    _config_case("config-invalid-json", "broken.json", '{"epochs": 3', "cannot parse"),
    _config_case("config-invalid-toml", "broken.toml", "epochs = = 3", "cannot parse"),
    _config_case("config-toml-wrong-type", "types.toml", 'epochs = "three"', "epochs"),
    Case(
        "config-missing",
        lambda w, tmp, mp: (
            ["train", str(w.tiny), "--config", str(tmp / "none.json")],
            ["none.json", "not found"],
        ),
    ),
    Case("config-is-a-folder", lambda w, tmp, mp: (["train", str(w.tiny), "--config", str(tmp)], [str(tmp)])),
]


def _empty_test(d):
    _text(d, test="", test_labels="")
    return ["test split has no documents"]


def _empty_train(d):
    _text(d, train="", train_labels="")
    return ["train split has no documents"]


def _missing_test_labels(d):
    _text(d, test_labels=None)
    return ["test_labels.txt"]


def _misaligned(d):
    _text(d, train_labels="x\ny\n")
    return ["train_texts.txt", "line-aligned"]


def _not_utf8(d):
    _text(d)
    (d / "train_texts.txt").write_bytes(b"a b\n\xff\xfe bad\ne f\ng h\n")
    return ["train_texts.txt:2", "UTF-8"]


def _label_blank(d):
    _text(d, train_labels="x\n\nx\ny\n")
    return ["train_labels.txt:2", "no labels"]


def _bow_lies(d):
    _bow(d, "3 5 99999999999", ("0 0:1", "1 1:1", "0,1 3:2"))
    return ["train.txt:1", "99,999,999,999 labels"]


def _bow_nan(d):
    _bow(d, "3 5 2", ("0 0:1", "1 1:nan", "0,1 3:2"))
    return ["train.txt:3", "1:nan", "finite"]


def _bow_inf(d):
    _bow(d, "3 5 2", ("0 0:1", "1 1:1e999", "0,1 3:2"))
    return ["train.txt:3", "finite"]


def _bow_header(d):
    _bow(d, "3 five 2", ("0 0:1", "1 1:1", "0,1 3:2"))
    return ["train.txt:1", "header"]


def _bow_feature_range(d):
    _bow(d, "3 5 2", ("0 0:1", "1 9:1", "0,1 3:2"))
    return ["train.txt:3", "9:1"]


def _bow_points(d):
    _bow(d, "5 5 2", ("0 0:1", "1 1:1", "0,1 3:2"))
    return ["train.txt", "5 points"]


DATA = [
    _dataset_case("empty-test-split", _empty_test),
    _dataset_case("empty-train-split", _empty_train),
    _dataset_case("missing-test-labels", _missing_test_labels),
    _dataset_case("texts-and-labels-misaligned", _misaligned),
    _dataset_case("texts-not-utf8", _not_utf8),
    _dataset_case("document-without-labels", _label_blank),
    _dataset_case("bow-header-lies", _bow_lies),
    _dataset_case("bow-nan-feature", _bow_nan),
    _dataset_case("bow-inf-feature", _bow_inf),
    _dataset_case("bow-malformed-header", _bow_header),
    _dataset_case("bow-feature-out-of-range", _bow_feature_range),
    _dataset_case("bow-fewer-lines-than-header", _bow_points),
    Case("dataset-unknown", lambda w, tmp, mp: (["train", "no-such-dataset"], ["no-such-dataset"])),
    Case("dataset-is-a-file", lambda w, tmp, mp: (["train", str(_write(tmp / "f.txt", "x"))], ["f.txt"])),
    Case("registered-dataset-incomplete", lambda w, tmp, mp: _incomplete_registered(tmp, mp)),
]


def _incomplete_registered(tmp: Path, mp) -> tuple[list[str], list[str]]:
    mp.setenv("XMLBENCH_DATASETS", str(tmp))
    _write(tmp / "eurlex4k" / "train_texts.txt", "a\n")  # a download unpacked halfway
    return ["train", "eurlex4k", "--model", "label-frequency", "--out", str(tmp / "r")], [
        "eurlex4k",
        "incomplete",
        "test_labels.txt",
    ]


def _lf(w: World, tmp: Path, *extra: str, out: Path | None = None, dataset: Path | None = None) -> list[str]:
    return [
        "train",
        str(dataset or w.tiny),
        "--model",
        "label-frequency",
        "--no-progress",
        "--out",
        str(out or w.lf),
        *extra,
    ]


def _damaged_record(w, tmp, mp):
    run = _copy_run(w.lf, tmp / "run")
    (run / "record.json").write_text('{"status": "comp', encoding="utf-8")
    return _lf(w, tmp, "--resume", out=run), ["record.json"]


def _unfinished(w, tmp, mp):
    run = _copy_run(w.lf, tmp / "run", parts=("config.json",))
    _write(run / "checkpoint.pt", b"resumable training state")  # what an interrupted neural run leaves
    return _lf(w, tmp, out=run), ["unfinished", "--resume"]


def _other_host_lock(w, tmp, mp):
    run = _copy_run(w.lf, tmp / "run", parts=("config.json", ".xmlbench-output"))
    _write(run / ".xmlbench-lock", json.dumps({"pid": 1, "host": "elsewhere", "since": "2025-01-01"}))
    return _lf(w, tmp, "--resume", out=run), ["being written", "elsewhere", ".xmlbench-lock"]


RUN_FOLDERS = [
    Case(
        "out-holds-other-files",
        lambda w, tmp, mp: (
            _lf(w, tmp, out=_foreign(tmp / "mine", "config.json")),
            ["mine", "config.json", "--force"],
        ),
    ),
    Case(
        "out-is-a-file",
        lambda w, tmp, mp: (_lf(w, tmp, out=_write(tmp / "f", "x")), ["exists and is a file"]),
    ),
    Case(
        "out-below-a-file",
        lambda w, tmp, mp: (_lf(w, tmp, out=_write(tmp / "f", "x") / "run"), [str(tmp / "f")]),
        code=1,
    ),
    Case("finished-run-without-resume", lambda w, tmp, mp: (_lf(w, tmp), ["finished run", "--resume"])),
    Case(
        "resume-other-config", lambda w, tmp, mp: (_lf(w, tmp, "--resume", "--seed", "1"), ["seed", "0", "1"])
    ),
    Case(
        "resume-other-model",
        lambda w, tmp, mp: (
            ["train", str(w.tiny), "--model", "tfidf-ovr", "--resume", "--out", str(w.lf)],
            ["label-frequency", "tfidf-ovr"],
        ),
    ),
    Case(
        "resume-other-dataset",
        lambda w, tmp, mp: (_lf(w, tmp, "--resume", dataset=w.short), ["dataset fingerprint"]),
    ),
    Case(
        "resume-other-valid-size",
        lambda w, tmp, mp: (_lf(w, tmp, "--resume", "--valid-size", "0.2"), ["valid_size"]),
    ),
    Case("run-record-damaged", _damaged_record),
    Case("run-unfinished-without-resume", _unfinished),
    Case("run-locked-by-another-host", _other_host_lock),
    Case("out-is-a-dataset", lambda w, tmp, mp: (_lf(w, tmp, out=w.tiny), [str(w.tiny), "dataset"])),
]


def _predict_out_run(w, tmp, mp):
    return ["predict", str(w.lf), "--out", str(w.lf)], [str(w.lf), "run"]


def _neural_copy(w: World, tmp: Path) -> Path:
    return _copy_run(w.neural(), tmp / "nrun", parts=("model", "record.json"))


def _truncated_checkpoint(w, tmp, mp):
    run = _neural_copy(w, tmp)
    path = run / "model" / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return ["predict", str(run)], ["model.safetensors", "truncated"]


def _empty_checkpoint(w, tmp, mp):
    run = _neural_copy(w, tmp)
    (run / "model" / "model.safetensors").write_bytes(b"")
    return ["predict", str(run)], ["model.safetensors", "empty"]


def _old_format(run: Path) -> Path:
    """A model folder as saved before the safetensors export: model/checkpoint.pt in the seed's schema."""
    (run / "model" / "model.safetensors").unlink()
    return run / "model" / "checkpoint.pt"


def _pickled_checkpoint(w, tmp, mp):
    import torch

    run = _neural_copy(w, tmp)
    torch.save({"config": Path("x")}, _old_format(run))  # a pickled object, not plain data
    return ["predict", str(run)], ["checkpoint.pt", "pickled"]


def _wrong_shape_checkpoint(w, tmp, mp):
    # A model of 60 labels on a dataset of 4 others: labels are matched by name, so the refusal names the
    # label sets (none shared), before any weight shape could be compared.
    return ["predict", str(w.neural()), "--dataset", str(w.short)], ["cannot be matched", "labels"]


def _foreign_checkpoint(w, tmp, mp):
    import torch

    run = _neural_copy(w, tmp)
    torch.save({"weights": torch.zeros(3)}, _old_format(run))
    return ["predict", str(run)], ["checkpoint.pt", "'config'"]


def _foreign_weights(w, tmp, mp):
    from safetensors.torch import save_file

    run = _neural_copy(w, tmp)
    save_file({"weights": __import__("torch").zeros(3)}, str(run / "model" / "model.safetensors"))
    return ["predict", str(run)], ["model.safetensors", "no net weights"]


def _wrong_shape_weights(w, tmp, mp):
    from safetensors.torch import load_file, save_file

    run = _neural_copy(w, tmp)
    path = run / "model" / "model.safetensors"
    tensors = load_file(str(path))
    name = next(k for k in tensors if k.startswith("net.") and tensors[k].ndim == 2)
    tensors[name] = tensors[name][:, :1].contiguous()
    save_file(tensors, str(path))
    return ["predict", str(run)], ["model.safetensors", "do not fit"]


def _damaged_model_json(w, tmp, mp):
    run = _copy_run(w.lf, tmp / "run")
    (run / "model" / "model.json").write_text("{not json", encoding="utf-8")
    return ["predict", str(run)], ["model.json"]


def _damaged_frequency(w, tmp, mp):
    run = _copy_run(w.lf, tmp / "run")
    path = run / "model" / "frequency.npz"
    path.write_bytes(path.read_bytes()[:40])
    return ["predict", str(run)], ["frequency.npz"]


PREDICT = [
    Case("predict-out-into-its-run", _predict_out_run),
    Case("predict-folder-without-model", lambda w, tmp, mp: (["predict", str(tmp)], ["no saved model"])),
    Case("predict-model-json-damaged", _damaged_model_json),
    Case("predict-frequency-truncated", _damaged_frequency),
    Case(
        "predict-dataset-unknown", lambda w, tmp, mp: (["predict", str(w.lf), "--dataset", "nope"], ["nope"])
    ),
    Case("predict-checkpoint-truncated", _truncated_checkpoint),
    Case("predict-checkpoint-empty", _empty_checkpoint),
    Case("predict-checkpoint-pickled", _pickled_checkpoint),
    Case("predict-checkpoint-foreign", _foreign_checkpoint),
    Case("predict-weights-foreign", _foreign_weights),
    Case("predict-weights-wrong-shape", _wrong_shape_weights),
    Case("predict-checkpoint-other-labels", _wrong_shape_checkpoint),
]


def _truncated_member(w, tmp, mp):
    run = _copy_run(w.lf1, tmp / "m1")
    (run / "predictions.npz").write_bytes(b"PK\x03\x04broken")
    return ["ensemble", str(w.lf), str(run), "--out", str(tmp / "ens")], ["predictions.npz"]


ENSEMBLE = [
    Case(
        "ensemble-out-is-a-member",
        lambda w, tmp, mp: (["ensemble", str(w.lf), str(w.lf1), "--out", str(w.lf1)], ["--out", "member"]),
    ),
    Case(
        "ensemble-out-is-another-run",
        lambda w, tmp, mp: (
            ["ensemble", str(w.lf), str(_copy_run(w.lf1, tmp / "m1")), "--out", str(w.lf1)],
            [str(w.lf1), "run"],
        ),
    ),
    Case(
        "ensemble-one-member",
        lambda w, tmp, mp: (["ensemble", str(w.lf), "--out", str(tmp / "e")], ["at least two"]),
    ),
    Case(
        "ensemble-member-not-a-run",
        lambda w, tmp, mp: (
            ["ensemble", str(w.lf), str(tmp), "--out", str(tmp / "e")],
            [str(tmp), "not a finished run"],
        ),
    ),
    Case(
        "ensemble-out-foreign",
        lambda w, tmp, mp: (
            ["ensemble", str(w.lf), str(w.lf1), "--out", str(_foreign(tmp / "mine"))],
            ["mine", "notes.txt"],
        ),
    ),
    Case("ensemble-member-predictions-truncated", _truncated_member),
]


def _table_truncated(w, tmp, mp):
    run = _copy_run(w.lf, tmp / "runs" / "a")
    (run / "record.json").write_text('{"status": "complete", "mod', encoding="utf-8")
    return ["table", str(tmp / "runs")], ["record.json"]


TABLES = [
    Case("table-truncated-record", _table_truncated),
    Case(
        "table-out-foreign-file",
        lambda w, tmp, mp: (
            ["table", str(w.lf), "--out", str(_write(tmp / "paper.md", "my notes\n"))],
            ["paper.md", "--force"],
        ),
    ),
    Case(
        "table-index-foreign-readme",
        lambda w, tmp, mp: (
            ["table", str(w.lf), "--index", str(_foreign(tmp / "res", "README.md"))],
            ["README.md"],
        ),
    ),
    Case(
        "table-out-is-a-folder",
        lambda w, tmp, mp: (["table", str(w.lf), "--out", str(tmp)], [str(tmp), "folder"]),
    ),
    Case("table-metric-malformed", lambda w, tmp, mp: (["table", str(w.lf), "--metrics", "P@x"], ["P@x"])),
    Case("table-no-runs", lambda w, tmp, mp: (["table", str(tmp)], ["no finished runs"])),
    Case("compare-damaged-record", lambda w, tmp, mp: _compare_damaged(w, tmp)),
]


def _compare_damaged(w: World, tmp: Path) -> tuple[list[str], list[str]]:
    (_copy_run(w.lf, tmp / "b") / "record.json").write_text("[]", encoding="utf-8")
    return ["compare", str(w.lf), str(tmp / "b")], ["record.json"]


def _synth_other_seed(w, tmp, mp):
    assert main(["data", "synth", "tiny", "--out", str(tmp / "d"), "--seed", "0"]) == 0
    return ["data", "synth", "tiny", "--out", str(tmp / "d"), "--seed", "1"], [str(tmp / "d"), "seed 0"]


DATA_COMMANDS = [
    Case(
        "synth-over-a-dataset",
        lambda w, tmp, mp: (
            ["data", "synth", "tiny", "--out", str(_text(tmp / "mine"))],
            ["mine", "train_labels.txt"],
        ),
    ),
    Case("synth-over-another-seed", _synth_other_seed),
    Case(
        "synth-seed-negative",
        lambda w, tmp, mp: (["data", "synth", "tiny", "--out", str(tmp / "d"), "--seed", "-1"], ["--seed"]),
    ),
    Case(
        "synth-preset-unknown",
        lambda w, tmp, mp: (["data", "synth", "huge", "--out", str(tmp / "d")], ["huge"]),
    ),
    Case(
        "synth-out-is-a-file",
        lambda w, tmp, mp: (
            ["data", "synth", "tiny", "--out", str(_write(tmp / "f", "x"))],
            ["exists and is a file"],
        ),
    ),
    Case("check-missing-folder", lambda w, tmp, mp: (["data", "check", str(tmp / "none")], ["none"])),
]

EXPERIMENTS = [
    Case("ablate-jobs-zero", lambda w, tmp, mp: (["ablate", str(w.tiny), "--jobs", "0"], ["--jobs"])),
    Case("ablate-seeds-zero", lambda w, tmp, mp: (["ablate", str(w.tiny), "--seeds", "0"], ["--seeds"])),
    Case(
        "ablate-bad-set",
        lambda w, tmp, mp: (["ablate", str(w.tiny), "--set", "batch_size=0"], ["batch_size"]),
    ),
    Case(
        "ablate-root-foreign",
        lambda w, tmp, mp: (
            [
                "ablate",
                str(w.tiny),
                "--preset",
                "smoke",
                "--root",
                str(_foreign(tmp / "mine")),
                "--no-progress",
            ],
            ["mine", "notes.txt"],
        ),
    ),
    Case(
        "ablate-other-model",
        lambda w, tmp, mp: (["ablate", str(w.tiny), "--model", "tfidf-ovr"], ["lightxml"]),
    ),
    Case(
        "baselines-unknown-key",
        lambda w, tmp, mp: (
            ["baselines", str(w.tiny), "--set", "max_stepz=3", "--root", str(tmp / "b")],
            ["max_stepz"],
        ),
    ),
    Case(
        "baselines-bad-value",
        lambda w, tmp, mp: (
            ["baselines", str(w.tiny), "--set", "batch_size=-4", "--root", str(tmp / "b")],
            ["batch_size"],
        ),
    ),
    Case(
        "baselines-root-foreign",
        lambda w, tmp, mp: (
            ["baselines", str(w.tiny), "--root", str(_foreign(tmp / "mine"))],
            ["mine", "notes.txt"],
        ),
    ),
    Case("init-without-out", lambda w, tmp, mp: (["init", str(w.tiny)], ["--out"])),
    Case(
        "init-out-foreign-file",
        lambda w, tmp, mp: (
            ["init", str(w.tiny), "--out", str(_write(tmp / "weights.pt", "mine"))],
            ["weights.pt", "--force"],
        ),
    ),
    Case(
        "init-non-neural-model",
        lambda w, tmp, mp: (
            ["init", str(w.tiny), "--model", "label-frequency", "--out", str(tmp / "i.pt")],
            ["label-frequency"],
        ),
    ),
    Case(
        "init-bad-set",
        lambda w, tmp, mp: (
            ["init", str(w.tiny), "--set", "dropout=5", "--out", str(tmp / "i.pt")],
            ["dropout"],
        ),
    ),
    Case(
        "ensemble-train-bad-set",
        lambda w, tmp, mp: (
            ["ensemble-train", str(w.tiny), "--set", "epochs=-1", "--out", str(tmp / "e")],
            ["epochs"],
        ),
    ),
    Case(
        "ensemble-train-root-foreign",
        lambda w, tmp, mp: (
            ["ensemble-train", str(w.tiny), "--out", str(_foreign(tmp / "mine"))],
            ["mine", "notes.txt"],
        ),
    ),
    Case("bench-unknown", lambda w, tmp, mp: (["bench", "nope"], ["nope"])),
]

CASES = (
    CONFIG_BOUNDS
    + MODEL_CHECKS
    + CONFIG_FILES
    + DATA
    + RUN_FOLDERS
    + PREDICT
    + ENSEMBLE
    + TABLES
    + DATA_COMMANDS
    + EXPERIMENTS
)


def test_enough_cases():
    assert len(CASES) >= 60 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_one_line_and_touches_nothing(case, world, tmp_path, monkeypatch, capsys):
    if case.name == "device-missing":
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    argv, words = case.make(world, tmp_path, monkeypatch)
    before = snapshot(world.root, world.tiny, tmp_path)
    code, err = run_cli(argv, capsys)
    assert "Traceback" not in err, err
    assert code == case.code, err
    lines = error_lines(err)
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "weights_only" not in err
    after = snapshot(world.root, world.tiny, tmp_path)
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert not changed, changed


# ------------------------------------------------------------------------------------------ locks
HOLD_LOCK = """
import sys, time
from xmlbench.outputs import Output, writing
with writing(sys.argv[1], Output("run")):  # what the runner holds while it writes a run folder
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_is_refused_and_a_killed_writers_lock_is_taken_over(world, tmp_path, capsys):
    run = _copy_run(world.lf, tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        code, err = run_cli(_lf(world, tmp_path, "--resume", out=run), capsys)
        assert code == 2 and "Traceback" not in err
        (line,) = error_lines(err)
        assert f"process {holder.pid}" in line and "being written" in line
        assert snapshot(run) == before
    finally:
        holder.send_signal(signal.SIGKILL)  # no finally of its own runs: the lock stays behind
        holder.wait()
    lock = json.loads((run / ".xmlbench-lock").read_text())
    assert lock["pid"] == holder.pid  # stale now
    code, err = run_cli(_lf(world, tmp_path, "--resume", out=run), capsys)
    assert code == 0, err
    assert not (run / ".xmlbench-lock").exists()  # taken over, then released


def test_a_lock_whose_pid_was_reused_is_stale(world, tmp_path, capsys):
    from xmlbench.io import host_name

    run = _copy_run(world.lf, tmp_path / "run")
    # PID 1 is alive, but it is not the process that took the lock (another start time).
    _write(run / ".xmlbench-lock", json.dumps({"pid": 1, "host": host_name(), "pid_start": "-1"}))
    assert run_cli(_lf(world, tmp_path, "--resume", out=run), capsys)[0] == 0


def test_locks_exclude_each_other(tmp_path):
    from xmlbench.errors import UserError
    from xmlbench.outputs import LOCK, acquire_lock, release_lock

    held = acquire_lock(tmp_path)
    with pytest.raises(UserError, match="being written by process"):
        acquire_lock(tmp_path)
    release_lock(tmp_path, held)
    assert not (tmp_path / LOCK).exists()
    release_lock(tmp_path, acquire_lock(tmp_path))


# ------------------------------------------------------------------------------------------ the disk
FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from xmlbench.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _full_disk(limit: int, argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(limit), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_a_full_disk_during_data_synth_names_the_file_and_leaves_no_partial_dataset(tmp_path):
    out = tmp_path / "d"
    done = _full_disk(50_000, ["data", "synth", "tiny", "--out", str(out)])
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    (line,) = error_lines(done.stderr)
    assert str(out) in line and "File too large" in line
    assert not any(p.name.endswith(("texts.txt", "labels.txt", "synth.json")) for p in out.rglob("*"))
    assert not list(out.glob("*.tmp"))


def test_a_full_disk_during_a_run_names_the_file(world, tmp_path):
    done = _full_disk(3_000, _lf(world, tmp_path, out=tmp_path / "run"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    (line,) = error_lines(done.stderr)
    assert str(tmp_path / "run") in line
    assert not (tmp_path / "run" / "record.json").exists()  # not recorded as complete
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name.endswith(".tmp")]


def test_a_failed_data_synth_leaves_the_previous_dataset_as_it_was(tmp_path, monkeypatch):
    import errno

    from xmlbench.data import synth
    from xmlbench.outputs import MARKER

    out = tmp_path / "d"
    synth.write_synthetic("tiny", out, seed=0, progress=False)
    before = {p: h for p, h in snapshot(out).items() if not p.endswith(MARKER)}
    real = synth._write_split

    def disk_full_at_test(folder, split, *args, **kwargs):  # the train split is written, then the disk fills
        if split == "test":
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / "test_texts.txt"))
        return real(folder, split, *args, **kwargs)

    monkeypatch.setattr(synth, "_write_split", disk_full_at_test)
    with pytest.raises(OSError, match="No space left"):
        synth.write_synthetic("tiny", out, seed=1, progress=False, force=True)
    assert {
        p: h for p, h in snapshot(out).items() if not p.endswith(MARKER)
    } == before  # no seed-1 file mixed in


def test_a_failed_torch_save_is_an_os_error_naming_the_checkpoint(tmp_path, monkeypatch):
    import torch

    from xmlbench.engine import checkpoint as ckpt

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 640 vs 534")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError) as caught:
        ckpt.save(tmp_path / "checkpoint.pt", {"x": torch.zeros(2)})
    assert caught.value.filename == str(tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


def test_temporary_files_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    from xmlbench.io import host_name, write_json

    dead = _write(tmp_path / f".record.json.{host_name()}-99999999.abc.tmp", "half")
    live = _write(tmp_path / f".record.json.{host_name()}-{os.getpid()}.xyz.tmp", "in progress")
    elsewhere = _write(tmp_path / ".record.json.otherhost-99999999.abc.tmp", "another machine's")
    write_json(tmp_path / "record.json", {"a": 1})
    assert not dead.exists() and live.exists() and elsewhere.exists()


# ------------------------------------------------------------------------------------------ recoveries
def _tiny_cache(folder: Path):
    from xmlbench.data.tokcache import build_token_cache
    from xmlbench.encoders import load_tokenizer

    texts = ["the market fell", "prices rose again", "a quiet day"]
    return build_token_cache(texts, 3, load_tokenizer("tiny"), "tiny", 8, "fp", folder, progress=False)


@pytest.mark.parametrize("damage", ["shape", "truncated", "meta"])
def test_a_damaged_token_cache_is_rebuilt(tmp_path, damage):
    import numpy as np

    first = np.array(_tiny_cache(tmp_path).input_ids)
    folder = next(tmp_path.glob("fp-*"))
    if damage == "shape":
        np.save(folder / "input_ids.npy", np.zeros((2, 2), np.int32))
    elif damage == "truncated":
        (folder / "input_ids.npy").write_bytes((folder / "input_ids.npy").read_bytes()[:100])
    else:
        (folder / "meta.json").write_text('{"format_vers', encoding="utf-8")
    assert np.array_equal(_tiny_cache(tmp_path).batch([0, 1, 2])[0].numpy(), first)


def test_token_ids_outside_the_vocabulary_are_named_not_an_index_error(tmp_path):
    import numpy as np

    from xmlbench.errors import UserError

    _tiny_cache(tmp_path)
    folder = next(tmp_path.glob("fp-*"))
    np.save(folder / "input_ids.npy", np.full((3, 8), 10**8, np.int32))  # the right shape, garbage inside
    with pytest.raises(UserError, match=f"{folder}: damaged token cache"):
        _tiny_cache(tmp_path).batch([0, 1])


def test_a_start_that_trained_nothing_is_simply_started_again(world, tmp_path, capsys):
    """A run that failed before its first resumable checkpoint (a blocked cache, a typo fixed since) left
    only config.json: nothing to lose, so the same command runs again without --resume."""
    run = _copy_run(world.lf, tmp_path / "run", parts=("config.json", ".xmlbench-output"))
    code, err = run_cli(_lf(world, tmp_path, "--seed", "1", out=run), capsys)  # even with another config
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["options"]["seed"] == 1


def test_tabs_and_byte_order_marks_read_as_intended(tmp_path):
    from xmlbench.data.dataset import open_dataset

    ds = open_dataset(str(_bow(tmp_path / "bow", "3 5 2", ("0\t0:1", "1 1:1", "0,1\t3:2"))))
    assert ds.train.labels.toarray().tolist() == [[1, 0], [0, 1], [1, 1]] and ds.train.features.nnz == 3
    d = _text(tmp_path / "bom", train="\ufeffhello there\nb\nc\nd\n", train_labels="\ufeffx\ny\nx\ny\n")
    ds = open_dataset(str(d))
    assert ds.label_names == ["x", "y"]
    assert list(ds.train.iter_texts())[0] == "hello there" and ds.train.texts[0] == "hello there"


def test_data_list_names_the_missing_files_of_a_partial_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XMLBENCH_DATASETS", str(tmp_path))
    _write(tmp_path / "eurlex4k" / "train_texts.txt", "a\n")
    assert main(["data", "list"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("eurlex4k")]
    assert "partial" in line and "test_labels.txt" in line


# ------------------------------------------------------------------------------------------ features
MODELS_ON_SHORT_TEXTS = [
    ["--model", "label-frequency"],
    ["--model", "tfidf-ovr"],
    ["--model", "tree"],
    ["--model", "lightxml", *NEURAL[2:], "--set", "mode=clustered", "--set", "leaf_size=2"],
    ["--model", "sigmoid-linear", "--preset", "smoke", "--set", "max_len=8", "--set", "max_steps=1"],
    ["--model", "softmax-linear", "--preset", "smoke", "--set", "max_len=8", "--set", "max_steps=1"],
]


@pytest.mark.parametrize("model", MODELS_ON_SHORT_TEXTS, ids=[m[1] for m in MODELS_ON_SHORT_TEXTS])
def test_every_model_trains_and_predicts_documents_without_features(world, tmp_path, model, capsys):
    from xmlbench.data.dataset import open_dataset
    from xmlbench.data.features import fit_tfidf, transform_tfidf
    from xmlbench.runs.record import read_predictions

    ds = open_dataset(str(world.short))
    state, X = fit_tfidf(ds.train, empty_feature=False)
    assert (X.getnnz(axis=1) == 0).sum() > 10 and (
        transform_tfidf(state, ds.test).getnnz(axis=1) == 0
    ).sum() > 3
    code, err = run_cli(
        ["train", str(world.short), "--no-progress", *model, "--out", str(tmp_path / "r")], capsys
    )
    assert code == 0, err
    ids, _ = read_predictions(tmp_path / "r")
    assert ids.shape[0] == len(ds.test) and (ids[:, 0] >= 0).all()  # every document, featureless too, ranked


@pytest.mark.parametrize("model", ["tfidf-ovr", "tree", "label-frequency"])
def test_a_dataset_whose_texts_are_all_empty_is_the_same_case(tmp_path, model, capsys):
    """No vocabulary at all: every document is EMPTY, and the model learns (and predicts) their labels."""
    from xmlbench.runs.record import read_predictions

    rows = [("", f"L{i % 3}") for i in range(40)]
    data = write_text_dataset(tmp_path / "empty", rows, rows[:10])
    code, err = run_cli(
        ["train", str(data), "--model", model, "--no-progress", "--out", str(tmp_path / "r")], capsys
    )
    assert code == 0, err
    assert (read_predictions(tmp_path / "r")[0][:, 0] >= 0).all()


# ------------------------------------------------------------------------------------------ declarations
def _config_classes():
    from xmlbench.models import MODELS
    from xmlbench.models.lightxml.variants import VARIANTS
    from xmlbench.runs.runner import RunOptions

    classes = {MODELS.get(n).config_cls for n in MODELS.names()}
    classes |= {spec.config_cls for _, spec in VARIANTS.items()}
    return sorted(classes | {RunOptions}, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_every_numeric_field_declares_a_bound_or_why_not(cls):
    import dataclasses
    import typing

    from xmlbench.config import field_rules, validate

    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        base = typing.get_args(hints[f.name])[0] if typing.get_origin(hints[f.name]) else hints[f.name]
        numeric = base in (int, float) or any(a in (int, float) for a in typing.get_args(base))
        if numeric:
            assert field_rules(hints[f.name]), f"{cls.__name__}.{f.name} declares no Range, Rule or Unbounded"
    if cls.__name__ != "RunOptions":
        validate(cls())  # the defaults obey the declarations


def test_a_config_file_and_set_fail_before_any_data_is_read(world, tmp_path, monkeypatch, capsys):
    import xmlbench.runs.runner as runner

    def no_reading(*args, **kwargs):
        raise AssertionError("the dataset was opened before the config was checked")

    monkeypatch.setattr(runner, "open_dataset", no_reading)
    code, err = run_cli(
        ["train", str(world.tiny), "--set", "batch_size=-4", "--out", str(tmp_path / "r")], capsys
    )
    assert code == 2 and "batch_size" in err and not (tmp_path / "r").exists()

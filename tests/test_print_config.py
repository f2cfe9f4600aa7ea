"""--print-config: the resolved config without training or writing anything; --print-config skeleton:
every key with its default, bounds and description, as a TOML file that --config reads back."""

from __future__ import annotations

import json
import os

import pytest
import tomllib

from xmlbench.cli import main
from xmlbench.config import from_dict
from xmlbench.models import MODELS


def test_print_config_resolves_every_layer_and_writes_nothing(tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text("C = 3.0\ntol = 0.001\n", encoding="utf-8")
    assert main(["train", str(tiny_dataset), "--model", "tfidf-ovr", "--config", "c.toml", "--set", "C=2.5",
                 "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    config = printed["model_config"]
    assert config["C"] == 2.5 and config["tol"] == 0.001  # --set over the file, the file over defaults
    assert config["max_features"] == MODELS.get("tfidf-ovr").config_cls().max_features
    assert printed["options"]["seed"] == 0 and printed["options"]["select_on"] == "valid"  # the protocol's
    assert printed["dataset"]["n_labels"] == 60
    assert sorted(os.listdir(tmp_path)) == ["c.toml"]  # no run folder, nothing trained
    # the smoke preset's layer is there too
    assert main(["train", str(tiny_dataset), "--model", "lightxml", "--preset", "smoke", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["model_config"]["encoder"] == "tiny"


@pytest.mark.parametrize("model", MODELS.names())
def test_the_skeleton_lists_every_key_and_reads_back_to_the_defaults(model, tmp_path, capsys):
    assert main(["train", "unused", "--model", model, "--print-config", "skeleton"]) == 0
    text = capsys.readouterr().out
    cls = MODELS.get(model).config_cls
    assert from_dict(cls, tomllib.loads(text)) == cls()
    for name in cls.__dataclass_fields__:
        assert f"# {name}:" in text or f"[{name}]" in text, name


def test_the_skeleton_says_bounds_and_descriptions(tmp_path, capsys, tiny_dataset):
    assert main(["train", "unused", "--model", "lightxml", "--print-config", "skeleton"]) == 0
    text = capsys.readouterr().out
    assert "# lr: float >= 0\n#   0 freezes the weights" in text
    assert "# lr_schedule: one of \"constant\", \"linear\"" in text
    assert "# expand: int in [2, 4096]" in text and "[se]" in text
    (tmp_path / "skeleton.toml").write_text(text, encoding="utf-8")  # a starting point for --config
    assert main(["train", str(tiny_dataset), "--model", "lightxml", "--config", str(tmp_path / "skeleton.toml"),
                 "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["model_config"]["encoder"] == "bert-base"

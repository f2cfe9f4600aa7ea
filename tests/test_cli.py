"""The command line: the inverse of argument parsing round-trips, ``xmlbench list`` covers every registry,
and the help advertises only options that exist."""

from __future__ import annotations

import shlex

import pytest

from xmlbench.cli import build_parser, main
from xmlbench.cli.listing import KINDS
from xmlbench.cli.train import command_line, options_from_args, options_to_argv
from xmlbench.config import parse_overrides
from xmlbench.runs.runner import RunOptions


def _parse(argv: list[str]) -> RunOptions:
    args = build_parser().parse_args(argv)
    args.command_line = ""
    return options_from_args(args)


@pytest.mark.parametrize("opts", [
    RunOptions(dataset="tiny", model="lightxml", command=""),
    RunOptions(dataset="data dir/with space", model="lightxml", seed=3, valid_size=500.0, select_on="test",
               protocol="original", preset="smoke", out="runs/x y", resume=True, force=True,
               init_from="init/a.pt", progress=False,
               config_file="c.toml", command="",
               overrides=parse_overrides(["epochs=2", "se.expand=16", "lr=0.001", "encoder=tiny",
                                          "mode=clustered", "amp=off"]) | {"variants": ["se", "doc-rep"]}),
    # no --seed, --select-on or --valid-size: they stay open, for the protocol to choose when it runs
    RunOptions(dataset="tiny", model="lightxml", protocol="original", command=""),
], ids=["defaults", "everything", "protocol-chooses"])
def test_options_to_argv_round_trips_through_the_parser(opts, monkeypatch):
    # progress bars also depend on stderr being a terminal (off in logs); the round trip is of the flags
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert _parse(options_to_argv(opts)) == opts
    shell = shlex.split(command_line(opts))  # the shell form used by --print-commands and --jobs
    assert shell[1:3] == ["-m", "xmlbench"] and _parse(shell[3:]) == opts


@pytest.mark.parametrize("kind", list(KINDS))
def test_list_prints_every_registered_name(kind, capsys):
    assert main(["list", kind]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(len(line.split(None, 1)) == 2 for line in lines)  # a name and a description
    names = {line.split()[0] for line in lines}
    registry = {
        "models": lambda: __import__("xmlbench.models", fromlist=["MODELS"]).MODELS.names(),
        "variants": lambda: __import__("xmlbench.models.lightxml.variants", fromlist=["V"]).VARIANTS.names(),
        "benchmarks": lambda: __import__("xmlbench.benchmarks", fromlist=["names"]).names(),
    }.get(kind)
    if registry is not None:
        assert names == set(registry())


def test_train_help_names_only_commands_that_exist(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--list-models" not in capsys.readouterr().out
    assert main(["list", "models"]) == 0  # what the help points to instead


def test_every_demo_step_is_a_valid_command_on_data_that_ships(tmp_path):
    from xmlbench.cli.demo import DATASET, steps
    from xmlbench.data.dataset import open_dataset

    ds = open_dataset(str(DATASET), progress=False)
    assert (len(ds.train), len(ds.test)) == (800, 300) and ds.n_labels > 2000
    parser = build_parser()
    for _, argv in steps(tmp_path):
        args = parser.parse_args(argv)  # argparse exits on an unknown option or command
        assert callable(args.func)

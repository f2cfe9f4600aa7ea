"""The ablation runner: which arms run in which mode, identical initial weights per seed, idempotence,
and thread counts for jobs that share the cores."""

from __future__ import annotations

import torch

from xmlbench.experiments import ablate
from xmlbench.experiments.ablate import base_of, plan_arms


def test_flat_dataset_runs_clustered_only_variants_beside_a_clustered_base():
    arms = {a.name: a for a in plan_arms("flat", None, ["se", "random-negatives"])}
    assert set(arms) == {"base-flat", "base-clustered", "se", "random-negatives", "se+random-negatives"}
    assert arms["se"].mode == "flat"
    assert arms["random-negatives"].mode == arms["se+random-negatives"].mode == "clustered"
    assert base_of(arms["random-negatives"], list(arms.values())) == "base-clustered"
    assert base_of(arms["se"], list(arms.values())) == "base-flat"


def test_forced_mode_gives_one_base_and_every_arm_in_that_mode():
    arms = plan_arms("flat", "clustered", ["se", "loss-correction", "random-negatives", "doc-rep"])
    assert [a.name for a in arms] == ["base", "se", "loss-correction", "random-negatives", "doc-rep", "all"]
    assert {a.mode for a in arms} == {"clustered"}


def test_parallel_jobs_split_the_cores_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(ablate, "usable_cores", lambda: 8)
    assert ablate.threads_per_job_env(4)["OMP_NUM_THREADS"] == "2"
    assert ablate.threads_per_job_env(16)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert ablate.threads_per_job_env(4)["OMP_NUM_THREADS"] == "3"


def _template(dataset):
    from xmlbench.config import parse_overrides
    from xmlbench.runs.runner import RunOptions

    # lr 0: every arm's weights stay exactly where they started, so the saved models show the start.
    over = parse_overrides(["max_len=16", "epochs=1", "max_steps=3", "batch_size=32", "hidden=16", "top_b=4",
                            "leaf_size=8", "swa_warmup=-1", "checkpoint_every=2", "lr=0"])
    return RunOptions(dataset=str(dataset), model="lightxml", preset="smoke", out="", progress=False,
                      overrides=over)


def test_every_arm_of_a_seed_starts_from_the_same_weights_and_a_rerun_skips_them(tiny_dataset, tmp_path,
                                                                                monkeypatch):
    from dataclasses import replace

    from xmlbench.runs.runner import save_initial_weights

    arms = plan_arms("flat", "clustered", ["se"])
    root = tmp_path / "sweep"
    # Write the seed's init file first and mark it: a fresh init from the same seed would equal the
    # unmarked weights, so only arms that really load the file end up with the mark.
    template = _template(tiny_dataset)
    path = ablate.init_path(root, "clustered", 0)
    save_initial_weights(replace(template, seed=0, overrides={**template.overrides, "variants": [],
                                                              "mode": "clustered"}), path)
    marked = torch.load(path, weights_only=True)
    for part in ("encoder_state_dict", "classifier_state_dict"):
        first = next(k for k, v in marked[part].items() if v.is_floating_point())
        marked[part][first] = torch.full_like(marked[part][first], 0.125)
    torch.save(marked, path)
    runs = ablate.run_ablation(template, arms, [0], root, log=lambda _: None)
    assert set(runs) == {"base", "se"}

    def weights_of(path):
        if path.suffix == ".safetensors":  # an exported model: the net's full state dict under "net."
            from safetensors.torch import load_file

            return {k.removeprefix("net.").removeprefix("encoder."): v for k, v in load_file(path).items()
                    if k.startswith("net.")}
        saved = torch.load(path, weights_only=True, map_location="cpu")
        return {**saved["encoder_state_dict"], **saved["classifier_state_dict"]}

    # Encoder and the base heads alike (the variant's own modules are not in the init file).
    init = weights_of(path)
    assert any(k.startswith("generator") for k in init)
    for arm in ("base", "se"):
        trained = weights_of(runs[arm][0] / "model" / "model.safetensors")
        assert init.keys() <= trained.keys()
        assert all(torch.equal(trained[k], init[k]) for k in init), arm

    def must_not_run(_opts):
        raise AssertionError("a finished arm ran again")

    monkeypatch.setattr(ablate, "run", must_not_run)
    lines: list[str] = []
    ablate.run_ablation(_template(tiny_dataset), arms, [0], root, log=lines.append)
    assert any("2 finished, 0 to run" in line for line in lines)


def test_ablate_refuses_a_model_other_than_lightxml(tiny_dataset, capsys):
    from xmlbench.cli import main

    assert main(["ablate", str(tiny_dataset), "--model", "tree", "--seeds", "1"]) == 2
    assert "must be lightxml" in capsys.readouterr().err


def _numba_threads_after_cli_start(env: dict[str, str]) -> str:
    import os
    import subprocess
    import sys

    code = ("from xmlbench.runtime import match_numba_threads_to_omp; match_numba_threads_to_omp(); "
            "import numba; print(numba.get_num_threads())")
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_single_runs_give_numba_the_openmp_thread_count():
    # torchrun and schedulers set OMP_NUM_THREADS=1; numba's pool must follow, or it oversubscribes.
    assert _numba_threads_after_cli_start({"OMP_NUM_THREADS": "1"}) == "1"
    assert _numba_threads_after_cli_start({"OMP_NUM_THREADS": ""}) == str(_default_numba_threads())


def _default_numba_threads() -> int:
    import numba

    return numba.config.NUMBA_DEFAULT_NUM_THREADS


def test_the_all_arm_leaves_out_refused_combinations_and_scalar_mix_runs_alone():
    from xmlbench.models.lightxml.variants import VARIANTS

    arms = plan_arms("flat", None, VARIANTS.names())
    names = [a.name for a in arms]
    assert "scalar-mix" in names and "all" in names
    together = next(a for a in arms if a.name == "all")
    assert "scalar-mix" not in together.variants and {"se", "doc-rep"} <= set(together.variants)


def test_scalar_mix_arm_starts_from_the_sweeps_initial_weights(tmp_path):
    """The ablation's initial weights hold heads sized for the 5-layer concatenation; the scalar-mix arm
    (width H) takes their encoder and keeps its own heads. It failed with a size mismatch (and with it the
    demo's smoke ablation)."""
    from xmlbench.cli import main

    common = ["--model", "lightxml", "--preset", "smoke", "--set", "max_steps=1", "--set", "mode=clustered",
              "--no-progress"]
    assert main(["init", "tiny", *common, "--out", str(tmp_path / "init.pt")]) == 0
    assert main(["train", "tiny", *common, "--variants", "scalar-mix", "--init-from", str(tmp_path / "init.pt"),
                 "--out", str(tmp_path / "sm")]) == 0

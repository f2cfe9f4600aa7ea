"""The distillation table (``xmlbench distill-table``): for every distilled run, its teacher and the student
side by side, from the student's ``record.json`` alone (the teacher's figures are copied there when it
trains: test P@k, parameters; docs/s of both measured back to back on the validation split).

Columns: system, model, P@1, P@3, P@5, parameters, inference docs/s (CPU, the threads recorded), and
retention = student P@1 / teacher P@1 in percent; notes give each student's command and settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xmlbench.errors import UserError
from xmlbench.runs import record as rec

COLUMNS = ("system", "model", "P@1", "P@3", "P@5", "parameters", "docs/s", "P@1 retained %", "params ratio",
           "speed ratio")


def distilled_runs(paths: list[Path]) -> list[dict[str, Any]]:
    runs = [rec.read_record(d) for d in rec.find_runs(paths)]
    runs = [r for r in runs if "distillation" in r]
    if not runs:
        raise UserError(f"no distilled runs (records with a 'distillation' entry) under {', '.join(map(str, paths))}")
    return runs


def rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        d = r["distillation"]
        t, s = d["teacher"], r["metrics"]["test"]
        speed = d.get("inference", {})
        teacher_name = t["model"] + (f" ({t['encoder']})" if t.get("encoder") else "")
        out.append({"system": f"teacher: {teacher_name}", "model": t["model"], "P@1": t["test"].get("P@1"),
                    "P@3": t["test"].get("P@3"), "P@5": t["test"].get("P@5"), "parameters": t.get("n_parameters"),
                    "docs/s": speed.get("teacher_docs_s"), "run_dir": t["run_dir"]})
        p_t, p_s = t["test"].get("P@1"), s.get("P@1")
        n_t, n_s = t.get("n_parameters") or 0, r.get("n_parameters") or 0
        out.append({"system": f"student: {r['model']} <- {t['model']} {_loss_label(d['settings'])}",
                    "model": r["model"], "P@1": p_s,
                    "P@3": s.get("P@3"), "P@5": s.get("P@5"), "parameters": n_s,
                    "docs/s": speed.get("student_docs_s"),
                    "P@1 retained %": 100.0 * p_s / p_t if p_t else None,
                    "params ratio": n_t / n_s if n_s and n_t else None,
                    "speed ratio": speed.get("speedup"), "run_dir": r["run_dir"], "command": r.get("command"),
                    "settings": d["settings"], "form": d["form"], "transfer": d["transfer"],
                    "threads": speed.get("threads"), "fit_s": r.get("timing_s", {}).get("fit"),
                    "teacher_s": r.get("timing_s", {}).get("teacher")})
    return out


def _loss_label(settings: dict[str, Any]) -> str:
    """The loss weights in the row name: students of one teacher differ by them, and alpha 0 (the teacher's
    targets unused: the same transfer set and steps, supervised loss only) is the control row."""
    alpha, beta, temp = settings.get("alpha"), settings.get("beta"), settings.get("temperature")
    if not alpha:
        return f"(control: alpha 0, beta {beta:g}, no teacher signal)"
    return f"(alpha {alpha:g}, beta {beta:g}, T {temp:g})"


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "parameters":
        return f"{int(value):,}"
    if key in ("params ratio", "speed ratio"):
        return f"{value:.1f}x"
    if isinstance(value, float):
        return f"{value:.2f}" if key != "docs/s" else f"{value:,.0f}"
    return str(value)


def markdown(table: list[dict[str, Any]], dataset: str) -> str:
    lines = [f"# Distillation on {dataset}", "", "Machine-written by `xmlbench distill-table` from the student "
             "run records. P@k: test split, percent. docs/s: prediction on the validation split, teacher and "
             "student measured one after the other in the student's run (CPU, threads noted). Retention: "
             "student P@1 / teacher P@1.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in table:
        lines.append("| " + " | ".join(_cell(c, row.get(c)) for c in COLUMNS) + " |")
    lines += ["", "## Runs", ""]
    for row in table:
        if "command" not in row:
            continue
        s = row["settings"]
        lines.append(f"* `{row['command']}`")
        lines.append(f"  - teacher run `{s['teacher']}`; form {row['form']}, T {s['temperature']}, alpha "
                     f"{s['alpha']}, beta {s['beta']}, top-k {s['top_k']}; transfer set "
                     f"{row['transfer']['n_original']:,} documents + {row['transfer']['n_augmented']:,} "
                     f"augmented (copies {s['copies']}, p_mask {s['p_mask']}, p_ngram {s['p_ngram']}, "
                     f"n-grams {s['ngram_min']}-{s['ngram_max']} words, seed {s['augment_seed']}); teacher "
                     f"scoring {row['teacher_s'] or 0:.0f} s, student fit {row['fit_s'] or 0:.0f} s; "
                     f"{row['threads']} thread(s)")
    return "\n".join(lines) + "\n"


def csv(table: list[dict[str, Any]]) -> str:
    lines = [",".join(COLUMNS + ("run_dir",))]
    for row in table:
        lines.append(",".join(f'"{_cell(c, row.get(c))}"' for c in COLUMNS + ("run_dir",)))
    return "\n".join(lines) + "\n"

"""``xmlbench distill TEACHER_RUN --student MODEL [train options] --out DIR`` (``xmlbench.runs.distill``)."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from xmlbench.cli.train import add_train_arguments, options_from_args, print_metrics
from xmlbench.errors import UserError

HELP = {
    "alpha": "weight of the distillation term L_d (default %(default)s)",
    "beta": "weight of the supervised term L_s (default %(default)s)",
    "temperature": "softening temperature T (default %(default)s)",
    "top_k": "teacher labels kept per transfer document (default %(default)s)",
    "form": "sigmoid (multi-label), softmax (single-label, DistilBERT) or auto (default: by the data)",
    "copies": "augmented copies of each training document in the transfer set (default %(default)s)",
    "p_mask": "probability of masking each word of a copy (default %(default)s)",
    "p_ngram": "probability of cutting a copy to one n-gram (default %(default)s)",
    "ngram_min": "shortest sampled n-gram, in words (default %(default)s)",
    "ngram_max": "longest sampled n-gram, in words (default %(default)s)",
    "augment_seed": "seed of the augmentation draws (default %(default)s)",
}


def add_commands(sub) -> None:
    from xmlbench.runs.distill import DistillOptions

    p = sub.add_parser("distill", help="train a student (e.g. bilstm) on a finished teacher run's soft "
                                       "targets over an augmented transfer set")
    p.add_argument("teacher", help="a finished run folder (any model, or an ensemble run)")
    add_train_arguments(p, dataset=False, model="--student")
    hints = typing.get_type_hints(DistillOptions, include_extras=True)
    for f in dataclasses.fields(DistillOptions):
        if f.name == "teacher":
            continue
        base = typing.get_origin(hints[f.name]) is typing.Annotated and typing.get_args(hints[f.name])[0]
        kind = base or str
        choices = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is typing.Literal else None
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=f.default,
                       choices=choices, help=HELP[f.name])
    p.set_defaults(func=cmd_distill, model="bilstm")


def cmd_distill(args: argparse.Namespace) -> int:
    from xmlbench.runs import distill as kd
    from xmlbench.runs.runner import run

    if not args.out:
        raise UserError("distill needs --out DIR (the student's run folder)")
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(kd.DistillOptions) if f.name != "teacher"}
    distill = kd.DistillOptions(teacher=args.teacher, **fields)
    _, record = kd.check_teacher_run(args.teacher)
    dataset = record.get("dataset", {}).get("path")
    if not dataset:
        raise UserError(f"teacher run {args.teacher}: its record names no dataset path")
    args.dataset = dataset
    result = run(options_from_args(args), distill)
    print_metrics(result)
    d = result.get("distillation", {})
    teacher = d.get("teacher", {}).get("test", {})
    if teacher:
        print("teacher [test]: " + "  ".join(f"{k} {v:.2f}" for k, v in teacher.items()))
    if "inference" in d:
        i = d["inference"]
        print(f"inference docs/s ({i['split']}, {i['threads']} threads): teacher {i['teacher_docs_s']}, "
              f"student {i['student_docs_s']}")
    return 0

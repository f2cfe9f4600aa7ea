"""``xmlbench list models|encoders|variants|metrics|datasets|benchmarks``: every registry, one line each."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def _models() -> Iterable[tuple[str, str]]:
    from xmlbench.models import MODELS

    return ((name, e.description) for name, e in MODELS.items())


def _encoders() -> Iterable[tuple[str, str]]:
    from xmlbench.encoders import ENCODERS, OFFLINE_ENCODERS

    return ((name, s.description + ("" if name in OFFLINE_ENCODERS else " (downloads from the hub)"))
            for name, s in ENCODERS.items())


def _variants() -> Iterable[tuple[str, str]]:
    from xmlbench.models.lightxml.variants import VARIANTS

    return ((name, s.description + (" [clustered mode]" if s.needs_clustered else ""))
            for name, s in VARIANTS.items())


def _metrics() -> Iterable[tuple[str, str]]:
    from xmlbench.metrics import METRICS

    return ((f"{name}@k", s.description) for name, s in METRICS.items())


def _datasets() -> Iterable[tuple[str, str]]:
    from xmlbench.data.manifest import DATASETS
    from xmlbench.data.synth import PRESETS

    for name, info in DATASETS.items():
        yield name, f"{info.title} ({info.format} format, LightXML {info.mode} regime)"
    for name, spec in PRESETS.items():
        yield name, (f"synthetic: {spec.n_train:,} train / {spec.n_test:,} test documents, "
                     f"{spec.n_labels:,} labels (generated on first use)")


def _benchmarks() -> Iterable[tuple[str, str]]:
    from xmlbench.benchmarks import load_all

    return ((name, b.description) for name, b in load_all().items())


KINDS: dict[str, Callable[[], Iterable[tuple[str, str]]]] = {
    "models": _models,
    "encoders": _encoders,
    "variants": _variants,
    "metrics": _metrics,
    "datasets": _datasets,
    "benchmarks": _benchmarks,
}


def add_commands(sub) -> None:
    p = sub.add_parser("list", help=f"what is registered: {', '.join(KINDS)}")
    p.add_argument("kind", choices=list(KINDS), metavar="KIND", help=", ".join(KINDS))
    p.set_defaults(func=cmd_list)


def cmd_list(args) -> int:
    rows = list(KINDS[args.kind]())
    width = max((len(name) for name, _ in rows), default=0)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0

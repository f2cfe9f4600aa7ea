"""``xmlbench data list|check|download|synth``."""

from __future__ import annotations

import json
from pathlib import Path


def add_commands(sub) -> None:
    _add_data(sub)


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="list, check, download or synthesise datasets")
    dsub = data.add_subparsers(title="data commands", metavar="ACTION")
    lst = dsub.add_parser("list", help="every registered dataset and whether it is present locally")
    lst.set_defaults(func=cmd_data_list)
    chk = dsub.add_parser("check", help="validate a dataset and print its statistics")
    chk.add_argument("dataset", help="registered name, synthetic preset or folder")
    chk.add_argument("--json", action="store_true", help="print one JSON object")
    chk.set_defaults(func=cmd_data_check)
    dl = dsub.add_parser("download", help="fetch a registered dataset from its public source and verify it")
    dl.add_argument("dataset")
    dl.set_defaults(func=cmd_data_download)
    sy = dsub.add_parser("synth", help="write a synthetic dataset in the LightXML text format")
    sy.add_argument("preset")
    sy.add_argument("--out", required=True)
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--force", action="store_true", help="write into --out even if it holds other files")
    sy.set_defaults(func=cmd_data_synth)
    data.set_defaults(func=lambda a: (data.print_help(), 2)[1])


def cmd_data_list(args) -> int:
    from xmlbench.data.manifest import DATASETS
    from xmlbench.data.synth import PRESETS

    print(f"{'name':<16} {'present':<8} {'mode':<10} {'train':>10} {'test':>9} {'labels':>8}  folder")
    for name, info in DATASETS.items():
        present, missing = _presence(info.folder)
        pub = info.published
        print(
            f"{name:<16} {present:<8} {info.mode:<10} {pub.get('n_train', 0):>10,} {pub.get('n_test', 0):>9,} "
            f"{pub.get('n_labels', 0):>8,}  {info.folder}"
            + (f"  (missing {', '.join(missing)})" if missing else "")
        )
    from xmlbench.paths import datasets_dir

    for name in PRESETS.names():
        present = "yes" if (datasets_dir() / name / "synth.json").is_file() else "no"
        print(f"{name:<16} {present:<8} {'synthetic':<10} (generated on first use: xmlbench data synth {name})")
    return 0


def _presence(folder: Path) -> tuple[str, list[str]]:
    """"yes", "no", or "partial" with the files still missing (a half-unpacked download)."""
    from xmlbench.data.dataset import missing_files

    if not folder.is_dir() or not any(folder.iterdir()):
        return "no", []
    missing = missing_files(folder)
    return ("partial" if missing else "yes"), missing


def cmd_data_check(args) -> int:
    from xmlbench.data.dataset import dataset_stats, open_dataset

    ds = open_dataset(args.dataset, progress=not args.json)
    stats = dataset_stats(ds)
    if args.json:
        print(json.dumps(stats))
        return 0
    pub = stats.get("published", {})
    print(f"{ds.name}  ({stats['format']} format, {stats['path']}, fingerprint {stats['fingerprint']})")
    rows = [
        ("train documents", "n_train"),
        ("valid documents", "n_valid"),
        ("test documents", "n_test"),
        ("labels", "n_labels"),
        ("labels in train", "n_labels_train"),
        ("labels only in test", "n_labels_test_only"),
        ("avg labels / doc", "avg_labels_per_doc"),
        ("avg docs / label", "avg_docs_per_label"),
    ]
    print(f"  {'':<22} {'here':>12} {'published':>12}")
    for title, key in rows:
        here, ref = stats[key], pub.get(key)
        fmt = (lambda v: f"{v:,.2f}") if isinstance(here, float) else (lambda v: f"{int(v):,}")
        print(f"  {title:<22} {fmt(here):>12} {fmt(ref) if ref is not None else '':>12}")
    for key, title in (("label_freq_quantiles", "docs per label"), ("doc_len_words_quantiles", "words per doc")):
        if stats.get(key):
            qs = "  ".join(f"{k}={v:g}" for k, v in stats[key].items())
            print(f"  {title} quantiles: {qs}")
    return 0


def cmd_data_download(args) -> int:
    from xmlbench.data.download import download, verify

    dest = download(args.dataset)
    problems = verify(args.dataset)
    print(f"{args.dataset}: {dest}")
    for p in problems:
        print(f"  differs from the published figures: {p}")
    return 1 if problems else 0


def cmd_data_synth(args) -> int:
    from xmlbench.data.synth import write_synthetic

    counts = write_synthetic(args.preset, Path(args.out), seed=args.seed, force=args.force)
    print(json.dumps(counts))
    return 0



"""``dpcore corpus generate`` and ``dpcore corpus load``: thin command-line callers of dpcore.data.

The main ``dpcore`` parser calls :func:`add_corpus_commands`; each command sets ``func`` on its namespace.

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="dpcore")
>>> add_corpus_commands(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["corpus", "generate", "--kind", "ct", "--n", "10", "--out", "x.jsonl"])
>>> args.kind, args.n, args.func.__name__
('ct', 10, 'run_generate')
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import datasets

from dpcore.data.ctrate import load_ct_rate
from dpcore.data.generic import load_indiana, load_table
from dpcore.data.mimic import load_mimic_cxr
from dpcore.data.schema import dataset_meta
from dpcore.data.synthetic import generate_reports


def write_dataset(ds: datasets.Dataset | datasets.DatasetDict, out: str | Path) -> list[Path]:
    """Write ``ds`` to ``out``: ``.jsonl``, ``.csv`` or ``.parquet`` by suffix, else a ``save_to_disk``
    folder (which keeps the metadata). A DatasetDict written to a file gives one file per split
    (``out.train.jsonl``...). Returns the paths written."""
    out = Path(out)
    if isinstance(ds, datasets.DatasetDict):
        if not out.suffix:
            ds.save_to_disk(str(out))
            return [out]
        return [
            p
            for name, d in ds.items()
            for p in write_dataset(d, out.with_name(f"{out.stem}.{name}{out.suffix}"))
        ]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".jsonl":
        ds.to_json(str(out), lines=True)
    elif out.suffix == ".parquet":
        ds.to_parquet(str(out))
    elif out.suffix == ".csv":
        ds.map(lambda r: {"labels": json.dumps(r["labels"])}, features=None).to_csv(str(out), index=False)
    elif out.suffix:
        raise ValueError(_format_error(out))
    else:
        ds.save_to_disk(str(out))
    return [out]


OUTPUT_SUFFIXES = ("", ".jsonl", ".csv", ".parquet")


def _format_error(out: Path) -> str:
    return f"--out {out}: unknown output format {out.suffix!r} (use .jsonl, .csv, .parquet or a folder)"


def _check_out(out: str | Path) -> None:
    """Refuse an unknown output format before a long load or generation, not after."""
    if Path(out).suffix not in OUTPUT_SUFFIXES:
        raise ValueError(_format_error(Path(out)))


def _summary(ds: datasets.Dataset | datasets.DatasetDict) -> str:
    meta = dataset_meta(ds)
    load = meta.extra.get("load")
    sizes = {k: len(v) for k, v in ds.items()} if isinstance(ds, datasets.DatasetDict) else len(ds)
    lines = [
        f"source {meta.source} (label set {meta.label_set}, credentialed {meta.credentialed})",
        f"kept {sizes} reports",
    ]
    if load is not None:
        skipped = load.get("skipped", {})
        lines.append(
            f"left out {sum(skipped.values())}: "
            + ("; ".join(f"{n} {why}" for why, n in skipped.items()) or "none")
        )
        for key in ("impression_as_findings", "label_rows_without_report"):
            if load.get(key):
                lines.append(f"{key.replace('_', ' ')}: {load[key]}")
    else:
        lines.append("left out 0")
    return "\n".join(lines)


def run_generate(args: argparse.Namespace) -> int:

    _check_out(args.out)
    ds = generate_reports(
        kind=args.kind,
        n=args.n,
        seed=args.seed,
        patient_details=args.patient_details,
        canaries=args.canary or (),
        canary_repeats=args.canary_repeats,
    )
    paths = write_dataset(ds, args.out)
    print(_summary(ds))
    print("wrote " + ", ".join(map(str, paths)))
    return 0


# The options each source cannot do without (argparse cannot say "required for this source").
_REQUIRED = {"mimic-cxr": ("reports",), "table": ("path",), "indiana": ("path",)}


def _check_options(args: argparse.Namespace) -> None:
    _check_out(args.out)
    for name in _REQUIRED.get(args.source, ()):
        if getattr(args, name) is None:
            raise ValueError(f"corpus load {args.source} needs --{name.replace('_', '-')}")
    if args.source == "ct-rate" and not (args.root or args.reports_csv or args.from_hub):
        raise ValueError("corpus load ct-rate needs --root, --reports-csv or --from-hub")


def label_columns(pairs: list[str] | None) -> dict[str, str] | None:
    """``LABEL=COLUMN`` options as a mapping (None when there are none).

    >>> label_columns(["Edema=edema", "Pleural Effusion=effusion"])
    {'Edema': 'edema', 'Pleural Effusion': 'effusion'}
    """
    out = {}
    for pair in pairs or ():
        label, sep, column = pair.partition("=")
        if not sep or not label.strip() or not column.strip():
            raise ValueError(f"--label-column expects LABEL=COLUMN, got {pair!r}")
        out[label.strip()] = column.strip()
    return out or None


def run_load(args: argparse.Namespace) -> int:
    """Handler of ``corpus load``: bad input raises (nothing is written); the main command reports it."""
    _check_options(args)
    src = args.source
    if src == "mimic-cxr":
        ds = load_mimic_cxr(
            reports=args.reports, labels=args.labels, split=args.split, missing_findings=args.missing_findings
        )
    elif src == "ct-rate":
        ds = load_ct_rate(
            root=args.root,
            reports=args.reports_csv or (),
            labels=args.labels_csv or (),
            from_hub=args.from_hub,
            missing_findings="error" if args.missing_findings == "error" else "skip",
        )
    elif src == "indiana":
        ds = load_indiana(args.path)
    else:
        ds = load_table(
            args.path,
            text_column=args.text_column,
            label_set=args.label_set,
            label_columns=label_columns(args.label_column),
            id_column=args.id_column,
            patient_column=args.patient_column,
            impression_column=args.impression_column,
        )
    paths = write_dataset(ds, args.out)
    print(_summary(ds))
    print("wrote " + ", ".join(map(str, paths)))
    return 0


def add_corpus_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``corpus generate`` and ``corpus load`` on the main parser's subparsers."""
    corpus = subparsers.add_parser("corpus", help="generate or load report corpora in the common schema")
    sub = corpus.add_subparsers(dest="corpus_command", required=True)

    gen = sub.add_parser("generate", help="synthetic reports with ground-truth labels")
    gen.add_argument("--kind", choices=("cxr", "ct"), default="cxr")
    gen.add_argument("--n", type=int, default=2000, help="number of reports")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--patient-details", action="store_true", help="measurements, dates, accessions")
    gen.add_argument("--canary", action="append", help="sentence to plant (repeatable)")
    gen.add_argument("--canary-repeats", type=int, default=1)
    gen.add_argument("--out", required=True, help=".jsonl, .csv, .parquet, or a folder (save_to_disk)")
    gen.set_defaults(func=run_generate)

    load = sub.add_parser("load", help="read a real source and write it in the common schema")
    load.add_argument("source", choices=("mimic-cxr", "ct-rate", "table", "indiana"))
    load.add_argument("--reports", help="MIMIC-CXR: the reports folder or mimic-cxr-reports.zip")
    load.add_argument("--labels", help="MIMIC-CXR: chexpert or negbio label CSV (.csv or .csv.gz)")
    load.add_argument("--split", help="MIMIC-CXR: mimic-cxr-2.0.0-split.csv.gz")
    load.add_argument("--root", help="CT-RATE: the folder that holds dataset/")
    load.add_argument("--reports-csv", action="append", help="CT-RATE: a reports CSV (repeatable)")
    load.add_argument("--labels-csv", action="append", help="CT-RATE: a predicted-labels CSV (repeatable)")
    load.add_argument("--from-hub", action="store_true", help="CT-RATE: read through datasets (hub cache)")
    load.add_argument("--missing-findings", choices=("skip", "impression", "error"), default="skip")
    load.add_argument("--path", help="table / indiana: the CSV, JSONL or Parquet file")
    load.add_argument("--text-column", default="findings")
    load.add_argument("--label-set", default="chexpert", choices=("chexpert", "ctrate"))
    load.add_argument("--label-column", action="append", help="LABEL=COLUMN (repeatable)")
    load.add_argument("--id-column")
    load.add_argument("--patient-column")
    load.add_argument("--impression-column")
    load.add_argument("--out", required=True, help=".jsonl, .csv, .parquet, or a folder (save_to_disk)")
    load.set_defaults(func=run_load)

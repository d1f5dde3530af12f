"""``dpcore predict``: label a file of reports with a saved classifier (``dpcore train --save-model``).

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="dpcore")
>>> register(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["predict", "--model", "m", "reports.csv", "-o", "out.csv", "--probabilities"])
>>> args.model, args.input, args.output, args.probabilities, args.text_column
('m', 'reports.csv', 'out.csv', True, None)
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from dpcore.release.predict import predict_file

DESCRIPTION = """\
Label reports with a saved classifier. INPUT is a CSV / TSV / JSONL / Parquet file or a corpus folder (as
`dpcore corpus load` writes). The output holds every input row in input order: the report ids (the `id` column
when the input has one, else `row`: 1 is the first row after the header), one column per label in the CheXpert
convention: 1 positive, 0 negative, and a `status` column. A binary classifier gives no -1 (uncertain) or blank
(not mentioned) values: every label of every report it reads is decided at the model's saved thresholds. A row
with empty text is not read: its labels are blank and its status says `empty text` (the printed summary counts
such rows); --strict refuses such an input instead. --probabilities adds a P(label) column per label. The
report text is not copied. The output format follows OUTPUT's extension (.csv, .jsonl, .parquet)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict`` to the ``dpcore`` command (its handler is ``args.func``)."""
    p = subparsers.add_parser(
        "predict",
        help="label reports with a saved classifier (dpcore train --save-model)",
        description=DESCRIPTION,
    )
    p.add_argument("--model", required=True, help="folder of a saved classifier")
    p.add_argument("input", help="CSV/TSV/JSONL/Parquet file, or a corpus folder (save_to_disk)")
    p.add_argument("-o", "--output", required=True, help="output .csv, .jsonl or .parquet")
    p.add_argument(
        "--text-column", help="column of report text (default: the one the model was trained on, findings)"
    )
    p.add_argument("--id-column", help="column of report ids carried to the output (default: id, if present)")
    p.add_argument("--probabilities", action="store_true", help="also write each label's probability")
    p.add_argument("--batch-size", type=int, default=64, help="reports per forward pass (default 64)")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads: batches predicted at once, one thread each (default: torch's)",
    )
    p.add_argument(
        "--exact",
        action="store_true",
        help="compute exactly what the trained model did (bit for bit): LoRA adapters kept apart and torch's "
        "default kernels. By default adapters are merged and linear layers run through oneDNN on CPU, which "
        "is faster and agrees to float rounding (about 1e-6)",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="arithmetic of the fast path: auto (default) takes bfloat16 where a start-up probe measures it "
        "faster on this CPU (probabilities then agree to about 1e-2; the summary says which ran); --exact "
        "is always float32",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse an input with any empty text (default: write such rows blank, with status 'empty text')",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Handler of ``dpcore predict``: prints a JSON summary; exit status 0."""

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be positive, got {args.threads}")

        torch.set_num_threads(args.threads)
    summary = predict_file(
        args.model,
        args.input,
        args.output,
        text_column=args.text_column,
        id_column=args.id_column,
        batch_size=args.batch_size,
        with_probabilities=args.probabilities,
        fast=not args.exact,
        precision=args.precision,
        progress=not args.no_progress,
        strict=args.strict,
    )
    print(json.dumps(summary), file=sys.stdout)
    return 0

"""Reading label and report tables (CSV, CSV.gz, JSONL, Parquet) with errors that name file, row, field.

Rows are numbered from 1 after the header, as a spreadsheet would show them minus the header line.

>>> [parse_label(v, file="x.csv", row=3, field="Edema") for v in ("-1.0", "", "1")]
[-1, None, 1]
>>> parse_label("2", file="x.csv", row=3, field="Edema")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
dpcore.data.schema.DataError: file x.csv, row 3, field Edema: label value '2' is outside the scheme ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dpcore.data.schema import DataError

_LABEL_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1, "": None, "nan": None}


def parse_label(value: Any, *, file: str, row: int, field: str) -> int | None:
    """A label cell as 1, 0, -1 or None (empty); anything else is a :class:`DataError`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    key = str(value).strip()
    if key.lower() in _LABEL_VALUES:
        return _LABEL_VALUES[key.lower()]
    raise DataError(
        f"label value {value!r} is outside the scheme (1, 0, -1, empty)", file=file, row=row, field=field
    )


def read_table(path: str | Path, *, required: Sequence[str] = ()) -> pd.DataFrame:
    """A table as strings (empty cells are ``""``); checks that the file exists and has ``required`` columns.

    The format follows the suffix: ``.csv``, ``.csv.gz``, ``.tsv``, ``.jsonl``/``.json``, ``.parquet``.
    """
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", file=str(p))
    name = p.name.lower()
    try:
        if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
            sep = "\t" if ".tsv" in name else ","
            df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8")
        elif name.endswith((".jsonl", ".jsonl.gz", ".json")):
            df = pd.read_json(p, lines=not name.endswith(".json"), dtype=False)
        elif name.endswith(".parquet"):
            df = pd.read_parquet(p)
        else:
            raise DataError(
                "unknown table format (use .csv, .csv.gz, .tsv, .jsonl, .json or .parquet)", file=str(p)
            )
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=str(p)) from None
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"cannot parse table: {e}", file=str(p)) from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"missing columns {missing}; has {list(df.columns)}", file=str(p))
    return df


def cell_text(value: Any) -> str:
    """A text cell as a string; missing values become ``""``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)

"""Time synthetic corpus generation (20,000 reports of each kind); prints a JSON object on its last line."""

from __future__ import annotations

import json
import time

from dpcore.data import generate_reports


def main() -> None:
    out = {}
    for kind in ("cxr", "ct"):
        t0 = time.perf_counter()
        ds = generate_reports(kind=kind, n=20_000, seed=0)
        out[f"{kind}_20000_s"] = round(time.perf_counter() - t0, 3)
        out[f"{kind}_n"] = len(ds)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Data preparation time: read + preprocess + split + write the cache (cold), and a cache hit (warm).

    .venv/bin/python benchmarks/prepare.py                 # beauty, ml100k, yelp
    .venv/bin/python benchmarks/prepare.py --data beauty --repeats 5

Each dataset is prepared with the committed conf/data config through `cllm4rec.prepare`'s own
`prepared_dataset`, into a fresh temporary cache (cold, `force=True`), then read back from it
(warm). Median wall seconds over the repeats. Writes benchmarks/results/prepare.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, compose, load, machine, now, write_json  # noqa: E402


def bench(name: str, repeats: int) -> dict:
    from cllm4rec.prepare import prepared_dataset
    cfg = compose("prepare", [f"data={name}"]).data
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            ds, manifest = prepared_dataset(cfg, force=True, cache_dir=cache)
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            prepared_dataset(cfg, cache_dir=cache)
            warm.append(time.perf_counter() - t0)
    return {"data": name, "users": ds.n_users, "items": ds.n_items, "interactions": len(ds.user),
            "cold_s": round(statistics.median(cold), 3), "warm_s": round(statistics.median(warm), 4),
            "cold_over_warm": round(statistics.median(cold) / statistics.median(warm), 1),
            "interactions_per_s_cold": round(len(ds.user) / statistics.median(cold))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["beauty", "ml100k", "yelp"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "prepare.json"))
    args = ap.parse_args()
    start = load()
    results = [bench(d, args.repeats) for d in args.data]
    for r in results:
        print(r)
    write_json(args.out, {"benchmark": "data preparation (median wall seconds)", "machine": machine(),
                          "date": now(), "load_avg_start": start, "load_avg_end": load(),
                          "repeats": args.repeats, "results": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

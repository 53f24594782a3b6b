"""Collect an Optuna search (Hydra's sweeper) into one results file: its search space, every trial
and the chosen values, all on validation.

    .venv/bin/python -m cllm4rec.finetune --multirun hparams_search=beauty_loo_optuna
    .venv/bin/python benchmarks/search.py multirun/beauty/tiny_gpt2/search_beauty_loo/<date>

Reads each trial folder <sweep>/<n>/ (.hydra-finetune/ for its overrides and the sweeper's
config, finetune/metrics.json for its best epoch's validation metrics) and the sweeper's
optimization_results.yaml. Test metrics are left out on purpose: nothing selects on them.
Writes benchmarks/results/<name>.json, the trials' run name (search_beauty_loo.json), with search_
in front where the name lacks it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, now, write_json  # noqa: E402
from quality import commit  # noqa: E402


def trial(folder: Path) -> dict:
    hydra_dir = folder / ".hydra-finetune"
    overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text())
    metrics_path = folder / "finetune" / "metrics.json"
    row = {"number": int(folder.name), "overrides": overrides, "state": "complete" if metrics_path.exists() else "failed"}
    if metrics_path.exists():
        m = json.loads(metrics_path.read_text())
        row.update(val_sum=m.get("val_sum"), valid=m.get("valid"), epochs_run=m.get("epochs_run"),
                   fit_minutes=round(m["fit_seconds"] / 60, 2) if m.get("fit_seconds") else None)
    return row


def collect(sweep: Path) -> dict:
    trials = sorted((trial(d) for d in sweep.iterdir() if d.name.isdigit() and (d / ".hydra-finetune").is_dir()),
                    key=lambda t: t["number"])
    if not trials:
        raise SystemExit(f"{sweep}: no trial folders (<n>/.hydra-finetune/); run the sweep first")
    hydra_cfg = yaml.safe_load((sweep / str(trials[0]["number"]) / ".hydra-finetune" / "hydra.yaml").read_text())
    sweeper = hydra_cfg["hydra"]["sweeper"]
    done = [t for t in trials if t.get("val_sum") is not None]
    best = max(done, key=lambda t: t["val_sum"]) if done else None
    chosen_path = sweep / "optimization_results.yaml"
    chosen = yaml.safe_load(chosen_path.read_text()) if chosen_path.exists() else None
    name = yaml.safe_load((sweep / str(trials[0]["number"]) / "config-finetune.yaml").read_text())["name"]
    return {"name": name, "date": now(), "machine": machine(), "commit": commit(),
            "objective": "val/sum of the best epoch (recall@20 + recall@40 + ndcg@100 on validation)",
            "direction": sweeper.get("direction"), "sampler": sweeper.get("sampler"),
            "n_trials": sweeper.get("n_trials"), "search_space": sweeper.get("params"),
            "fixed_overrides": [o for o in trials[0]["overrides"]
                                if o.split("=")[0] not in (sweeper.get("params") or {})],
            "trials": trials, "best_trial": best and best["number"],
            "chosen": chosen and chosen.get("best_params"), "chosen_value": chosen and chosen.get("best_value")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", type=Path, help="the sweep folder (hydra.sweep.dir)")
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<search_name>.json")
    args = ap.parse_args()
    res = collect(args.sweep)
    stem = res["name"] if res["name"].startswith("search_") else f"search_{res['name']}"
    path = write_json(args.out or RESULTS / f"{stem}.json", res)
    print(f"wrote {path}: {len(res['trials'])} trials, best #{res['best_trial']} val/sum "
          f"{res['chosen_value']}: {res['chosen']}")


if __name__ == "__main__":
    main()

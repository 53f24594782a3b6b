"""Optuna (TPE) search of SASRec's settings on Beauty leave-one-out, on validation only.

    .venv/bin/python benchmarks/sasrec_search.py [--loss ce|sampled] [--trials 10] [--patience 5]
        [--trial-minutes 12] [--out benchmarks/results/search_sasrec_beauty_loo.json]

Each trial trains SASRec (benchmarks/sasrec.py's data and model, seed 0) with early stopping on
validation NDCG@10 and returns the best epoch's validation NDCG@10; test items are never scored.
The first trial is SASRec's default settings (the committed sasrec_beauty_loo.json row), so the
search reports what it gained over them. After every trial the results file is rewritten
(atomically) with the search space, every trial and the best values so far; re-running the same
command replays the finished trials into the study and continues, so a search can span sessions.
The chosen values then run with 3 seeds and a test evaluation through sasrec.py's flags
(`"command"` in the file).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, now, write_json  # noqa: E402
from sasrec import load_beauty_loo  # noqa: E402

# name -> (optuna distribution, sasrec.py flag); Optuna 2.10's classes (hydra-optuna-sweeper pins it). Chosen so one trial fits ~12 min on one CPU thread.
SPACE = {
    "n_layers": (optuna.distributions.IntUniformDistribution(1, 3), "--n-layers"),
    "n_heads": (optuna.distributions.CategoricalDistribution([1, 2]), "--n-heads"),
    "dim": (optuna.distributions.CategoricalDistribution([64, 128, 256]), "--dim"),
    "dropout": (optuna.distributions.UniformDistribution(0.1, 0.6), "--dropout"),
    "lr": (optuna.distributions.LogUniformDistribution(3e-4, 3e-3), "--lr"),
    "weight_decay": (optuna.distributions.CategoricalDistribution([0.0, 1e-6, 1e-5, 1e-4]), "--weight-decay"),
    "batch_size": (optuna.distributions.CategoricalDistribution([128, 256]), "--batch-size"),
    "ff_mult": (optuna.distributions.CategoricalDistribution([1, 4]), "--ff-mult"),   # RecBole: inner 4 x 64
}
DEFAULTS = {"n_layers": 1, "n_heads": 1, "dim": 64, "dropout": 0.2, "lr": 1e-3, "weight_decay": 0.0, "batch_size": 128,
            "ff_mult": 1}


def suggest(trial: optuna.Trial, name: str, dist):
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, optuna.distributions.IntUniformDistribution):
        return trial.suggest_int(name, dist.low, dist.high)
    return trial.suggest_float(name, dist.low, dist.high,
                               log=isinstance(dist, optuna.distributions.LogUniformDistribution))


def describe(dist) -> dict:
    return json.loads(optuna.distributions.distribution_to_json(dist))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--loss", choices=("ce", "sampled"), default="ce")
    p.add_argument("--trials", type=int, default=10, help="total trials, the replayed ones included")
    p.add_argument("--patience", type=int, default=5, help="validations without a better NDCG@10 before stopping")
    p.add_argument("--trial-minutes", type=float, default=12.0,
                   help="stop a trial's training after this many minutes (its best epoch so far counts)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    import torch

    from cllm4rec.sasrec import SASRec
    torch.set_num_threads(args.threads)
    out = args.out or RESULTS / f"search_sasrec{'' if args.loss == 'ce' else '_sampled'}_beauty_loo.json"
    fixed = {"loss": args.loss, "bf16": True, "max_epochs": 200, "patience": args.patience, "seed": 0}
    old = json.loads(out.read_text()) if out.exists() else {}
    if old and old.get("fixed") != fixed:
        raise SystemExit(f"{out} holds a search with other fixed settings ({old.get('fixed')}); "
                         f"pass --out <new file> or delete it to start over")
    ds, manifest = load_beauty_loo(args.data)

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)   # add_trial, in 2.10
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    dists = {k: d for k, (d, _) in SPACE.items()}
    trials = old.get("trials", [])
    for t in trials:                                   # replay: TPE conditions on every finished trial
        if set(t["params"]) != set(dists):
            raise SystemExit(f"{out}: trial {t['number']} has parameters {sorted(t['params'])}, the search space "
                             f"{sorted(dists)}: record what the trial ran with, or start a new file (--out)")
        study.add_trial(optuna.trial.create_trial(params=t["params"], distributions=dists, value=t["valid_ndcg@10"]))
    if not trials:
        study.enqueue_trial(DEFAULTS)

    def write() -> None:
        best = max(trials, key=lambda t: t["valid_ndcg@10"]) if trials else None
        chosen = best and best["params"]
        write_json(out, {
            "benchmark": "Optuna TPE search of SASRec on Beauty (S3-Rec Beauty.txt), leave-one-out",
            "objective": "best epoch's validation NDCG@10 (full ranking, training items masked); test never scored",
            "sampler": "optuna.samplers.TPESampler(seed=0); trial 0 = SASRec's defaults (enqueued)",
            "date": now(), "machine": machine(), "data": {"counts": ds.counts(), "cache_key": manifest.get("key")},
            "fixed": fixed, "trial_minutes": args.trial_minutes, "trials_requested": args.trials,
            "search_space": {k: describe(d) for k, d in dists.items()},
            **{k: old[k] for k in ("search_space_changes",) if k in old},
            "trials": trials, "best_trial": best and best["number"], "chosen": chosen,
            "chosen_value": best and best["valid_ndcg@10"],
            "command": chosen and " ".join(
                ["benchmarks/sasrec.py", "--seeds 0 1 2", f"--loss {args.loss}",
                 *(f"{SPACE[k][1]} {v}" for k, v in chosen.items()),
                 f"--out benchmarks/results/sasrec{'' if args.loss == 'ce' else '_sampled'}_searched_beauty_loo.json"]),
        })

    def objective(trial: optuna.Trial) -> float:
        params = {k: suggest(trial, k, d) for k, d in dists.items()}
        print(f"trial {len(trials)}: {params}", flush=True)
        t0 = time.perf_counter()
        model = SASRec(**fixed, **params, max_seconds=args.trial_minutes * 60, verbose=True).fit_dataset(ds)
        best = model.history[model.best_epoch]
        row = {"number": len(trials), "params": params, "valid_ndcg@10": best["valid_ndcg@10"],
               "valid_hr@10": best["valid_hr@10"], "best_epoch": model.best_epoch,
               "epochs_run": len(model.history), "stopped": model.stopped, "trial_minutes": args.trial_minutes,
               "threads": args.threads,
               "minutes": round((time.perf_counter() - t0) / 60, 2),
               "valid_ndcg@10_per_epoch": [round(e["valid_ndcg@10"], 5) for e in model.history
                                           if "valid_ndcg@10" in e]}
        trials.append(row)
        write()
        print(f"trial {row['number']}: valid NDCG@10 {row['valid_ndcg@10']:.4f} HR@10 {row['valid_hr@10']:.4f} "
              f"(epoch {row['best_epoch']} of {row['epochs_run']}, {row['stopped']}, {row['minutes']} min)", flush=True)
        return row["valid_ndcg@10"]

    study.optimize(objective, n_trials=max(0, args.trials - len(trials)))
    write()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Recommendation quality of the trained model against the baselines, on one split, over seeds.

    .venv/bin/python benchmarks/quality.py --name ml100k_tiny --seeds 0 1 2 \
        -- data=ml100k experiment=tiny
    .venv/bin/python benchmarks/quality.py --name ml100k_smollm2 --seeds 0 -- data=ml100k
    .venv/bin/python benchmarks/quality.py --name beauty_loo_tiny_sequential --seeds 0 \
        -- data=beauty data.split.protocol=loo experiment=tiny corpus=sequential ...

Per seed: the real entry points as a user runs them (`python -m cllm4rec.pretrain`, `finetune`,
`evaluate`, each a subprocess with the overrides after `--`, plus `seed=S name=q_<name>_s<S>
logger=none`; pretraining only where fine-tuning starts from it), so the numbers come from the committed configs and code. The split does not
depend on the training seed (data.split.seed), so seeds vary the training only; the baselines
of `cllm4rec.evaluate` (conf/evaluate.yaml: Pop, EASE, Multi-VAE; extra ones with
`+baseline@baselines.sasrec=sasrec` among the overrides) are fitted on the same split in the
same evaluation. A finished seed is reused unless --rerun: its evaluation.json in the run folder,
or its entry in the existing results file, when that run was trained with the config these
overrides compose now (data, backbone, corpus, model, seed: `TRAINING_SECTIONS`), so a later
session can add seeds to a file without retraining the old ones, e.g. `--seeds 0 1 2 -- ...
'~baselines.multivae'` where seed 0 already fitted Multi-VAE, and a changed default retrains
instead of mixing schedules. Entries without a stored config (files before 2026-12-04) are not
reused. A training stage cut off mid-run (a last.ckpt, no metrics.json) continues with
`resume=true`, so a seed longer than a session spans several; a stage that finished under the
same config is not trained again (delete a run's evaluation.json to evaluate it again).

Writes benchmarks/results/quality_<name>.json: per seed the training config, the full-ranking
test metrics of every row, the sampled-ranking metrics, the training minutes of each stage, and
per row the mean and the (population) standard deviation over seeds; the git commit.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, compose, load, machine, now, write_json  # noqa: E402

STAGES = ("pretrain", "finetune", "evaluate")


from cllm4rec.runs import TRAINING_SECTIONS  # noqa: E402


def run_folder(overrides: list[str], name: str) -> Path:
    """The run folder Hydra will use (runs/<data>/<backbone>/<name>), from the composed config."""
    from omegaconf import OmegaConf
    cfg = compose("pretrain", [*overrides, f"name={name}"])
    return ROOT / "runs" / str(cfg.data.name) / str(OmegaConf.select(cfg, "backbone.name")) / name


def training_config(cfg) -> dict:
    """The sections of a resolved config that decide the trained model (the same for both
    training stages: `model` holds both schedules)."""
    from omegaconf import DictConfig, OmegaConf
    if isinstance(cfg, dict):
        return {k: cfg.get(k) for k in TRAINING_SECTIONS}
    out = {}
    for k in TRAINING_SECTIONS:     # resolved one section at a time: logger/run paths need Hydra's runtime
        v = cfg.get(k)
        out[k] = OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig) else v
    return out


def expected_config(overrides: list[str], seed: int) -> dict:
    """What `cllm4rec.finetune` would be trained with today for these overrides and seed."""
    return training_config(compose("finetune", [*training_overrides(overrides), f"seed={seed}"]))


def stage_config(folder: Path, stage: str) -> dict | None:
    """The training config a run folder's stage was (last) started with (None: never)."""
    import yaml
    path = folder / f"config-{stage}.yaml"
    return training_config(yaml.safe_load(path.read_text())) if path.exists() else None


def folder_config(folder: Path) -> dict | None:
    """The training config a run folder's fine-tuning was run with (None: no such run)."""
    return stage_config(folder, "finetune")


def finished(folder: Path, overrides: list[str], seed: int) -> bool:
    """The run folder holds an evaluated run trained with the config these overrides compose now."""
    return (folder / "evaluation.json").exists() and folder_config(folder) == expected_config(overrides, seed)


def interrupted(folder: Path, stage: str, overrides: list[str], seed: int) -> bool:
    """A training stage that left a mid-run checkpoint and no metrics (a session ended during it),
    trained with the config these overrides compose now: the seed continues from there with
    `resume=true` instead of starting over (a checkpoint of another config is started over)."""
    cut = (folder / stage / "checkpoints" / "last.ckpt").exists() and not (folder / stage / "metrics.json").exists()
    return cut and stage_config(folder, stage) == expected_config(overrides, seed)


def commit() -> str | None:
    """HEAD of the checkout the numbers came from, '+dirty' when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        # results files are rewritten by the benchmarks themselves: only code and configs make it dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def training_overrides(overrides: list[str]) -> list[str]:
    """The overrides that change the trained model: baseline choices only concern the evaluation
    (e.g. `+baseline@baselines.sasrec=sasrec`, or `~baselines.ease` where another run holds it)."""
    return [a for a in overrides if not a.startswith(("+baseline", "~baselines"))]


def earlier_runs(path: Path, overrides: list[str]) -> dict[int, dict]:
    """Seeds of an existing results file trained with the config these overrides compose now."""
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    runs = {}
    for r in old.get("runs", []):
        r.setdefault("overrides", old.get("overrides", []))    # files written before runs kept their own
        r.setdefault("date", old.get("date"))
        r.setdefault("machine", old.get("machine"))
        if r.get("config") is not None and r["config"] == expected_config(overrides, r["seed"]):
            runs[r["seed"]] = r
        else:
            print(f"{path.name} seed {r['seed']}: trained with another config (or none stored): not reused",
                  flush=True)
    return runs


def stages_for(overrides: list[str]) -> tuple[str, ...]:
    """The entry points a seed runs: fine-tuning from random rows (model.finetune.from_pretrained=
    false) does not read pretraining, so it is not run."""
    return STAGES if compose("finetune", overrides).model.finetune.from_pretrained else STAGES[1:]


def one_seed(args, seed: int, folder: Path) -> dict:
    name = f"q_{args.name}_s{seed}"
    common = training_overrides(args.overrides)
    stages = stages_for(common)
    if args.rerun or not finished(folder, args.overrides, seed):
        for stage in stages:
            if (stage != "evaluate" and not args.rerun and (folder / stage / "metrics.json").exists()
                    and stage_config(folder, stage) == expected_config(args.overrides, seed)):
                print(f"  {stage}: trained with this config already ({folder.name}): reused", flush=True)
                continue
            extra = args.overrides if stage == "evaluate" else common
            cmd = [sys.executable, "-m", f"cllm4rec.{stage}", *extra, f"seed={seed}", f"name={name}",
                   "logger=none"] + (["plot=false"] if stage == "evaluate" else [])
            if not args.rerun and interrupted(folder, stage, common, seed):
                cmd.append("resume=true")
            t0 = time.perf_counter()
            print("+", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True)
            print(f"  {stage}: {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    ev = json.loads((folder / "evaluation.json").read_text())
    fit = {s: json.loads((folder / s / "metrics.json").read_text()).get("fit_seconds") for s in stages[:-1]}
    hist = json.loads((folder / "finetune" / "history.json").read_text())
    return {"seed": seed, "date": now(), "machine": machine(), "overrides": args.overrides,
            "config": folder_config(folder), "commit": commit(),
            "run": os.path.relpath(folder, ROOT), "fit_minutes": {k: round(v / 60, 2) for k, v in fit.items() if v},
            "finetune_val": [{k: e.get(k) for k in ("epoch", "loss_rec", "loss_rec_pop", "loss_seq", "val_recall@20",
                                                    "val_recall@40", "val_ndcg@100", "seconds") if k in e} for e in hist],
            "retrieval": ev["retrieval"], "ranking_sampled": ev["ranking_sampled"], "rating": ev.get("rating", {}),
            **({"cold_items": ev["cold_items"]} if "cold_items" in ev else {}),
            "split": ev["split"], "data": ev["data"], "backbone": ev["backbone"]}


def summary(runs: list[dict], part: str) -> dict:
    out = {}
    for row in runs[0][part]:
        keys = [k for k, v in runs[0][part][row].items() if isinstance(v, float)]
        out[row] = {}
        for k in keys:
            vals = [r[part][row][k] for r in runs if row in r[part]]
            out[row][k] = {"mean": round(statistics.fmean(vals), 5),
                           "std": round(statistics.pstdev(vals), 5), "n": len(vals)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="results/quality_<name>.json and the run names")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rerun", action="store_true", help="train again even where a seed has finished")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every stage (after --)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    path = RESULTS / f"quality_{args.name}.json"
    before = {} if args.rerun else earlier_runs(path, args.overrides)
    folders = {s: run_folder(training_overrides(args.overrides), f"q_{args.name}_s{s}") for s in args.seeds}
    # a run folder on this machine wins over the file's copy of the same seed
    reused = [s for s in args.seeds if s in before and not finished(folders[s], args.overrides, s)]
    if reused:
        print(f"reusing seeds {reused} from {path.name} (same training overrides)", flush=True)
    runs = [before[s] if s in reused else one_seed(args, s, folders[s]) for s in args.seeds]
    out = {"benchmark": "quality", "name": args.name, "date": now(), "commit": commit(), "machine": machine(), "load": load(),
           "overrides": args.overrides, "seeds": args.seeds,
           "protocol": runs[0]["split"], "data": runs[0]["data"], "backbone": runs[0]["backbone"],
           "summary": summary(runs, "retrieval"), "summary_sampled": summary(runs, "ranking_sampled"),
           "runs": runs, "wall_minutes": round((time.perf_counter() - t0) / 60, 1)}
    if "cold_items" in runs[0]:     # a cold_items split: the views of cllm4rec.evaluate, each summarised
        views = [v for v in runs[0]["cold_items"]["views"]]
        out["summary_cold_items"] = {v: summary([{"view": r["cold_items"][v]} for r in runs], "view") for v in views}
        out["cold_views"] = runs[0]["cold_items"]["views"]
    if reused:
        out["reused_seeds"] = reused
    path = write_json(path, out)
    print(f"wrote {path}")
    for row, m in out["summary"].items():
        print(f"{row:>12}: " + "  ".join(f"{k} {m[k]['mean']:.4f}±{m[k]['std']:.4f}"
                                          for k in ("recall@20", "recall@40", "ndcg@100", "hr@10", "ndcg@10") if k in m))
    for view, rows in out.get("summary_cold_items", {}).items():
        for row, m in rows.items():
            print(f"{view} {row:>12}: recall@20 {m['recall@20']['mean']:.4f}±{m['recall@20']['std']:.4f}  "
                  f"ndcg@20 {m['ndcg@20']['mean']:.4f}")


if __name__ == "__main__":
    main()

"""Evaluate a trained run against the baselines on the same split, print and save the table.

    python -m cllm4rec.evaluate                       # runs/ml100k/smollm2_135m/default
    python -m cllm4rec.evaluate data=beauty name=my_run '~baselines.multivae'
    python -m cllm4rec.evaluate data=beauty data.split.protocol=loo +baseline@baselines.sasrec=sasrec

Rows: CLLM4Rec (the run's fine-tuned embeddings) and each configured baseline (`baselines.*`, the `baseline` group: config.py),
fitted on the training part and scored by the same metric code (cllm4rec.metrics).
Tasks:
  retrieval  full-catalogue ranking of the test part, training + validation items excluded
             (recall@K with CLLM4Rec's min(K, |T_u|) denominator, ndcg@K, hr@K, mrr)
  ranking    SAMPLED protocol: one held-out test item per user (leave-one-out: the item; random
             splits: one of the user's test items drawn with `sampled.seed`) against
             `sampled.n_negatives` items the user never interacted with, drawn with the same seed
  cold items on a cold_items split (data.split.protocol=cold_items): the held-out items' rows come
             from their text (cold_items.py: `blend`, the CLLM4Rec row; `text`, `projection` and
             `neighbours` in rows of their own), then four
             views, each labelled: catalogue (all items, all test items; the retrieval table),
             cold (only the cold items ranked, their test interactions the targets), cold in
             catalogue (all items ranked, cold targets) and warm (warm items, warm targets). The
             item-text baselines (`cold_baselines`: random, TF-IDF k-NN, backbone k-NN) join them;
             ID-only baselines cannot rank a cold item and appear in the warm and catalogue views
  rating     when the run trained rating documents (corpus.rating): RMSE / MAE of the expected
             rating on the test part's rated pairs vs the global mean and user+item biases
Writes <run>/evaluation.json, evaluation.md and plot.png (training curves and the test bars).
"""
from __future__ import annotations

import functools
import sys
import time

import hydra
import numpy as np
import scipy.sparse as sp
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from . import metrics
from .backbone import pad_id
from .baselines import BiasRating, MeanRating
from .data.dataset import TEST, TRAIN
from .errors import reported
from .modules import CLLM4RecModule, Schedule
from .recommend import load_trained
from .runs import Run
from .config import checked_model_config
from .train import results_table

RETRIEVAL_KS = (5, 10, 20, 40, 100)   # 5 and 10: the leave-one-out rows of method.md
COLD_VIEWS = {"cold": "only the cold items ranked; targets: the users' cold test items",
              "cold_in_catalogue": "every item ranked; targets: the users' cold test items",
              "warm": "only the warm items ranked; targets: the users' warm test items"}


class _RowCache:
    """A score_fn that scores each user once and keeps the row ([U, J] float32 at most): the cold
    views rank the same users' scores over other columns."""

    def __init__(self, score_fn):
        self.score_fn, self.rows = score_fn, {}

    def __call__(self, users: torch.Tensor) -> torch.Tensor:   # [B] -> [B, J] on the CPU
        todo = [u for u in users.tolist() if u not in self.rows]
        if todo:
            self.rows.update(zip(todo, self.score_fn(torch.as_tensor(todo)).float().cpu()))
        return torch.stack([self.rows[u] for u in users.tolist()])


def cold_views(scorers: dict, ds, seen, target, cold_capable: set, max_batch_bytes: int) -> dict:
    """{view: {row: metrics}} of COLD_VIEWS (see the module docstring)."""
    cold = ds.cold_items
    out = {}
    for view, (cols, targets) in {"cold": (cold, cold), "cold_in_catalogue": (np.ones_like(cold), cold),
                                  "warm": (~cold, ~cold)}.items():
        c = np.flatnonzero(cols)
        t = target.multiply(sp.csr_matrix(targets.astype(np.float32)[None, :])).tocsr()[:, c]
        c_t = torch.as_tensor(c)
        out[view] = {}
        for name, score in scorers.items():
            if view != "warm" and name not in cold_capable:
                continue
            with torch.no_grad():
                out[view][name] = metrics.evaluate(lambda u, score=score: score(u)[:, c_t],
                                                   seen[:, c], t, (10, 20, 50), ("recall", "ndcg", "hr"),
                                                   max_batch_bytes=max_batch_bytes, label=f"{name}: {view} view")
    return out


def one_heldout_per_user(target: sp.csr_matrix, seed: int) -> sp.csr_matrix:
    """Keep one target item per user (uniformly, seeded per user); users without one stay empty."""
    target = sp.csr_matrix(target)
    rows, cols = [], []
    for u in np.flatnonzero(np.diff(target.indptr)):
        items = target.indices[target.indptr[u]:target.indptr[u + 1]]
        rows.append(u)
        cols.append(items[np.random.default_rng([seed, int(u)]).integers(len(items))])
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=target.shape)


def evaluate_run(cfg: DictConfig) -> dict:
    torch.manual_seed(cfg.seed)
    run = Run(cfg.run_dir)
    rcfg, ds, builder, model = load_trained(run, needs=("test",))
    m = checked_model_config(rcfg.model)
    module = CLLM4RecModule(model, builder, Schedule(stage="finetune"), eval_batch_size=m.eval_batch_size,
                            eval_max_tokens=m.eval_max_tokens, pad_id=pad_id(builder.tokenizer)).eval()
    bf16 = str(rcfg.trainer.get("precision", "")).startswith("bf16")

    seen, target = ds.matrix("train", "valid"), ds.matrix("test")
    heldout = one_heldout_per_user(target, cfg.sampled.seed)
    users, cand = metrics.sampled_candidates(ds.matrix("train", "valid", "test"), heldout,
                                             cfg.sampled.n_negatives, cfg.sampled.seed)
    scorers = {"CLLM4Rec": lambda u: module.score_users(u, "test")}
    placing = {}                 # row name -> the call that writes its cold-item rows first
    cold_capable = {"CLLM4Rec"}
    extra = {}
    if ds.cold_items is not None:
        from .cold_items import ItemRows, place_cold_items
        from .text_init import text_field
        init_field = ([text_field(ds.item_text, rcfg.model.get("item_init_field"))]
                      if rcfg.model.get("item_init") == "text" else None)
        # the variants first, the default (blend) last: it is then in place for the rating task
        variants = {"CLLM4Rec (text rows)": ("text", init_field), "CLLM4Rec (projection)": ("projection", None),
                    "CLLM4Rec (neighbours)": ("neighbours", None), "CLLM4Rec": ("blend", None)}
        scorers = {name: scorers["CLLM4Rec"] for name in variants} | {k: v for k, v in scorers.items() if k not in variants}
        # one blend fit (backbone text vectors + TF-IDF) serves projection and neighbours; text rows
        # have their own fit (and the item_init field, if any)
        blend = functools.cache(lambda: ItemRows("blend").fit(model, builder))
        placing = {name: (lambda mode=mode, fields=fields: place_cold_items(model, builder, mode, fields) if mode == "text"
                          else place_cold_items(model, builder, mode, fitted=blend()))
                   for name, (mode, fields) in variants.items()}
        cold_capable |= set(placing)
        extra = dict(cfg.get("cold_baselines") or {})
        cold_capable |= set(extra)
    timings = {}
    for name, bcfg in {**(cfg.baselines or {}), **extra}.items():
        t0 = time.perf_counter()
        print(f"fitting {name} on the training part", file=sys.stderr, flush=True)   # EASE's solve has no steps to show
        baseline = instantiate(bcfg)
        if hasattr(baseline, "fit_dataset"):   # a sequence model (SASRec): time order; test input = train + valid
            scorers[name] = baseline.fit_dataset(ds).scorer("test")
        else:
            scorers[name] = baseline.fit(ds.matrix("train"), valid=ds.matrix("valid"))
        timings[name] = round(time.perf_counter() - t0, 2)

    rows, sampled, cold = {}, {}, {}
    for name, score in scorers.items():
        if name in placing:
            print(f"{name}: cold-item rows from their text: {placing[name]()}", file=sys.stderr, flush=True)
        if ds.cold_items is not None:
            score = scorers[name] = _RowCache(score)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and name.startswith("CLLM4Rec")):
            # every sampled user has a test item, so retrieval scores it: one scoring pass serves both
            recorder = metrics.CandidateRecorder(score, users, cand)
            rows[name] = metrics.evaluate(recorder, seen, target, RETRIEVAL_KS, ("recall", "ndcg", "hr", "mrr"),
                                          max_batch_bytes=m.max_eval_bytes, label=f"{name}: ranking the test users")
            sampled[name] = recorder.sampled(cfg.sampled.ks)
            if ds.cold_items is not None:
                for view, per_row in cold_views({name: score}, ds, seen, target, cold_capable, m.max_eval_bytes).items():
                    cold.setdefault(view, {}).update(per_row)
                score.rows.clear()
        print(f"{name}: recall@20 {rows[name]['recall@20']:.4f}", file=sys.stderr)

    keys = (["hr@5", "hr@10", "ndcg@5", "ndcg@10", "recall@20"] if rcfg.data.split.protocol == "loo"
            else [*metrics.VAL_KEYS, "hr@10", "ndcg@10"])
    skeys = [f"sampled_{m_}@{k}" for m_ in ("hr", "ndcg") for k in cfg.sampled.ks]
    table = (f"Retrieval: full ranking of the test part ({ds.name}, {rcfg.data.split.protocol} split, "
             f"{rows['CLLM4Rec']['n_users_evaluated']} users)\n\n" + results_table(rows, keys)
             + f"\n\nRanking (SAMPLED: one held-out item vs {cfg.sampled.n_negatives} sampled negatives, "
             f"seed {cfg.sampled.seed})\n\n" + results_table(sampled, skeys))
    for view, per_row in cold.items():
        table += (f"\n\nCold items, {view} view ({COLD_VIEWS[view]}; {int(ds.cold_items.sum())} cold items, "
                  f"{next(iter(per_row.values()))['n_users_evaluated']} users)\n\n"
                  + results_table(per_row, ["recall@20", "ndcg@20", "recall@50", "hr@10"]))
    rating = {}
    if rcfg.corpus.get("rating"):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            rating["CLLM4Rec"] = module.rating_metrics("test")   # (cold rows: the last placed)
        train = np.flatnonzero((ds.split == TRAIN) & np.isfinite(ds.rating))
        test = np.flatnonzero((ds.split == TEST) & np.isfinite(ds.rating))
        for name, baseline in (("mean rating", MeanRating()), ("user+item bias", BiasRating())):
            baseline.fit(ds.user[train], ds.item[train], ds.rating[train])
            rating[name] = metrics.rating_errors(baseline.predict(ds.user[test], ds.item[test]), ds.rating[test])
        table += (f"\n\nRating prediction (test part, {rating['CLLM4Rec']['n_ratings']} rated pairs)\n\n"
                  + results_table(rating, ["rmse", "mae"]))
    results = {"data": ds.name, "split": OmegaConf.to_container(rcfg.data.split, resolve=True),
               "backbone": rcfg.backbone.name, "run": str(run.root), "retrieval": rows, "ranking_sampled": sampled,
               "rating": rating, **({"cold_items": {"n_cold": int(ds.cold_items.sum()), "views": COLD_VIEWS, **cold}}
                                    if ds.cold_items is not None else {}),
               "baseline_fit_seconds": timings,
               "baselines": OmegaConf.to_container(cfg.baselines, resolve=True) if cfg.baselines else {}}
    run.write_evaluation(results, table)
    if cfg.plot:
        from .plots import plot_run
        plot_run(run, rows)
    print(table)
    return results


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
@reported
def _main(cfg: DictConfig) -> None:
    try:
        evaluate_run(cfg)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()

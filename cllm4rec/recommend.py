"""Recommending for real users from a trained run, without Lightning.

    rec = Recommender.from_run("runs/ml100k/smollm2_135m/default")
    rec.recommend(user="196", k=10)                      # a known user, by raw id
    rec.recommend(history=["242", "302", "377"], k=10)    # a new user: cold start, no retraining

    python -m cllm4rec.recommend runs/ml100k/smollm2_135m/default --user 196 -k 10
    python -m cllm4rec.recommend runs/ml100k/smollm2_135m/default --history 242 302 377

A known user is described by the fine-tuning prompt over all of their training items, as in
evaluation; their interactions (every split part) are excluded from the list. A new user has no
trained token: their prompt carries the mean of the trained user embeddings in its place (the
user we know nothing about beyond the history), and the given items are excluded.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import OmegaConf

from .backbone import load_backbone
from .corpus import CorpusBuilder, CorpusConfig, collate
from .data.dataset import Dataset
from .errors import RunError
from .model import CLLM4Rec
from .runs import Run
from .tuning import load_trained_state, tuning_kwargs
from .vocab import Vocab

TITLE_FIELDS = ("title", "movie_title", "name")


def load_trained(run: Run, stage: str = "finetune", needs: tuple[str, ...] = ()):
    """A run folder -> (its config, dataset, corpus builder, trained CLLM4Rec). The dataset comes
    from the prepared-data cache (rebuilt from the run's data config if missing); no Lightning.
    `needs`: the split parts the caller scores (prepared_dataset)."""
    from .prepare import prepared_dataset   # the run's data config names its reader

    path = run.root / f"config-{stage}.yaml"
    if not path.exists():
        raise RunError(f"{path} not found: no finished {stage} stage in {run.root}; run "
                                f"`python -m cllm4rec.{stage}` with the same data/backbone/name first")
    rcfg = OmegaConf.load(path)
    ds = run_dataset(run, needs) if run.dataset_folder().exists() else \
        prepared_dataset(rcfg.data, strict=rcfg.strict_data, needs=needs)[0]   # folders from before data/
    tables, meta = run.load_embeddings(stage)
    if (meta.get("n_users"), meta.get("n_items")) != (ds.n_users, ds.n_items):
        raise RunError(f"{run.embeddings_path(stage)} is for {meta.get('n_users')} users / {meta.get('n_items')} "
                         f"items, the run's dataset now has {ds.n_users} / {ds.n_items}: the data changed")
    backbone, tokenizer = load_backbone(rcfg.backbone.name, seed=rcfg.seed)
    vocab = Vocab(backbone.get_input_embeddings().num_embeddings, ds.n_users, ds.n_items)
    builder = CorpusBuilder(ds, tokenizer, vocab,
                            CorpusConfig.from_mapping(OmegaConf.to_container(rcfg.corpus, resolve=True)))
    model = CLLM4Rec(backbone, vocab, **tuning_kwargs(rcfg.model))
    model.load_id_embeddings(tables)
    tuned = run.load_backbone_state(stage)
    if tuned is not None:
        load_trained_state(model.backbone, tuned[0], str(run.backbone_path(stage)))
    elif model.backbone_tuning != "frozen":
        raise RunError(f"{run.backbone_path(stage)} not found: the run tuned its backbone "
                                f"(model.backbone_tuning={model.backbone_tuning}) but its weights are missing")
    return rcfg, ds, builder, model.eval()


def run_dataset(run: Run, needs: tuple[str, ...] = ()) -> Dataset:
    """The dataset a run folder keeps (data/), checked against the sha256 of its manifest."""
    from .data.cache import cache_damage
    from .data.splits import split_problems

    folder = run.dataset_folder()
    damage = cache_damage(folder)
    if damage:
        raise RunError(f"{folder} is damaged ({damage}): delete it to fall back on the run's data config "
                       f"(the raw files must then be there), or copy the run folder again")
    problems = split_problems(json.loads((folder / "manifest.json").read_text())["split"], needs)
    if problems:
        raise RunError(f"{folder}: " + "; ".join(problems))
    return Dataset.load(folder)


class Recommender:
    def __init__(self, model: CLLM4Rec, builder: CorpusBuilder, *, device: str | torch.device = "cpu",
                 batch_size: int = 64):
        """model: a CLLM4Rec with one extra user row at the end (the cold-start user, see
        `from_run`); builder: the run's corpus over its dataset (prompts, raw ids, titles)."""
        self.model, self.builder, self.ds = model, builder, builder.ds
        self.device, self.batch_size = torch.device(device), batch_size
        self.model.to(self.device).eval()
        self._user_index = {u: i for i, u in enumerate(self.ds.user_ids)}
        self._item_index = {j: i for i, j in enumerate(self.ds.item_ids)}
        self._seen = self.ds.matrix("train", "valid", "test")
        field = next((f for f in TITLE_FIELDS if f in self.ds.item_text), None)
        self.titles = self.ds.item_text[field] if field else None

    @classmethod
    def from_run(cls, run_dir: str | Path, stage: str = "finetune", device: str | torch.device = "cpu") -> "Recommender":
        """Load a run folder (see `load_trained`) and add the cold-start user row."""
        _, ds, builder, trained = load_trained(Run(run_dir), stage)
        tables = trained.id_embeddings()
        # one extra user row: the cold-start user = the mean trained user embedding
        model = CLLM4Rec(trained.backbone, Vocab(builder.vocab.n_vocab, ds.n_users + 1, ds.n_items))
        model.load_id_embeddings({k: torch.cat([v, v.mean(0, keepdim=True)]) if k.endswith(".user") else v
                                  for k, v in tables.items()})
        return cls(model, builder, device=device)

    # ------------------------------------------------------------------ ids
    def user_index(self, user: str) -> int:
        try:
            return self._user_index[str(user)]
        except KeyError:
            raise KeyError(f"unknown user id {user!r}: not in dataset {self.ds.name!r} "
                           f"({self.ds.n_users} users, e.g. {self.ds.user_ids[:3]}); "
                           "for a new user pass history=[item ids] instead") from None

    def item_indices(self, items: Sequence[str]) -> np.ndarray:
        unknown = [str(i) for i in items if str(i) not in self._item_index]
        if unknown:
            raise KeyError(f"unknown item id(s) {unknown[:10]}: not in dataset {self.ds.name!r} "
                           f"({self.ds.n_items} items, e.g. {self.ds.item_ids[:3]})")
        return np.asarray([self._item_index[str(i)] for i in items], np.int64)

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def scores(self, users: Sequence[int | None], histories: Sequence[np.ndarray]) -> torch.Tensor:
        """[B] user indices (None = a new user) and item-index histories -> [B, J] scores."""
        v = self.builder.vocab
        cold = v.n_users   # the extra row
        docs = self.builder.prompts(np.asarray([0 if u is None else u for u in users], np.int64), histories)
        out = []
        for start in range(0, len(users), self.batch_size):
            idx = np.arange(start, min(start + self.batch_size, len(users)))
            b = collate(docs, idx)
            ids = b["input_ids"]
            # the serving model's layout has one more user: items move up by one row
            ids = torch.where(ids >= v.item_offset, ids + 1, ids)
            for r, u in zip(range(len(idx)), idx):
                if users[u] is None:
                    ids[r][(ids[r] >= v.user_offset) & (ids[r] < v.item_offset)] = v.user_offset + cold
            out.append(self.model.recommend_logits(ids.to(self.device), b["attention_mask"].to(self.device),
                                                   b["last_prompt_index"].to(self.device)).float().cpu())
        return torch.cat(out) if out else torch.empty(0, v.n_items)

    def recommend(self, user: str | None = None, *, history: Sequence[str] | None = None, k: int = 10,
                  exclude_seen: bool = True) -> list[dict]:
        """Top-k items for a known user (raw id) or a new user given as raw item ids:
        [{"rank", "item", "title", "score"}], best first; seen items excluded. Fewer than k (with a
        warning) when fewer items are left to recommend."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a whole number >= 1 (how many items to recommend), got {k!r}")
        if (user is None) == (history is None):
            raise ValueError("give exactly one of user= (a known raw user id) or history= (raw item ids)")
        if user is not None:
            u = self.user_index(user)
            hist = self.builder.train_item[self.builder.train_ptr[u]:self.builder.train_ptr[u + 1]]
            seen = self._seen.indices[self._seen.indptr[u]:self._seen.indptr[u + 1]]
            s = self.scores([u], [hist])[0]
        else:
            hist = self.item_indices(history)
            seen = hist
            s = self.scores([None], [hist])[0]
        if exclude_seen and len(seen):
            s[torch.as_tensor(seen)] = -torch.inf
        left = int(torch.isfinite(s).sum())
        if k > left:
            warnings.warn(f"k={k} but only {left} of the {self.ds.n_items} items are left to recommend "
                          f"({self.ds.n_items - left} already seen): returning {left}", stacklevel=2)
        top = torch.topk(s, min(k, left))
        return [{"rank": r + 1, "item": self.ds.item_ids[j], "title": self.titles[j] if self.titles else None,
                 "score": round(float(x), 4)} for r, (x, j) in enumerate(zip(top.values.tolist(), top.indices.tolist()))]


def _positive_int(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return k


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="cllm4rec-recommend", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run folder, e.g. runs/ml100k/smollm2_135m/default")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--user", help="a known user's raw id")
    g.add_argument("--history", nargs="+", help="raw item ids of a new user")
    p.add_argument("-k", type=_positive_int, default=10, help="how many items (>= 1)")
    p.add_argument("--stage", default="finetune", choices=("pretrain", "finetune"))
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = p.parse_args(argv)
    try:
        rec = Recommender.from_run(a.run, stage=a.stage)
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always")
            items = rec.recommend(a.user, history=a.history, k=a.k)
    except (KeyError, FileNotFoundError, ValueError) as e:   # DataError and RunError are ValueErrors
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        sys.exit(2)
    for note in notes:
        print(f"note: {note.message}", file=sys.stderr)
    if a.json:
        print(json.dumps(items, indent=1))
        return
    for r in items:
        print(f"{r['rank']:>3}  {r['item']:<12} {r['score']:>9.3f}  {r['title'] or ''}")


if __name__ == "__main__":
    main()

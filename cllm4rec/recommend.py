"""Recommending for real users from a trained run, without Lightning.

    rec = Recommender.from_run("runs/ml100k/smollm2_135m/default")
    rec.recommend(user="196", k=10)                      # a known user, by raw id
    rec.recommend(history=["242", "302", "377"], k=10)    # a new user: cold start, no retraining

    rec.add_items({"n1": "Toy Story 3 (2010); genres: Animation, Children's, Comedy"})   # new items, no retraining

    python -m cllm4rec.recommend runs/ml100k/smollm2_135m/default --user 196 -k 10
    python -m cllm4rec.recommend runs/ml100k/smollm2_135m/default --history 242 302 377
    python -m cllm4rec.recommend runs/ml100k/smollm2_135m/default --user 196 --add-items new.json [--save-items]

A known user is described by the fine-tuning prompt over all of their training items, as in
evaluation; their interactions (every split part) are excluded from the list. A new user has no
trained token: their prompt carries the mean of the trained user embeddings in its place (the
user we know nothing about beyond the history), and the given items are excluded.

New items (`add_items`, `--add-items`) get their rows from their text (cold_items.py: a ridge
projection of the backbone's reading blended with the rows of the most similar trained items); they are appended after the trained items, so no other
item's score changes. They persist in the run folder (<run>/<stage>/added_items.safetensors) only
when asked (`save=True`, `--save-items`), and load with the run from then on.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf

from .backbone import load_backbone
from .cold_items import ItemRows, describe
from .text_init import TITLE_FIELDS
from .corpus import CorpusBuilder, CorpusConfig, collate
from .data.dataset import Dataset
from .errors import RunError
from .model import SIDES, CLLM4Rec
from .runs import Run
from .tuning import load_trained_state, tuning_kwargs
from .vocab import Vocab



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
                 batch_size: int = 64, run: Run | None = None, stage: str = "finetune"):
        """model: a CLLM4Rec with one extra user row at the end (the cold-start user, see
        `from_run`); builder: the run's corpus over its dataset (prompts, raw ids, titles);
        run / stage: where `add_items(save=True)` writes."""
        self.model, self.builder, self.ds = model, builder, builder.ds
        self.device, self.batch_size = torch.device(device), batch_size
        self.run, self.stage = run, stage
        self.model.to(self.device).eval()
        self._user_index = {u: i for i, u in enumerate(self.ds.user_ids)}
        self.item_ids = list(self.ds.item_ids)
        self._item_index = {j: i for i, j in enumerate(self.item_ids)}
        self._seen = self.ds.matrix("train", "valid", "test")
        field = next((f for f in TITLE_FIELDS if f in self.ds.item_text), None)
        self.titles = list(self.ds.item_text[field]) if field else None
        self._placer: ItemRows | None = None
        self.added: dict[str, str] = {}          # item id -> text, of the items added at serving time

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_run(cls, run_dir: str | Path, stage: str = "finetune", device: str | torch.device = "cpu") -> "Recommender":
        """Load a run folder (see `load_trained`), add the cold-start user row and the items saved
        with `add_items(save=True)`; on a cold_items split, place the held-out items by their text."""
        run = Run(run_dir)
        _, ds, builder, trained = load_trained(run, stage)
        tables = trained.id_embeddings()
        # one extra user row: the cold-start user = the mean trained user embedding
        model = CLLM4Rec(trained.backbone, Vocab(builder.vocab.n_vocab, ds.n_users + 1, ds.n_items))
        model.load_id_embeddings({k: torch.cat([v, v.mean(0, keepdim=True)]) if k.endswith(".user") else v
                                  for k, v in tables.items()})
        rec = cls(model, builder, device=device, run=run, stage=stage)
        if ds.cold_items is not None:    # a cold_items split: the held-out items' rows come from their text
            from .cold_items import place_cold_items
            place_cold_items(rec.model, builder)
        saved = run.load_added_items(stage)
        if saved is not None:
            rows, meta = saved
            rec._append(meta["item_ids"], meta["texts"], rows)
        return rec

    # ------------------------------------------------------------------ new items
    def add_items(self, items: Mapping[str, str | Mapping[str, str]], *, save: bool = False) -> list[str]:
        """Make new items recommendable now, from their text alone, without retraining.

        items: {item id: text}, the text a string ("Title; genres: ...") or {field: text} as the
        dataset's items have (title, description, ...). Rows come from the text (cold_items.py,
        `blend`: a ridge projection of the backbone's reading mixed with the rows of the most
        similar trained items); the new items go after the existing ones, so the scores
        of existing items do not change. save: also write them into the run folder (all items
        added so far), so `from_run` loads them. Returns the added ids."""
        new = {str(k): (describe(v) if isinstance(v, Mapping) else str(v if v is not None else "")).strip()
               for k, v in dict(items).items()}
        if not new:
            raise ValueError("add_items got no items: pass {item id: text}")
        known = [k for k in new if k in self._item_index]
        if known:
            raise ValueError(f"item id(s) {known[:10]} already exist in this run ({self.n_items} items): "
                             "give new items new ids")
        empty = [k for k, t in new.items() if not t]
        if empty:
            raise ValueError(f"item(s) {empty[:10]} have no text: a new item is placed by its text alone")
        if self._placer is None:
            self._placer = ItemRows().fit(self.model, self.builder)
        rows = self._placer.rows(self.model, self.builder, list(new.values()))
        self._append(list(new), list(new.values()), rows)
        if save:
            if self.run is None:
                raise ValueError("save=True needs a Recommender loaded with from_run (a run folder to write to)")
            cut = self.n_items - len(self.added)                      # the first added item's index
            self.run.save_added_items(self.stage, {k: v[cut:] for k, v in self._tables().items()},
                                      {"item_ids": list(self.added), "texts": list(self.added.values())})
        return list(new)

    def _tables(self) -> dict[str, torch.Tensor]:
        t = self.model.id_embeddings()
        return {k: v for k, v in t.items() if k in ("collaborative.item", "content.item", "collaborative.item_bias")}

    def _append(self, ids: Sequence[str], texts: Sequence[str], rows: dict[str, torch.Tensor]) -> None:
        """Extend the item tables (after the existing rows), the ids, titles and seen matrix."""
        m = len(ids)
        tables = self.model.id_embeddings()
        for k in [f"{s}.item" for s in SIDES] + (["collaborative.item_bias"] if "collaborative.item_bias" in tables else []):
            tables[k] = torch.cat([tables[k], rows[k].to(tables[k])])
        v, bv = self.model.vocab, self.builder.vocab
        model = CLLM4Rec(self.model.backbone, Vocab(v.n_vocab, v.n_users, v.n_items + m))
        model.load_id_embeddings(tables)
        self.model = model.to(self.device).eval()
        self.builder.vocab = Vocab(bv.n_vocab, bv.n_users, bv.n_items + m)   # new items may be in a history
        for k, t in zip(ids, texts):
            self._item_index[str(k)] = len(self.item_ids)
            self.item_ids.append(str(k))
            self.added[str(k)] = t
            if self.titles is not None:
                self.titles.append(t.split("; ")[0])
        self._seen.resize((self._seen.shape[0], self.n_items))

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
                           f"({self.n_items} items, e.g. {self.item_ids[:3]}); add new ones with add_items")
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
            warnings.warn(f"k={k} but only {left} of the {self.n_items} items are left to recommend "
                          f"({self.n_items - left} already seen): returning {left}", stacklevel=2)
        top = torch.topk(s, min(k, left))
        return [{"rank": r + 1, "item": self.item_ids[j], "title": self.titles[j] if self.titles else None,
                 "score": round(float(x), 4)} for r, (x, j) in enumerate(zip(top.values.tolist(), top.indices.tolist()))]


def read_new_items(path: str | Path) -> dict[str, str | dict[str, str]]:
    """A file of new items -> {item id: text or {field: text}}. JSON: {"id": "text" | {field: text}}
    or [{"item": id, field: text, ...}]; CSV: a header with an `item` column and text columns."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the new items ({e})") from None
    if path.suffix.lower() == ".csv":
        import csv
        rows = list(csv.reader(raw.splitlines()))
        if not rows or "item" not in rows[0]:
            raise ValueError(f"{path}, line 1: the header needs an `item` column and text columns, got {rows[:1]}")
        head, out = rows[0], {}
        for n, row in enumerate(rows[1:], start=2):
            if len(row) != len(head):
                raise ValueError(f"{path}, line {n}: {len(row)} fields, the header has {len(head)}")
            rec = dict(zip(head, row))
            out[rec.pop("item")] = rec
        return out
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(data, dict):
        bad = [k for k, v in data.items() if not isinstance(v, (str, dict))]
        if bad:
            raise ValueError(f"{path}: item(s) {bad[:5]}: a value must be a text or {{field: text}}")
        return data
    if isinstance(data, list) and all(isinstance(r, dict) and "item" in r for r in data):
        return {str(r["item"]): {k: str(v) for k, v in r.items() if k != "item"} for r in data}
    raise ValueError(f"{path}: expected {{item id: text}} or a list of {{\"item\": id, field: text}} objects")


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
    p.add_argument("--add-items", metavar="FILE", help="new items from their text (JSON or CSV, see read_new_items)")
    p.add_argument("--save-items", action="store_true", help="keep the added items in the run folder")
    a = p.parse_args(argv)
    if a.save_items and not a.add_items:
        p.error("--save-items needs --add-items FILE")
    try:
        rec = Recommender.from_run(a.run, stage=a.stage)
        if a.add_items:
            added = rec.add_items(read_new_items(a.add_items), save=a.save_items)
            print(f"note: added {len(added)} item(s){' and saved them in the run folder' if a.save_items else ''}",
                  file=sys.stderr)
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

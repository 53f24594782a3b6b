"""Items nobody has interacted with yet, placed by their text alone.

    item text ("Kolya; genres: Comedy; year: 1996": the title, then the other fields)
      -> backbone body -> mean last hidden state over the first max_tokens tokens   [M, d]
      -> rows of both item tables (collaborative, content) and the item-head bias:
           text        centred on the warm items' vectors, scaled to each table's spread of
                       trained rows: the model.item_init=text path, nothing fitted (the rows mean
                       something when training started from item_init=text)
           projection  ridge regressions, fitted on the warm items (those with a training
                       interaction), from their text vectors to their trained rows and bias; the
                       strength of each by efficient leave-one-out on those items (RidgeCV)

Used by `cllm4rec.evaluate` on a cold_items split (the held-out items' rows are replaced before
ranking) and by `Recommender.add_items` (new items appended at serving time). Neither touches
another item's row, so the scores of the other items stay as they were.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from .model import SIDES, CLLM4Rec
from .text_init import TITLE_FIELDS, text_vectors

MODES = ("text", "projection")
ALPHAS = tuple(np.logspace(-2, 5, 15))


def describe(fields: Mapping[str, str]) -> str:
    """{field: text} -> one line, the title first: 'Kolya; genres: Comedy; year: 1996'."""
    title = next((f for f in TITLE_FIELDS if str(fields.get(f) or "").strip()), None)
    parts = [str(fields[title]).strip()] if title else []
    parts += [f"{f.replace('_', ' ')}: {str(t).strip()}" for f, t in sorted(fields.items())
              if f != title and str(t or "").strip()]
    return "; ".join(parts)


def item_descriptions(item_text: dict[str, list[str]], items: Sequence[int], fields: Sequence[str] | None = None) -> list[str]:
    """The description of each item index in `items` from the dataset's text fields (all of them
    unless `fields` names some)."""
    names = sorted(item_text) if fields is None else list(fields)
    return [describe({f: item_text[f][j] for f in names}) for j in items]


class ItemRows:
    """Text -> rows of a trained CLLM4Rec's item tables (see the module docstring).

    mode: "text" or "projection"; fields: the item text fields a description reads (None = all);
    max_tokens: how much of a description the backbone reads."""

    def __init__(self, mode: str = "projection", fields: Sequence[str] | None = None, max_tokens: int = 128):
        if mode not in MODES:
            raise ValueError(f"cold-item rows mode must be one of {MODES}, got {mode!r}")
        self.mode, self.fields, self.max_tokens = mode, fields, max_tokens

    def vectors(self, model: CLLM4Rec, builder, texts: Sequence[str]) -> torch.Tensor:
        """[M] descriptions -> [M, d] mean last hidden states of the (trained) backbone."""
        tokens, offsets = builder._tokenize([str(t) for t in texts])
        return text_vectors(model.backbone, tokens, offsets, self.max_tokens)

    def fit(self, model: CLLM4Rec, builder) -> "ItemRows":
        """Learn the mapping on the warm items: not cold, with a training interaction and a text."""
        ds = builder.ds
        trained = np.bincount(builder.train_item, minlength=ds.n_items) > 0
        texts = item_descriptions(ds.item_text, range(ds.n_items), self.fields)
        warm = np.flatnonzero(trained & np.asarray([bool(t) for t in texts]))
        if len(warm) < 2:
            raise ValueError(f"placing items by text needs warm items with texts; dataset {ds.name!r} has "
                             f"{len(warm)} (item texts: {sorted(ds.item_text) or 'none'})")
        x = self.vectors(model, builder, [texts[j] for j in warm]).double().numpy()     # [W, d]
        targets = self._targets(model, torch.as_tensor(warm))
        self.mean = x.mean(0)
        spread = (x - self.mean).std()
        if self.mode == "text":
            # each table: rows at that table's spread of trained rows; the bias: the warm items' mean
            self.scale = {k: float(v.std()) / max(spread, 1e-12) if v.ndim == 2 else None for k, v in targets.items()}
            self.bias = {k: float(v.mean()) for k, v in targets.items() if v.ndim == 1}
        else:
            from sklearn.linear_model import RidgeCV
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler
            self.ridge = {k: make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS)).fit(x, v.double().numpy())
                          for k, v in targets.items()}
        self.n_fitted = len(warm)
        return self

    @staticmethod
    def _targets(model: CLLM4Rec, items: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {f"{s}.item": model.item[s].weight.detach().float().cpu()[items] for s in SIDES}
        if model.item_bias is not None:
            out["collaborative.item_bias"] = model.item_bias.detach().float().cpu()[items]
        return out

    def rows(self, model: CLLM4Rec, builder, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """[M] descriptions -> the rows of every item table ([M, d]; the bias [M]), float32."""
        x = self.vectors(model, builder, texts).double().numpy()
        if self.mode == "text":
            c = x - self.mean
            out = {k: c * s for k, s in self.scale.items() if s is not None}
            out.update({k: np.full(len(x), b) for k, b in self.bias.items()})
        else:
            out = {k: r.predict(x) for k, r in self.ridge.items()}
        return {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in out.items()}


@torch.no_grad()
def write_rows(model: CLLM4Rec, items: np.ndarray, rows: dict[str, torch.Tensor]) -> None:
    """Write item rows (ItemRows.rows) in place at item indices `items`; nothing else changes."""
    at = torch.as_tensor(np.asarray(items, np.int64))
    for s in SIDES:
        w = model.item[s].weight
        w[at.to(w.device)] = rows[f"{s}.item"].to(w)
    if model.item_bias is not None:
        model.item_bias[at.to(model.item_bias.device)] = rows["collaborative.item_bias"].to(model.item_bias)


def place_cold_items(model: CLLM4Rec, builder, mode: str, fields: Sequence[str] | None = None) -> dict:
    """Replace the rows of the dataset's cold items (a cold_items split) with rows from their text."""
    ds = builder.ds
    if ds.cold_items is None:
        raise ValueError(f"dataset {ds.name!r} has no cold items: use data.split.protocol=cold_items")
    cold = np.flatnonzero(ds.cold_items)
    placer = ItemRows(mode, fields).fit(model, builder)
    write_rows(model, cold, placer.rows(model, builder, item_descriptions(ds.item_text, cold, fields)))
    return {"mode": mode, "cold_items": len(cold), "fitted_on": placer.n_fitted}

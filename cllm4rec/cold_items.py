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
           neighbours  the similarity-weighted mean of the trained rows of the `k` warm items
                       whose texts are closest in TF-IDF (fitted on the warm items' texts only)
           blend       projection_weight x projection + the rest x neighbours (the default; it and
                       its k and weight were chosen on the validation users' cold items, README)

Used by `cllm4rec.evaluate` on a cold_items split (the held-out items' rows are replaced before
ranking) and by `Recommender.add_items` (new items appended at serving time). Neither touches
another item's row, so the scores of the other items stay as they were.
"""
from __future__ import annotations

import copy
from typing import Mapping, Sequence

import numpy as np
import torch

from .model import SIDES, CLLM4Rec
from .text_init import TITLE_FIELDS, text_vectors

MODES = ("text", "projection", "neighbours", "blend")
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

    mode: one of MODES; fields: the item text fields a description reads (None = all);
    max_tokens: how much of a description the backbone reads; k: neighbours per item;
    projection_weight: the projection's share of a blend."""

    def __init__(self, mode: str = "blend", fields: Sequence[str] | None = None, max_tokens: int = 128,
                 k: int = 100, projection_weight: float = 0.3):
        if mode not in MODES:
            raise ValueError(f"cold-item rows mode must be one of {MODES}, got {mode!r}")
        if not 0 <= projection_weight <= 1:
            raise ValueError(f"projection_weight must be in [0, 1], got {projection_weight}")
        self.mode, self.fields, self.max_tokens, self.k = mode, fields, max_tokens, k
        self.projection_weight = projection_weight

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
        self.targets = {k: v.double().numpy() for k, v in self._targets(model, torch.as_tensor(warm)).items()}
        if self.mode in ("neighbours", "blend"):
            from sklearn.feature_extraction.text import TfidfVectorizer
            self.tfidf = TfidfVectorizer(sublinear_tf=True, stop_words="english")
            self.warm_tfidf = self.tfidf.fit_transform([texts[j] for j in warm])            # [W, V], unit rows
        if self.mode != "neighbours":
            x = self.vectors(model, builder, [texts[j] for j in warm]).double().numpy()     # [W, d]
            self.mean = x.mean(0)
            spread = (x - self.mean).std()
        if self.mode == "text":
            # each table: rows at that table's spread of trained rows; the bias: the warm items' mean
            self.scale = {k: float(v.std()) / max(spread, 1e-12) for k, v in self.targets.items() if v.ndim == 2}
            self.bias = {k: float(v.mean()) for k, v in self.targets.items() if v.ndim == 1}
        elif self.mode in ("projection", "blend"):
            from sklearn.linear_model import RidgeCV
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler
            self.ridge = {k: make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS)).fit(x, v)
                          for k, v in self.targets.items()}
        self.n_fitted = len(warm)
        return self

    def as_mode(self, mode: str) -> "ItemRows":
        """The same fitted mapping read in another mode: a blend holds what projection and
        neighbours need, so one fit serves all three."""
        needs = {"text": ("scale",), "projection": ("ridge",), "neighbours": ("tfidf",), "blend": ("ridge", "tfidf")}
        if mode not in MODES or not all(hasattr(self, a) for a in needs[mode]):
            raise ValueError(f"an ItemRows fitted in mode {self.mode!r} cannot be read as {mode!r}")
        other = copy.copy(self)
        other.mode = mode
        return other

    def _neighbours(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        sim = (self.tfidf.transform(texts) @ self.warm_tfidf.T).toarray()                  # [M, W] cosine
        k = min(self.k, sim.shape[1])
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]                                  # [M, k]
        w = np.take_along_axis(sim, top, 1)
        none = w.sum(1) <= 0                     # no word in common with any warm item: the mean item
        w = np.where(none[:, None], 1.0, w) / np.where(none, k, w.sum(1))[:, None]
        out = {}
        for name, v in self.targets.items():
            near = np.einsum("mk,mk...->m...", w, v[top])
            out[name] = np.where(none.reshape((-1,) + (1,) * (v.ndim - 1)), v.mean(0), near)
        return out

    @staticmethod
    def _targets(model: CLLM4Rec, items: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {f"{s}.item": model.item[s].weight.detach().float().cpu()[items] for s in SIDES}
        if model.item_bias is not None:
            out["collaborative.item_bias"] = model.item_bias.detach().float().cpu()[items]
        return out

    def rows(self, model: CLLM4Rec, builder, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """[M] descriptions -> the rows of every item table ([M, d]; the bias [M]), float32."""
        texts = [str(t) for t in texts]
        if self.mode == "neighbours":
            out = self._neighbours(texts)
        elif self.mode == "text":
            c = self.vectors(model, builder, texts).double().numpy() - self.mean
            out = {k: c * s for k, s in self.scale.items()}
            out.update({k: np.full(len(c), b) for k, b in self.bias.items()})
        else:
            x = self.vectors(model, builder, texts).double().numpy()
            out = {k: r.predict(x) for k, r in self.ridge.items()}
            if self.mode == "blend":
                near = self._neighbours(texts)
                w = self.projection_weight
                out = {k: w * v + (1 - w) * near[k] for k, v in out.items()}
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


def place_cold_items(model: CLLM4Rec, builder, mode: str = "blend", fields: Sequence[str] | None = None,
                     fitted: ItemRows | None = None) -> dict:
    """Replace the rows of the dataset's cold items (a cold_items split) with rows from their text
    (`fitted`: a mapping already fitted on the same model and fields, read in `mode`)."""
    ds = builder.ds
    if ds.cold_items is None:
        raise ValueError(f"dataset {ds.name!r} has no cold items: use data.split.protocol=cold_items")
    cold = np.flatnonzero(ds.cold_items)
    placer = fitted.as_mode(mode) if fitted is not None else ItemRows(mode, fields).fit(model, builder)
    write_rows(model, cold, placer.rows(model, builder, item_descriptions(ds.item_text, cold, fields)))
    return {"mode": mode, "cold_items": len(cold), "fitted_on": placer.n_fitted}

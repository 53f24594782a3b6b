"""Rating documents: `<user> rated <item>:` -> the rating level's word."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.dataset import PARTS as PART_CODE
from .documents import Documents, _assemble


@dataclass
class RatingScale:
    """The rating levels of a dataset as the vocabulary head sees them.

    Level k (value values[k], e.g. 4.0) is written as the word f" {text}" after the rating
    prompt; its tokens are `prefix` (shared by every level, e.g. SmolLM2's lone space token)
    followed by one token of its own, tokens[k]. The prefix ends the prompt, so one hidden
    state scores every level: p(level k) = softmax over tokens[.] of the vocabulary logits.
    """
    values: np.ndarray        # [K] float32, ascending
    tokens: np.ndarray        # [K] int64 vocabulary ids, distinct
    prefix: np.ndarray        # [P] int64, shared by every level (often empty)

    def level(self, ratings: np.ndarray) -> np.ndarray:
        """Ratings -> level indices (each rating must be one of `values`)."""
        k = np.searchsorted(self.values, ratings)
        bad = (k >= len(self.values)) | (self.values[np.minimum(k, len(self.values) - 1)] != ratings)
        if bad.any():
            raise ValueError(f"rating {ratings[bad][0]} is not one of the training levels {self.values.tolist()}")
        return k


def _rating_word(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


# ====================================================================== the builder


class RatingDocs:
    """Rating prediction documents and prompts (a part of CorpusBuilder)."""

    @property
    def rating_scale(self) -> RatingScale:
        """The distinct training ratings as levels (built once; see `RatingScale`)."""
        if "_rating_scale" not in self._tables:
            ds = self.ds
            rated = ds.rating[self.train_row] if ds.rating is not None else np.zeros(0, np.float32)
            values = np.unique(rated[np.isfinite(rated)])
            if not len(values):
                raise ValueError(f"dataset {ds.name!r} has no training ratings: rating documents need them; "
                                 "set corpus.rating=false")
            words = [self._words(" " + _rating_word(v)) for v in values]
            prefix = words[0][:-1]
            tokens = [w[-1] for w in words]
            if any(w[:-1] != prefix for w in words) or len(set(tokens)) != len(tokens):
                raise ValueError(f"the rating levels {values.tolist()} of {ds.name!r} are not one token each after a "
                                 f"shared prefix in this tokenizer ({dict(zip(values.tolist(), words))}); rating "
                                 "prediction supports scales such as 1-5 stars: set corpus.rating=false")
            self._tables["_rating_scale"] = RatingScale(values.astype(np.float32), np.asarray(tokens, np.int64),
                                                        np.asarray(prefix, np.int64))
        return self._tables["_rating_scale"]

    def _rating_docs(self, rows: np.ndarray, with_label: bool) -> Documents:
        """Rating documents of dataset rows: prompt (+ the level's token as the main text)."""
        ds, scale = self.ds, self.rating_scale
        user, item = ds.user[rows].astype(np.int64), ds.item[rows].astype(np.int64)
        segs = self.t_rating.segments({"user": self.vocab.user(user), "item": self.vocab.item(item)})
        if len(scale.prefix):
            segs.append(("const", scale.prefix))
        n_prompt = len(segs)
        if with_label:
            segs.append(("one", scale.tokens[scale.level(ds.rating[rows])]))
        tokens, offsets, plen = _assemble(len(rows), segs, n_prompt)
        return self._docs("rating", tokens, offsets, plen, user, item)

    def _rating(self, rng) -> Documents:
        rows = self.train_row[np.isfinite(self.ds.rating[self.train_row])] if self.ds.rating is not None else []
        return self._rating_docs(np.asarray(rows, np.int64), with_label=True)

    def rating_prompts(self, part: str) -> tuple[Documents, np.ndarray]:
        """Rating prompts (no label) for the rated interactions of `part` -> (documents, their
        true ratings [D]). Levels not seen in training cannot be predicted exactly, but count."""
        ds = self.ds
        if ds.rating is None:
            raise ValueError(f"dataset {ds.name!r} has no ratings")
        rows = np.flatnonzero((ds.split == PART_CODE[part]) & np.isfinite(ds.rating))
        return self._rating_docs(rows, with_label=False), ds.rating[rows].astype(np.float32)

    # ------------------------------------------------------------------ item-head kinds

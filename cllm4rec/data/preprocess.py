"""Preprocessing as code: rating threshold, duplicate handling, iterative k-core.

Every step returns a new Dataset and is deterministic (no randomness at all here).
`preprocess` runs them in the published order and records the counts after each step for the
manifest.
"""
from __future__ import annotations

import numpy as np

from .dataset import Dataset

DEDUP_CHOICES = ("first", "last", "keep")


def keep_ratings_above(ds: Dataset, threshold: float) -> Dataset:
    """Keep interactions with rating > threshold (CLLM4Rec: > 3). Needs ratings."""
    if ds.rating is None:
        raise ValueError(f"dataset {ds.name!r} has no ratings, so `keep_ratings_above={threshold}` "
                         "cannot apply: set it to null for this dataset")
    return ds.select(ds.rating > threshold)


def deduplicate(ds: Dataset, how: str = "first") -> Dataset:
    """Repeated (user, item) pairs (Yelp revisits a business).

    'first' keeps the earliest occurrence (the default: a history is a set of items, and a
    repeat split across train and test would be a free hit), 'last' the latest, 'keep' all.
    """
    if how not in DEDUP_CHOICES:
        raise ValueError(f"dedup must be one of {DEDUP_CHOICES}, got {how!r}")
    if how == "keep":
        return ds
    pair = ds.user.astype(np.int64) * ds.n_items + ds.item
    order = np.arange(ds.n_interactions)
    if how == "last":
        order = order[::-1]
    _, first = np.unique(pair[order], return_index=True)
    keep = np.zeros(ds.n_interactions, bool)
    keep[order[first]] = True
    return ds.select(keep)


def kcore(ds: Dataset, user_core: int, item_core: int) -> Dataset:
    """Iteratively drop users with < user_core and items with < item_core interactions
    until both hold (counts include repeats if they were kept)."""
    keep = np.ones(ds.n_interactions, bool)
    while True:
        u_count = np.bincount(ds.user[keep], minlength=ds.n_users)
        i_count = np.bincount(ds.item[keep], minlength=ds.n_items)
        ok = keep & (u_count[ds.user] >= user_core) & (i_count[ds.item] >= item_core)
        if ok.sum() == keep.sum():
            break
        keep = ok
    return ds.select(keep)


def preprocess(ds: Dataset, *, keep_ratings_above: float | None = None, dedup: str = "first",
               user_core: int = 0, item_core: int = 0) -> tuple[Dataset, list[dict]]:
    """Threshold -> dedup -> k-core. Returns the dataset and the counts after each step."""
    steps = [{"step": "read", **ds.counts()}]
    if keep_ratings_above is not None:
        ds = globals()["keep_ratings_above"](ds, keep_ratings_above)
        steps.append({"step": f"keep ratings > {keep_ratings_above}", **ds.counts()})
    ds = deduplicate(ds, dedup)
    steps.append({"step": f"dedup={dedup}", **ds.counts()})
    if user_core > 1 or item_core > 1:
        ds = kcore(ds, user_core, item_core)
        steps.append({"step": f"k-core users>={user_core} items>={item_core}", **ds.counts()})
    return ds, steps

"""Split protocols. Both set `Dataset.split` (TRAIN / VALID / TEST per interaction).

- `split_random`: CLLM4Rec's per-user random split, 80/10/10 by default, with at least one
  validation and one test item per user. Per user with n interactions:
  n_test = max(1, floor(n * test_ratio)), n_valid = max(1, floor(n * valid_ratio)), rest train.
  Users too small for that (documented rule): n = 1 -> train only; n = 2 -> one train, one
  test; n = 3..: at least one train item is always kept (n - n_test - n_valid >= 1).
- `split_leave_one_out`: the P5 / S3-Rec / TIGER protocol: in time order (the canonical order),
  last item test, second-to-last validation, the rest train. n = 1 -> train only;
  n = 2 -> train + test.
- `split_cold_items`: items nobody has interacted with yet. A seeded `cold_fraction` of the items
  (default 20%) is held out entirely: every interaction with them goes to validation or test, one
  part per user (drawn with probability valid : test of `ratios`), so no training document sees
  them; the other interactions are split as `split_random` does. `Dataset.cold_items` marks them.
All are vectorised and deterministic; `split_random` and `split_cold_items` depend only on the seed.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .dataset import TEST, TRAIN, VALID, Dataset


def _rank_within_user(ds: Dataset, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each interaction inside its user's group ordered by `key`, and the group size."""
    order = np.lexsort((key, ds.user))
    sizes = np.bincount(ds.user, minlength=ds.n_users)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(ds.n_interactions, np.int64)
    rank[order] = np.arange(ds.n_interactions) - starts[ds.user[order]]
    return rank, sizes[ds.user]


def _assign(rank: np.ndarray, n: np.ndarray, n_test: np.ndarray, n_valid: np.ndarray) -> np.ndarray:
    # rank 0 .. n_test-1 -> test, next n_valid -> valid, the rest -> train
    split = np.full(rank.shape, TRAIN, np.int8)
    split[rank < n_test + n_valid] = VALID
    split[rank < n_test] = TEST
    return split


def split_random(ds: Dataset, seed: int = 0, ratios=(0.8, 0.1, 0.1)) -> Dataset:
    if len(ratios) != 3 or not np.isclose(sum(ratios), 1.0) or min(ratios) < 0:
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {list(ratios)}")
    rng = np.random.default_rng(seed)
    rank, n = _rank_within_user(ds, rng.random(ds.n_interactions))
    n_test = np.maximum(1, np.floor(n * ratios[2]).astype(np.int64))
    n_valid = np.maximum(1, np.floor(n * ratios[1]).astype(np.int64))
    n_valid = np.where(n <= 2, 0, n_valid)          # n=2: train + test
    n_test = np.where(n <= 1, 0, n_test)            # n=1: train only
    n_valid = np.minimum(n_valid, np.maximum(n - n_test - 1, 0))
    return dataclasses.replace(ds, split=_assign(rank, n, n_test, n_valid))


def split_leave_one_out(ds: Dataset) -> Dataset:
    # rank by reversed time: rank 0 = the user's last interaction
    rank, n = _rank_within_user(ds, -np.arange(ds.n_interactions))
    n_test = (n >= 2).astype(np.int64)
    n_valid = (n >= 3).astype(np.int64)
    return dataclasses.replace(ds, split=_assign(rank, n, n_test, n_valid))


def split_cold_items(ds: Dataset, seed: int = 0, ratios=(0.8, 0.1, 0.1), cold_fraction: float = 0.2) -> Dataset:
    if not 0 < cold_fraction < 1:
        raise ValueError(f"data.split.cold_fraction must be in (0, 1), got {cold_fraction}")
    rng = np.random.default_rng([seed, 1])          # its own stream: the warm split equals split_random's
    cold = np.zeros(ds.n_items, bool)
    cold[rng.choice(ds.n_items, max(1, round(cold_fraction * ds.n_items)), replace=False)] = True
    on_cold = cold[ds.item]
    warm = split_random(dataclasses.replace(ds, user=ds.user[~on_cold], item=ds.item[~on_cold]), seed, ratios)
    split = np.empty(ds.n_interactions, np.int8)
    split[~on_cold] = warm.split
    held = ratios[1] + ratios[2]
    to_valid = rng.random(ds.n_users) < (ratios[1] / held if held > 0 else 0.5)   # one part per user
    split[on_cold] = np.where(to_valid[ds.user[on_cold]], VALID, TEST)
    return dataclasses.replace(ds, split=split, cold_items=cold)


PROTOCOLS = {"random": split_random, "loo": split_leave_one_out, "cold_items": split_cold_items}


def split_dataset(ds: Dataset, protocol: str = "random", seed: int = 0, ratios=(0.8, 0.1, 0.1),
                  cold_fraction: float | None = None) -> Dataset:
    if cold_fraction is not None and protocol != "cold_items":
        raise ValueError(f"data.split.cold_fraction is for protocol=cold_items, not {protocol!r}: remove it")
    if protocol == "random":
        return split_random(ds, seed=seed, ratios=ratios)
    if protocol == "loo":
        return split_leave_one_out(ds)
    if protocol == "cold_items":
        return split_cold_items(ds, seed=seed, ratios=ratios,
                                cold_fraction=0.2 if cold_fraction is None else cold_fraction)
    raise ValueError(f"split protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")


def split_counts(ds: Dataset) -> dict:
    out = {name: int((ds.split == code).sum()) for name, code in (("train", TRAIN), ("valid", VALID), ("test", TEST))}
    if ds.cold_items is not None:   # interactions with cold items, per part (all in valid / test)
        on_cold = ds.cold_items[ds.item]
        out.update({f"{name}_cold": int((on_cold & (ds.split == code)).sum()) for name, code in
                    (("valid", VALID), ("test", TEST))})
    return out


def split_users(ds: Dataset) -> dict:
    """Users an evaluation can score: those with a training item and an item of the part."""
    has = {code: np.bincount(ds.user[ds.split == code], minlength=ds.n_users) > 0 for code in (TRAIN, VALID, TEST)}
    return {"train": int(has[TRAIN].sum()), "valid": int((has[TRAIN] & has[VALID]).sum()),
            "test": int((has[TRAIN] & has[TEST]).sum())}


WHO_NEEDS = {"valid": "fine-tuning (model selection on validation)", "test": "evaluation and the final test"}


def split_problems(split: dict, parts=("valid", "test")) -> list[str]:
    """What a prepared split cannot do: one sentence per needed part without a scorable user."""
    users = split.get("users", {})
    out = []
    for part in parts:
        if users.get(part, 1) == 0:
            out.append(f"the split has no user with both training and {part} interactions (split counts "
                       f"{split.get('counts')}, users {users}), which {WHO_NEEDS[part]} needs. Keep longer "
                       f"histories (raise data.preprocess.user_core, e.g. 5), use another protocol "
                       f"(data.split.protocol=random|loo) or smaller fractions (data.split.ratios)")
    return out

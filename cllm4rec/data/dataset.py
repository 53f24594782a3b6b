"""The one in-memory dataset every reader produces and every later stage consumes.

Interactions are stored column-wise and kept in canonical order: grouped by user index, and
within a user by timestamp when known, else in the order the source file gave (for sequence
files such as Beauty.txt that order is time order). `indptr` then gives each user's slice, as
in a CSR matrix. Texts are attached to items, users and interactions (user-item pairs), one
list of strings per field ("" where a row has no text).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

TRAIN, VALID, TEST = 0, 1, 2
PARTS = {"train": TRAIN, "valid": VALID, "test": TEST}


@dataclass
class Dataset:
    name: str
    user_ids: list[str]                       # user index -> raw id
    item_ids: list[str]                       # item index -> raw id
    user: np.ndarray                          # [n] int32 user index per interaction
    item: np.ndarray                          # [n] int32 item index per interaction
    rating: np.ndarray | None = None          # [n] float32, when the source has ratings
    timestamp: np.ndarray | None = None       # [n] int64 seconds, when the source has them
    item_text: dict[str, list[str]] = field(default_factory=dict)         # field -> [n_items]
    user_text: dict[str, list[str]] = field(default_factory=dict)         # field -> [n_users]
    interaction_text: dict[str, list[str]] = field(default_factory=dict)  # field -> [n]
    split: np.ndarray | None = None           # [n] int8: TRAIN / VALID / TEST
    cold_items: np.ndarray | None = None      # [n_items] bool: held out of training (protocol cold_items)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_raw(cls, name: str, users, items, *, rating=None, timestamp=None,
                 item_text: dict[str, dict[str, str]] | None = None,
                 user_text: dict[str, dict[str, str]] | None = None,
                 interaction_text: dict[str, list[str]] | None = None) -> "Dataset":
        """Build from raw id sequences (one entry per interaction, in file order).

        Users and items are numbered in order of first appearance, so the result depends
        only on the input. `item_text` / `user_text` map raw id -> {field: text}; texts of
        ids without interactions are dropped.
        """
        users = [str(u) for u in users]
        items = [str(i) for i in items]
        if len(users) != len(items):
            raise ValueError("users and items must have one entry per interaction")
        user_index: dict[str, int] = {}
        item_index: dict[str, int] = {}
        u = np.fromiter((user_index.setdefault(x, len(user_index)) for x in users), np.int32, len(users))
        i = np.fromiter((item_index.setdefault(x, len(item_index)) for x in items), np.int32, len(items))
        ds = cls(
            name=name,
            user_ids=list(user_index),
            item_ids=list(item_index),
            user=u,
            item=i,
            rating=None if rating is None else np.asarray(rating, np.float32),
            timestamp=None if timestamp is None else np.asarray(timestamp, np.int64),
            item_text=_align_text(item_text, item_index),
            user_text=_align_text(user_text, user_index),
            interaction_text={k: [str(t) for t in v] for k, v in (interaction_text or {}).items()},
        )
        return ds.canonical()

    def canonical(self) -> "Dataset":
        """Sort interactions by (user, timestamp, original position); stable."""
        keys = [np.arange(self.n_interactions)]
        if self.timestamp is not None:
            keys.append(self.timestamp)
        keys.append(self.user)
        order = np.lexsort(keys)
        if np.array_equal(order, np.arange(len(order))):
            return self
        return self._take(order)

    # ------------------------------------------------------------------ sizes and views
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(self.user.shape[0])

    @property
    def indptr(self) -> np.ndarray:
        """[n_users + 1] offsets of each user's interactions (canonical order)."""
        return np.concatenate([[0], np.cumsum(np.bincount(self.user, minlength=self.n_users))]).astype(np.int64)

    def counts(self) -> dict:
        return {"users": self.n_users, "items": self.n_items, "interactions": self.n_interactions}

    def mask(self, *parts: str) -> np.ndarray:
        """Boolean [n] mask of the interactions in the given split parts."""
        if self.split is None:
            raise ValueError(f"dataset {self.name!r} has no split yet: call cllm4rec.data.split_dataset first")
        return np.isin(self.split, [PARTS[p] for p in parts])

    def matrix(self, *parts: str) -> sp.csr_matrix:
        """Binary users x items CSR matrix of the given parts (all interactions if none)."""
        keep = self.mask(*parts) if parts else np.ones(self.n_interactions, bool)
        m = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (self.user[keep], self.item[keep])),
                          shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def warm_items(self) -> np.ndarray:
        """Indices of the items training may see (all of them unless the split holds items out)."""
        return np.arange(self.n_items) if self.cold_items is None else np.flatnonzero(~self.cold_items)

    def histories(self, *parts: str) -> list[np.ndarray]:
        """Per user, the item indices of the given parts in canonical (time) order."""
        keep = self.mask(*parts) if parts else np.ones(self.n_interactions, bool)
        ptr = np.concatenate([[0], np.cumsum(np.bincount(self.user[keep], minlength=self.n_users))])
        items = self.item[keep]
        return [items[ptr[u]:ptr[u + 1]] for u in range(self.n_users)]

    # ------------------------------------------------------------------ subsets
    def select(self, keep: np.ndarray) -> "Dataset":
        """Keep the interactions where `keep` is true and renumber users and items
        compactly (order of the old indices is preserved)."""
        keep = np.asarray(keep, bool)
        return self._take(np.flatnonzero(keep))._compact()

    def _take(self, idx: np.ndarray) -> "Dataset":
        return Dataset(
            name=self.name, user_ids=self.user_ids, item_ids=self.item_ids,
            user=self.user[idx], item=self.item[idx],
            rating=None if self.rating is None else self.rating[idx],
            timestamp=None if self.timestamp is None else self.timestamp[idx],
            item_text=self.item_text, user_text=self.user_text,
            interaction_text={k: [v[j] for j in idx] for k, v in self.interaction_text.items()},
            split=None if self.split is None else self.split[idx], cold_items=self.cold_items,
        )

    def _compact(self) -> "Dataset":
        used_u = np.unique(self.user)
        used_i = np.unique(self.item)
        remap_u = np.full(self.n_users, -1, np.int32)
        remap_u[used_u] = np.arange(len(used_u), dtype=np.int32)
        remap_i = np.full(self.n_items, -1, np.int32)
        remap_i[used_i] = np.arange(len(used_i), dtype=np.int32)
        return Dataset(
            name=self.name,
            user_ids=[self.user_ids[j] for j in used_u],
            item_ids=[self.item_ids[j] for j in used_i],
            user=remap_u[self.user], item=remap_i[self.item],
            rating=self.rating, timestamp=self.timestamp,
            item_text={k: [v[j] for j in used_i] for k, v in self.item_text.items()},
            user_text={k: [v[j] for j in used_u] for k, v in self.user_text.items()},
            interaction_text=self.interaction_text, split=self.split,
            cold_items=None if self.cold_items is None else self.cold_items[used_i],
        )

    # ------------------------------------------------------------------ disk format
    def save(self, folder: str | os.PathLike) -> None:
        """Write npz (arrays) + JSON (id maps) + JSON lines (texts) into `folder`.
        The caller makes the write atomic (see cache.py)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"user": self.user, "item": self.item}
        for key in ("rating", "timestamp", "split", "cold_items"):
            value = getattr(self, key)
            if value is not None:
                arrays[key] = value
        np.savez(folder / "interactions.npz", **arrays)
        (folder / "id_maps.json").write_text(json.dumps(
            {"name": self.name, "user_ids": self.user_ids, "item_ids": self.item_ids}))
        for kind, table, n in (("item", self.item_text, self.n_items), ("user", self.user_text, self.n_users),
                               ("interaction", self.interaction_text, self.n_interactions)):
            with open(folder / f"{kind}_text.jsonl", "w", encoding="utf-8") as f:
                f.write(json.dumps(sorted(table)) + "\n")  # header: the field names
                for j in range(n if table else 0):
                    f.write(json.dumps([table[k][j] for k in sorted(table)], ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Dataset":
        folder = Path(folder)
        with np.load(folder / "interactions.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        maps = json.loads((folder / "id_maps.json").read_text())
        texts = {}
        for kind in ("item", "user", "interaction"):
            with open(folder / f"{kind}_text.jsonl", encoding="utf-8") as f:
                fields = json.loads(f.readline())
                rows = [json.loads(line) for line in f]
            texts[kind] = {k: [r[c] for r in rows] for c, k in enumerate(fields)}
        return cls(name=maps["name"], user_ids=maps["user_ids"], item_ids=maps["item_ids"],
                   user=arrays["user"], item=arrays["item"], rating=arrays.get("rating"),
                   timestamp=arrays.get("timestamp"), split=arrays.get("split"),
                   cold_items=arrays.get("cold_items"),
                   item_text=texts["item"], user_text=texts["user"], interaction_text=texts["interaction"])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, users={self.n_users:,}, items={self.n_items:,}, "
                f"interactions={self.n_interactions:,}, item_text={sorted(self.item_text)}, "
                f"user_text={sorted(self.user_text)}, interaction_text={sorted(self.interaction_text)}, "
                f"split={'yes' if self.split is not None else 'no'})")


def _align_text(texts: dict[str, dict[str, str]] | None, index: dict[str, int]) -> dict[str, list[str]]:
    """raw id -> {field: text}  ->  field -> [text per index] ('' where missing)."""
    if not texts:
        return {}
    fields = sorted({f for row in texts.values() for f in row})
    out = {f: [""] * len(index) for f in fields}
    for raw, row in texts.items():
        j = index.get(str(raw))
        if j is None:
            continue
        for f, t in row.items():
            out[f][j] = "" if t is None else str(t)
    return out

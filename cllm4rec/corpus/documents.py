"""Documents as ragged int arrays, their assembly from segments, batching (collate, length buckets)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch



@dataclass
class Documents:
    """A batch-ready corpus: document d is tokens[offsets[d]:offsets[d+1]], of which the first
    prompt_len[d] tokens are the prompt and the rest the main text. Targets (finetune, eval)
    are item indices: target_items[target_offsets[d]:target_offsets[d+1]]."""
    tokens: np.ndarray            # [total] int64 token ids
    offsets: np.ndarray           # [D+1] int64
    prompt_len: np.ndarray        # [D] int64
    kind: np.ndarray              # [D] int8 code into KINDS
    user: np.ndarray              # [D] int64 user index, -1 if none
    item: np.ndarray              # [D] int64 item index the document is about, -1 if none
    target_items: np.ndarray      # [n_targets] int64 item indices
    target_offsets: np.ndarray    # [D+1] int64

    def __len__(self) -> int:
        return len(self.prompt_len)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, d: int) -> np.ndarray:
        return self.tokens[self.offsets[d]:self.offsets[d + 1]]

    def prompt(self, d: int) -> np.ndarray:
        return self.tokens[self.offsets[d]:self.offsets[d] + self.prompt_len[d]]

    def main(self, d: int) -> np.ndarray:
        return self.tokens[self.offsets[d] + self.prompt_len[d]:self.offsets[d + 1]]

    def targets(self, d: int) -> np.ndarray:
        return self.target_items[self.target_offsets[d]:self.target_offsets[d + 1]]

    def select(self, index) -> "Documents":
        """The documents at `index` (in that order)."""
        index = np.asarray(index, np.int64)
        tokens, lens = _ragged_take(self.tokens, self.offsets, index)
        targets, tlens = _ragged_take(self.target_items, self.target_offsets, index)
        return Documents(tokens, _offsets(lens), self.prompt_len[index], self.kind[index], self.user[index],
                         self.item[index], targets, _offsets(tlens))

    @staticmethod
    def concat(parts: Sequence["Documents"]) -> "Documents":
        parts = [p for p in parts if len(p)] or list(parts[:1])
        if not parts:
            return Documents.empty()
        cat = np.concatenate
        return Documents(cat([p.tokens for p in parts]), _offsets(cat([p.lengths for p in parts])),
                         cat([p.prompt_len for p in parts]), cat([p.kind for p in parts]),
                         cat([p.user for p in parts]), cat([p.item for p in parts]),
                         cat([p.target_items for p in parts]),
                         _offsets(cat([np.diff(p.target_offsets) for p in parts])))

    @staticmethod
    def empty() -> "Documents":
        z = np.zeros(0, np.int64)
        return Documents(z, np.zeros(1, np.int64), z, z.astype(np.int8), z, z, z, np.zeros(1, np.int64))


def _group_cumsum(w: np.ndarray, group: np.ndarray, ptr: np.ndarray) -> np.ndarray:
    """Running sum of w within each group, inclusive; rows sorted by group, ptr = group offsets."""
    c = np.concatenate([[0], np.cumsum(w, dtype=np.int64)])
    return c[1:] - c[ptr[group]]


def _offsets(lengths) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _ragged_take(flat: np.ndarray, offsets: np.ndarray, index: np.ndarray,
                 limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows `index` of a ragged array (each cut to its first `limit` values) -> (their values
    concatenated, their lengths)."""
    lens = offsets[index + 1] - offsets[index]
    if limit is not None:
        lens = np.minimum(lens, limit)
    starts = np.repeat(offsets[index] - _offsets(lens)[:-1], lens)
    return flat[starts + np.arange(int(lens.sum()))], lens


# A segment of a family of documents, one row per document:
#   ("const", tokens)            the same tokens in every document
#   ("one", ids[D])              one token per document (a user or item token)
#   ("ragged", values, lens[D])  lens[d] tokens per document, values concatenated in order


def _assemble(n_docs: int, segments: list, n_prompt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate segments per document -> (tokens, offsets, prompt_len); the first
    `n_prompt` segments are the prompt. Fully vectorised: no loop over documents."""
    lens = np.zeros((n_docs, max(1, len(segments))), np.int64)
    for s, seg in enumerate(segments):
        lens[:, s] = len(seg[1]) if seg[0] == "const" else 1 if seg[0] == "one" else seg[2]
    offsets = _offsets(lens.sum(1))
    starts = offsets[:-1, None] + np.cumsum(lens, 1) - lens       # [D, S] start of each segment
    tokens = np.empty(int(offsets[-1]), np.int64)
    for s, seg in enumerate(segments):
        if seg[0] == "const":
            tokens[starts[:, s, None] + np.arange(len(seg[1]))] = seg[1]
        elif seg[0] == "one":
            tokens[starts[:, s]] = seg[1]
        else:
            values, n = seg[1], seg[2]
            tokens[np.repeat(starts[:, s] - _offsets(n)[:-1], n) + np.arange(len(values))] = values
    return tokens, offsets, lens[:, :n_prompt].sum(1)


# ====================================================================== templates


def collate(docs: Documents, index, n_items: int | None = None, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Documents `index` -> right-padded tensors (keys in the module docstring)."""
    index = np.asarray(index, np.int64)
    start, lens = docs.offsets[index], docs.offsets[index + 1] - docs.offsets[index]
    T = int(lens.max()) if len(index) else 0
    pos = np.arange(T)
    real = pos[None, :] < lens[:, None]                                     # [B, T]
    gather = np.where(real, start[:, None] + pos[None, :], 0)
    ids = np.where(real, docs.tokens[gather] if docs.n_tokens else 0, pad_id)
    plen = docs.prompt_len[index]
    out = {
        "input_ids": torch.from_numpy(ids.astype(np.int64)),
        "attention_mask": torch.from_numpy(real.astype(np.int64)),
        "main_mask": torch.from_numpy(real & (pos[None, :] >= plen[:, None])),
        "last_prompt_index": torch.from_numpy((plen - 1).astype(np.int64)),
        "kind": torch.from_numpy(docs.kind[index].astype(np.int64)),
        "user": torch.from_numpy(docs.user[index].astype(np.int64)),
    }
    targets, tlens = _ragged_take(docs.target_items, docs.target_offsets, index)
    out["target_items"] = torch.from_numpy(targets)
    out["target_offsets"] = torch.from_numpy(_offsets(tlens))
    if n_items is not None and len(docs.target_items):
        # np.zeros maps zero pages lazily; torch.zeros would write all B x J floats each batch
        dense = np.zeros((len(index), n_items), np.float32)
        dense[np.repeat(np.arange(len(index)), tlens), targets] = 1.0
        out["targets"] = torch.from_numpy(dense)
    return out


class LengthBucketSampler:
    """Batches of documents of similar length, every document exactly once per epoch.

    Per epoch (seeded by seed + epoch): shuffle, cut into pools of `pool` batches' worth of
    documents, sort each pool by length, cut batches (at most `batch_size` documents and, if
    `max_tokens` is set, at most max_tokens padded tokens = B x longest), shuffle the batches.
    Yields lists of document indices; use as a DataLoader's `batch_sampler` with
    `collate_fn=lambda idx: collate(docs, idx)`, or iterate directly.
    """

    def __init__(self, lengths, batch_size: int | None = 32, max_tokens: int | None = None, seed: int = 0,
                 shuffle: bool = True, pool: int = 50):
        if batch_size is None and max_tokens is None:
            raise ValueError("give batch_size, max_tokens or both")
        self.lengths = np.asarray(lengths, np.int64)
        if max_tokens is not None and len(self.lengths) and self.lengths.max() > max_tokens:
            raise ValueError(f"a document has {self.lengths.max()} tokens > max_tokens={max_tokens}: "
                             "raise max_tokens or lower corpus.max_prompt_tokens / max_main_tokens")
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.seed, self.shuffle, self.pool = seed, shuffle, pool
        self.epoch = 0
        self._cache: tuple[int, list] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[np.ndarray]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        typical = int(np.median(self.lengths)) if n else 1
        per_pool = self.pool * (self.batch_size or max(1, self.max_tokens // max(1, typical)))
        out = []
        for p in range(0, n, per_pool):
            chunk = order[p:p + per_pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            out += self._cut(chunk)
        if self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        self._cache = (self.epoch, out)
        return out

    def _cut(self, chunk: np.ndarray) -> list[np.ndarray]:
        """Greedy cut of length-sorted documents under the batch size and token budget."""
        out, start, longest = [], 0, 0
        for k in range(len(chunk)):
            longest_k = max(longest, int(self.lengths[chunk[k]]))
            size = k - start + 1
            full = (self.batch_size is not None and size > self.batch_size) or \
                   (self.max_tokens is not None and size * longest_k > self.max_tokens)
            if full:
                out.append(chunk[start:k])
                start, longest_k = k, int(self.lengths[chunk[k]])
            longest = longest_k
        if start < len(chunk):
            out.append(chunk[start:])
        return out

    def __iter__(self):
        for b in self.batches():
            yield b.tolist()

    def __len__(self) -> int:
        return len(self.batches())

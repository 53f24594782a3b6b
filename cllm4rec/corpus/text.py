"""Templates (hard prompts with ID-token slots) and cached batch tokenization of free texts."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import replacing
from .documents import _offsets

_SLOT = re.compile(r"\{(\w+)\}")


class Template:
    """A prompt template tokenized once: text pieces (token arrays) and named slots.

    A text piece right before a slot loses one trailing space: the slot's first token (an ID
    token, or a text filling that starts with a space) carries it, as vocab.py's ID tokens do.
    """

    def __init__(self, text: str, tokenize, allowed: set[str], required: set[str], name: str):
        self.text = text
        parts = _SLOT.split(text)              # text, slot, text, slot, ..., text
        slots = parts[1::2]
        bad = sorted(set(slots) - allowed)
        missing = sorted(required - set(slots))
        if bad or missing:
            raise ValueError(f"corpus.{name} = {text!r}: " + (f"unknown slot(s) {bad}" if bad else "")
                             + ("; " if bad and missing else "") + (f"missing slot(s) {missing}" if missing else "")
                             + f"; allowed slots: {sorted(allowed)}")
        self.pieces: list = []
        for k, piece in enumerate(parts):
            if k % 2:
                self.pieces.append(piece)
                continue
            if k + 1 < len(parts) and piece.endswith(" "):
                piece = piece[:-1]
            if piece:
                self.pieces.append(np.asarray(tokenize(piece), np.int64))
        self.slots = slots
        self.ragged_slots = [s for s in slots if s in ("items", "history", "titles")]
        # tokens that do not depend on the filling of ragged slots
        self.fixed_len = sum(len(p) if isinstance(p, np.ndarray) else p not in self.ragged_slots
                             for p in self.pieces)

    def segments(self, fill: dict) -> list:
        """fill: slot -> ids[D] (one token each) or (values, lens[D]) (ragged)."""
        out = []
        for p in self.pieces:
            if isinstance(p, np.ndarray):
                out.append(("const", p))
            elif isinstance(fill[p], tuple):
                out.append(("ragged", *fill[p]))
            else:
                out.append(("one", fill[p]))
        return out


# ====================================================================== text tokenization


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's full definition (vocabulary, merges, normalisation)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:
        text = repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


def tokenize_texts(tokenizer, texts: Sequence[str], cache_dir: str | os.PathLike | None = None,
                   fingerprint: str | None = None, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (flat int64 tokens, [len+1] offsets), by the fast tokenizer in batches.

    With `cache_dir`, the result is kept as an npz named by a hash of the texts and the
    tokenizer, so later builders read it instead of tokenizing again.
    """
    path = None
    if cache_dir is not None:
        h = hashlib.sha256((fingerprint or tokenizer_fingerprint(tokenizer)).encode())
        for t in texts:
            h.update(t.encode())
            h.update(b"\0")
        path = Path(cache_dir) / f"tokens-{h.hexdigest()[:32]}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                return z["tokens"], z["offsets"]
    lens = np.zeros(len(texts), np.int64)
    chunks = []
    for start in range(0, len(texts), batch):
        # verbose=False: long texts are cut later (max_main_tokens), no length warning needed
        ids = tokenizer(list(texts[start:start + batch]), add_special_tokens=False, verbose=False)["input_ids"]
        lens[start:start + len(ids)] = [len(x) for x in ids]
        chunks.append(np.fromiter((t for x in ids for t in x), np.int64))
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    offsets = _offsets(lens)
    if path is not None:
        with replacing(path, suffix=".npz") as tmp:   # a concurrent reader sees the whole file or none
            np.savez(tmp, tokens=tokens, offsets=offsets)
    return tokens, offsets


@dataclass
class _TextTable:
    """Tokenized texts of one source: row r is about owner user[r] / item[r]."""
    name: str                 # field name
    tokens: np.ndarray
    offsets: np.ndarray
    user: np.ndarray          # [R] int64, -1 if none
    item: np.ndarray          # [R] int64, -1 if none

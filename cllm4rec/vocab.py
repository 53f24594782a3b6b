"""The vocabulary extender: one atomic token per user and per item after the backbone's own.

Token id layout, with N backbone vocabulary rows, I users and J items:

    [0, N)            the backbone's vocabulary (frozen table)
    [N, N+I)          users:  user i -> N + i
    [N+I, N+I+J)      items:  item j -> N + I + j

Ids are placed by arithmetic, never by the BPE: a user/item token can't be split. In text the
tokens are spelled `<user_12>` / `<item_7>` (dataset indices) or `<user:RAW>` / `<item:RAW>`
(the dataset's raw ids, e.g. an ASIN). An ID token absorbs the one space before it, as a GPT-2
word carries its leading space: "<user_3> has interacted with <item_5> <item_9>" encodes to
[user 3] + BPE(" has interacted with") + [item 5, item 9], and decodes back to the same text.
(Text that glues an ID token to the previous word, "x<item_3>", decodes with a space added.)
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_ID_TOKEN = re.compile(r" ?<(user|item)(?:_(\d+)|:([^>\s]+))>")


@dataclass(frozen=True)
class Vocab:
    n_vocab: int      # N: rows of the backbone's input embedding table
    n_users: int      # I
    n_items: int      # J

    @property
    def size(self) -> int:
        return self.n_vocab + self.n_users + self.n_items

    @property
    def user_offset(self) -> int:
        return self.n_vocab

    @property
    def item_offset(self) -> int:
        return self.n_vocab + self.n_users

    def user(self, u):
        """User index (int or array) -> token id."""
        return self._check(u, self.n_users, "user") + self.user_offset

    def item(self, j):
        """Item index (int or array) -> token id."""
        return self._check(j, self.n_items, "item") + self.item_offset

    def is_user(self, ids):
        ids = np.asarray(ids)
        return (ids >= self.user_offset) & (ids < self.item_offset)

    def is_item(self, ids):
        ids = np.asarray(ids)
        return (ids >= self.item_offset) & (ids < self.size)

    @staticmethod
    def _check(x, n, kind):
        arr = np.asarray(x)
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise IndexError(f"{kind} index out of range 0..{n - 1}: {x}")
        return x


class IDTokenizer:
    """A tokenizer-facing view: text with `<user_i>` / `<item_j>` tokens <-> token ids.

    `tokenizer` is the backbone's fast tokenizer (used for the words only); `user_ids` and
    `item_ids` are the dataset's index -> raw id lists (for the `<user:RAW>` spelling).
    """

    def __init__(self, tokenizer, vocab: Vocab, user_ids=None, item_ids=None):
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.user_ids = list(user_ids) if user_ids is not None else None
        self.item_ids = list(item_ids) if item_ids is not None else None
        self._raw_user = {r: i for i, r in enumerate(self.user_ids or [])}
        self._raw_item = {r: i for i, r in enumerate(self.item_ids or [])}

    def _words(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        pos = 0
        for m in _ID_TOKEN.finditer(text):
            ids += self._words(text[pos:m.start()])
            kind, index, raw = m.groups()
            if index is not None:
                k = int(index)
            else:
                table = self._raw_user if kind == "user" else self._raw_item
                if raw not in table:
                    raise KeyError(f"unknown {kind} id {raw!r}: not in this dataset's {kind} map")
                k = table[raw]
            ids.append(int(self.vocab.user(k) if kind == "user" else self.vocab.item(k)))
            pos = m.end()
        return ids + self._words(text[pos:])

    def decode(self, ids, raw: bool = False) -> str:
        """Token ids -> text; `raw=True` spells user/item tokens with the dataset's raw ids."""
        v = self.vocab
        out: list[str] = []
        words: list[int] = []

        def flush():
            if words:
                out.append(self.tokenizer.decode(words))
                words.clear()

        for t in (int(x) for x in ids):
            if t < v.n_vocab:
                words.append(t)
                continue
            flush()
            if t < v.item_offset:
                k = t - v.user_offset
                tok = f"<user:{self.user_ids[k]}>" if raw else f"<user_{k}>"
            elif t < v.size:
                k = t - v.item_offset
                tok = f"<item:{self.item_ids[k]}>" if raw else f"<item_{k}>"
            else:
                raise IndexError(f"token id {t} is outside the extended vocabulary (size {v.size})")
            out.append((" " if out else "") + tok)
        flush()
        return "".join(out)

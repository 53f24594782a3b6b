"""CorpusBuilder: every document kind of a dataset, drawn per epoch (the kinds live in their own files)."""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from ..data.dataset import TEST, TRAIN, VALID, Dataset
from ..vocab import Vocab
from .config import CONTENT_KINDS, HEAD, KIND_CODE, KINDS, CorpusConfig
from .documents import Documents, _assemble, _group_cumsum, _offsets
from .text import Template, tokenize_texts, tokenizer_fingerprint
from .rating import RatingDocs


from .auxiliary import AuxiliaryDocs
from .collaborative import CollaborativeDocs
from .content import ContentDocs


class CorpusBuilder(CollaborativeDocs, AuxiliaryDocs, ContentDocs, RatingDocs):
    """Builds every kind of document for one split dataset.

    ds: a Dataset with `split` set (documents use TRAIN rows only); tokenizer: the backbone's
    fast tokenizer (words only); vocab: the extended vocabulary; cfg: CorpusConfig;
    cache_dir: optional folder for tokenized texts (npz, keyed by texts + tokenizer).
    Texts are tokenized once, on first use, and kept.
    """

    def __init__(self, ds: Dataset, tokenizer, vocab: Vocab, cfg: CorpusConfig | None = None,
                 cache_dir: str | os.PathLike | None = None):
        if ds.split is None:
            raise ValueError(f"dataset {ds.name!r} has no split: call cllm4rec.data.split_dataset first "
                             "(documents are built from training interactions only)")
        if (vocab.n_users, vocab.n_items) != (ds.n_users, ds.n_items):
            raise ValueError(f"vocab has {vocab.n_users} users / {vocab.n_items} items but dataset {ds.name!r} "
                             f"has {ds.n_users} / {ds.n_items}: build Vocab from this dataset")
        self.ds, self.tokenizer, self.vocab = ds, tokenizer, vocab
        self.cfg = cfg or CorpusConfig()
        self.cache_dir = cache_dir
        self._fingerprint = None
        self._tables: dict = {}   # kind -> [(_TextTable, Template)]; "_titles" -> (tokens, offsets)
        c = self.cfg
        t = self._words
        self.t_collab = Template(c.collaborative_template, t, {"user"}, set(), "collaborative_template")
        self.t_mim = Template(c.mim_template.replace("{mask}", c.mim_mask_word.strip()), t, {"user", "history"},
                              {"history"}, "mim_template")
        self.t_bpr = Template(c.bpr_template, t, {"user", "a", "b"}, {"a", "b"}, "bpr_template")
        self.t_history = Template(c.history_template, t, {"titles"}, {"titles"}, "history_template")
        self.t_finetune = Template(c.finetune_template, t, {"user", "items"}, {"items"}, "finetune_template")
        self.t_rating = Template(c.rating_template, t, {"user", "item"}, set(), "rating_template")
        self.mask_tokens = np.asarray(t(" " + c.mim_mask_word.strip()), np.int64)
        if len(self.mask_tokens) == 0:
            raise ValueError("corpus.mim_mask_word must not be empty")

        # training rows grouped by user, in canonical (time) order
        train = ds.split == TRAIN
        self.train_row = np.flatnonzero(train)
        self.train_item = ds.item[train].astype(np.int64)
        self.train_user = ds.user[train].astype(np.int64)
        self.train_count = np.bincount(self.train_user, minlength=ds.n_users)
        self.train_ptr = _offsets(self.train_count)
        # every interacted pair, any split, as sorted keys user * J + item (BPR negatives)
        self._pair_keys = np.unique(ds.user.astype(np.int64) * ds.n_items + ds.item)

    # ------------------------------------------------------------------ helpers

    def _words(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        if ids and max(ids) >= self.vocab.n_vocab:
            raise ValueError(f"tokenizer gives id {max(ids)} >= vocab.n_vocab={self.vocab.n_vocab}: "
                             "the Vocab does not match this tokenizer")
        return ids

    def _tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.cache_dir is not None and self._fingerprint is None:
            self._fingerprint = tokenizer_fingerprint(self.tokenizer)
        tokens, offsets = tokenize_texts(self.tokenizer, texts, self.cache_dir, self._fingerprint)
        if len(tokens) and tokens.max() >= self.vocab.n_vocab:
            raise ValueError(f"tokenizer gives id {tokens.max()} >= vocab.n_vocab={self.vocab.n_vocab}")
        return tokens, offsets

    @staticmethod
    def _fields(available: Mapping, wanted, what: str) -> list[str]:
        if wanted is None:
            return sorted(available)
        missing = sorted(set(wanted) - set(available))
        if missing:
            raise ValueError(f"corpus.{what}_fields names {missing}, which the dataset does not have; "
                             f"it has {sorted(available)}")
        return list(wanted)

    def _permute(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Training rows reordered within each user -> (order into train_*, rank within user):
        a fresh shuffle (item_order='shuffle') or time order."""
        n = len(self.train_item)
        if self.cfg.item_order == "time":
            order = np.arange(n)
        else:  # user + U[0,1) keeps users grouped and shuffles inside each group
            order = np.argsort(self.train_user + rng.random(n), kind="stable")
        rank = np.arange(n) - self.train_ptr[self.train_user]
        return order, rank

    def _room(self, tpl: Template, name: str, least: int = 0) -> int:
        """Prompt tokens left for the template's ragged slot; at least `least` or a clear error."""
        room = self.cfg.max_prompt_tokens - tpl.fixed_len
        if room < least:
            raise ValueError(f"corpus.{name}_template needs {tpl.fixed_len + least} prompt tokens but "
                             f"max_prompt_tokens={self.cfg.max_prompt_tokens}: raise it or shorten the template")
        return room

    def _mask_counts(self, n: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
        """m = clip(floor(p n + u), 1, max(n-1, 1)) per user; 0 where n = 0."""
        m = np.floor(p * n + rng.random(len(n))).astype(np.int64)
        m = np.minimum(np.maximum(m, 1), np.maximum(n - 1, 1))
        return np.where(n > 0, m, 0)

    def _masked_rows(self, rank, m):
        """Which permuted rows are masked: the first m of each user's permutation (shuffle),
        or the m most recent (time order: predict what comes next)."""
        if self.cfg.item_order == "time":
            return rank >= (self.train_count - m)[self.train_user]
        return rank < m[self.train_user]

    def _keep_room(self, keep: np.ndarray, room: int, group: np.ndarray, ptr: np.ndarray,
                   from_end: bool) -> np.ndarray:
        """Within each group (rows sorted by group), keep at most `room` of the rows where
        `keep` is true: the first ones (a random subset after a shuffle) or the last ones."""
        k = _group_cumsum(keep, group, ptr)            # 1-based rank among the kept rows
        if from_end:
            total = np.bincount(group, weights=keep, minlength=len(ptr) - 1).astype(np.int64)
            return keep & (total[group] - k < room)
        return keep & (k <= room)

    def _docs(self, kind: str, tokens, offsets, prompt_len, user=None, item=None,
              targets=None, target_lens=None) -> Documents:
        d = len(prompt_len)
        none = np.full(d, -1, np.int64)
        if targets is None:
            targets, target_lens = np.zeros(0, np.int64), np.zeros(d, np.int64)
        return Documents(tokens, offsets, prompt_len.astype(np.int64), np.full(d, KIND_CODE[kind], np.int8),
                         none if user is None else np.asarray(user, np.int64),
                         none if item is None else np.asarray(item, np.int64),
                         np.asarray(targets, np.int64), _offsets(target_lens))

    # ------------------------------------------------------------------ public API

    def epoch(self, kind: str, rng: np.random.Generator) -> Documents:
        """One natural epoch of one kind (one document per user, or per text), freshly drawn.
        'content' = every content kind the dataset has text for and the config enables."""
        if kind == "content":
            return Documents.concat([self.epoch(k, rng) for k in CONTENT_KINDS if getattr(self.cfg, k)])
        builders = {"collaborative": self._collaborative, "interaction_text": self._interaction_text,
                    "item_text": self._item_text, "user_text": self._user_text, "mim": self._mim,
                    "bpr": self._bpr, "history": self._history, "finetune": self._finetune,
                    "rating": self._rating}
        if kind not in builders:
            raise ValueError(f"unknown document kind {kind!r}; choose from {sorted(builders) + ['content']} "
                             "(evaluation prompts: eval_prompts)")
        return builders[kind](rng)

    def mixture(self, head: str, rng: np.random.Generator, exclude: Sequence[str] = ()) -> Documents:
        """The enabled kinds scored by `head` ('item': the L-step's documents; 'word': the
        C-step's; 'rating': fine-tuning's rating documents), each repeated by its weight:
        floor(w) fresh epochs + a random fraction; kinds in `exclude` left out."""
        if head not in ("item", "word", "rating"):
            raise ValueError(f"head must be 'item', 'word' or 'rating', got {head!r}")
        parts = []
        for kind in KINDS:
            if HEAD[kind] != head or not getattr(self.cfg, kind) or kind in exclude:
                continue
            w = getattr(self.cfg, f"{kind}_weight")
            for _ in range(int(w)):
                parts.append(self.epoch(kind, rng))
            frac = w - int(w)
            if frac > 0:
                docs = self.epoch(kind, rng)
                n = int(round(frac * len(docs)))
                parts.append(docs.select(np.sort(rng.choice(len(docs), n, replace=False))))
        return Documents.concat(parts)

    def has_content(self) -> bool:
        """Whether the data has texts for the content LM's documents (a C-step has batches)."""
        return len(self.mixture("word", np.random.default_rng(0))) > 0

    def eval_prompts(self, part: str = "valid") -> Documents:
        """Fine-tuning prompts from ALL of each user's training items (plus validation items
        for part='test' when eval_test_includes_valid), one per user, in a fixed order (the
        same on every call); targets = the user's items in `part` (possibly none)."""
        if part not in ("valid", "test"):
            raise ValueError(f"part must be 'valid' or 'test', got {part!r}")
        ds, c = self.ds, self.cfg
        parts = [TRAIN] + ([VALID] if part == "test" and c.eval_test_includes_valid else [])
        rows = np.flatnonzero(np.isin(ds.split, parts))
        user, item = ds.user[rows].astype(np.int64), ds.item[rows].astype(np.int64)
        if c.eval_order == "shuffle":   # a fixed permutation: its own seeded generator
            order = np.argsort(user + np.random.default_rng(c.eval_seed).random(len(rows)), kind="stable")
            user, item = user[order], item[order]
        count = np.bincount(user, minlength=ds.n_users)
        # truncation: the first `room` (a fixed random subset), or the most recent in time order
        rank = np.arange(len(user)) - _offsets(count)[user]
        room = self._room(self.t_finetune, "finetune")
        keep = rank >= count[user] - room if c.eval_order == "time" else rank < room
        shown = np.bincount(user[keep], minlength=ds.n_users)
        users = np.arange(ds.n_users)
        fill = {"user": self.vocab.user(users), "items": (self.vocab.item(item[keep]), shown)}
        segs = self.t_finetune.segments(fill)
        tokens, offsets, plen = _assemble(ds.n_users, segs, len(segs))
        target_rows = np.flatnonzero(ds.split == (VALID if part == "valid" else TEST))
        targets = ds.item[target_rows].astype(np.int64)      # grouped by user (canonical order)
        tcount = np.bincount(ds.user[target_rows], minlength=ds.n_users)
        return self._docs("eval", tokens, offsets, plen, users, None, targets, tcount)

    def prompts(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> Documents:
        """Fine-tuning prompts for given (user index, item-index history) pairs, for serving:
        items in the given order; a history longer than the prompt's room keeps its last items."""
        users = np.asarray(users, np.int64)
        room = self._room(self.t_finetune, "finetune")
        hs = [np.asarray(h, np.int64).reshape(-1) for h in histories]
        hs = [h[len(h) - min(len(h), room):] for h in hs]
        shown = np.asarray([len(h) for h in hs], np.int64)
        items = np.concatenate(hs) if hs else np.zeros(0, np.int64)
        segs = self.t_finetune.segments({"user": self.vocab.user(users), "items": (self.vocab.item(items), shown)})
        tokens, offsets, plen = _assemble(len(users), segs, len(segs))
        return self._docs("eval", tokens, offsets, plen, users)

    # ------------------------------------------------------------------ rating prediction

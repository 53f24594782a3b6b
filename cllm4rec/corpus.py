"""The soft+hard prompt corpus: documents as int arrays, built from training interactions only.

A document is a prompt (heterogeneous: user/item tokens mixed with words) followed by a main
text that is homogeneous: only item tokens (item head) or only vocabulary tokens (the
backbone's vocabulary head). The LM loss is on the main text only. Token ids follow vocab.py:
[vocabulary | users | items]; user/item ids are placed by arithmetic, never by the BPE.

Document kinds (`KINDS`; code = position in the tuple; head = which softmax scores the main):

    collaborative     item  `<user_i> has interacted with` -> the user's training items,
                            re-permuted on every draw (stochastic item reordering)
    interaction_text  word  `<user_i> wrote the following review for <item_j>:` -> review
                            (one template per interaction text field: review, tags, summary..)
    item_text         word  `The title of <item_j> is:` -> title (one per item text field)
    user_text         word  `The profile of <user_i> is:` -> "age: 24, gender: M, ..." (one
                            combined document per user; `user_text_mode: per_field` gives
                            `The {field} of <user_i> is:` documents instead)
    mim               item  masked item modeling: `<user_i> has interacted with <item_a> [mask]
                            <item_c> where [mask] hides an item; the hidden items are` -> the
                            masked items in order (shuffled history, fresh mask every draw)
    bpr               item  `Between <item_a> and <item_b>, <user_i> prefers` -> the consumed one
                            (the other is never interacted with, in any split; random order)
    history           item  `A user has interacted with "Title A", "Title B", and will interact
                            with` (titles of the unmasked items, no user token) -> the masked
                            (held-out) training items
    rating          rating  `<user_i> rated <item_j>:` -> ` 4`: one training interaction with a rating;
                            the label is scored by the vocabulary head restricted to the tokens
                            of the rating levels (`RatingScale`), at the prompt's last token
    finetune          none  `<user_i> has interacted with <unmasked, shuffled>, <user_i> will
                            interact with`; targets = every training item (`finetune_target`:
                            all, the default), the masked ones only (masked, the paper), or the
                            item right after a random time-ordered prefix (next); sequence: the
                            prompt up to {items} -> every training item in time order as main
                            text (no targets: the item head's next-item loss at every item)
    eval              none  the same prompt from ALL training items (+ validation items for the
                            test part when `eval_test_includes_valid`), deterministic order

Masking rule (finetune, mim, history), per user with n training items and ratio p:
    m = floor(p * n + u), u ~ U[0, 1) (stochastic rounding: E[m] = p n), then clipped to
    1 <= m <= max(n - 1, 1): at least one item is masked and, when n >= 2, at least one stays
    visible. A fresh mask (and a fresh permutation) is drawn on every draw.

Truncation keeps the prompt's cue: a prompt longer than `max_prompt_tokens` loses history
items (a random subset is kept: the first ones of the fresh permutation; in time order the
most recent), never its end. A word main text is cut at its end to `max_main_tokens`; an item
main text keeps a random subset of that size (redrawn on every draw).

Positions and labels: the logit at position t predicts token t+1. A document of prompt length
P has its main text at positions P..L-1, so the first main token is predicted from the last
prompt token (position P-1) and every main token, the first included, is a label. `collate`
marks label positions with `main_mask` (True at P..L-1); the loss reads hidden states at
`main_mask[:, 1:]` shifted one to the left. Fine-tuning and evaluation have no main text: the
item head reads the hidden state at `last_prompt_index` (= P-1).

Batch dict from `collate(docs, index, n_items=J)` (B documents, T = longest in the batch):
    input_ids          [B, T] int64, right-padded with `pad_id`
    attention_mask     [B, T] int64, 1 on real tokens
    main_mask          [B, T] bool, True on main-text tokens (label positions)
    last_prompt_index  [B] int64, position of each prompt's last token
    kind               [B] int64 kind code; user [B] int64 user index or -1
    targets            [B, J] float32 multi-hot of target items (only when `n_items` is given
                       and the documents carry targets: finetune, eval). For a large catalogue
                       prefer the index lists below and build the multi-hot on the device
    target_items, target_offsets   the same targets as a flat index list + [B+1] offsets

Tokenization: templates are tokenized once, piece by piece, and ID tokens absorb the space
before them, so a document equals `IDTokenizer.encode` of its text. A template's text next to
a text slot ({history}, {titles}) should begin with a space (BPE would otherwise merge across
the boundary, e.g. '"' + '.' -> '".', which is still the same text but not the canonical
tokenization). Free texts (main texts, titles) are tokenized in batches with a leading space.

Use: `b = CorpusBuilder(ds, tokenizer, vocab, CorpusConfig())`, then `b.epoch('collaborative',
rng)`, `b.mixture('item', rng)` (weighted mix of the enabled item-head kinds, the L-step's
documents) / `b.mixture('word', rng)` (the C-step's), `b.epoch('finetune', rng)`,
`b.eval_prompts('valid')`. Batches: `LengthBucketSampler(docs.lengths, ...)` + `collate`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .files import help_field, replacing
from .data.dataset import PARTS as PART_CODE, TEST, TRAIN, VALID, Dataset
from .vocab import Vocab

KINDS = ("collaborative", "interaction_text", "item_text", "user_text", "mim", "bpr", "history",
         "finetune", "eval", "rating")
KIND_CODE = {k: c for c, k in enumerate(KINDS)}
HEAD = {"collaborative": "item", "mim": "item", "bpr": "item", "history": "item",
        "interaction_text": "word", "item_text": "word", "user_text": "word",
        "finetune": None, "eval": None, "rating": "rating"}
CONTENT_KINDS = ("interaction_text", "item_text", "user_text")


@dataclass
class CorpusConfig:
    """Templates, document kinds and lengths; conf/corpus/default.yaml mirrors every field.

    Templates are plain text with slots in braces ({user}, {item}, {items}, ...). A user/item
    token absorbs the one space before it, as in vocab.py, so a template renders and
    tokenizes exactly like `IDTokenizer.encode` of the filled-in text.
    """
    # ---- lengths and order
    max_prompt_tokens: int = help_field(512, "Longest prompt; longer prompts drop history items, keeping their cue")
    max_main_tokens: int = help_field(512, "Longest main text; words are cut at the end, items keep a random subset")
    item_order: str = help_field("shuffle", "shuffle: a fresh random order of history items on every draw (the "
                            "paper's stochastic reordering); time: keep time order, mask and keep the most recent")
    # ---- collaborative (item head)
    collaborative: bool = help_field(True, "Use collaborative documents in the item-head mixture")
    collaborative_weight: float = help_field(1.0, "Documents per user per epoch in the mixture (fractions sample)")
    collaborative_template: str = help_field("{user} has interacted with", "Prompt; main = the user's training items")
    # ---- content (vocabulary head)
    interaction_text: bool = help_field(True, "Use interaction texts (reviews, tags) of training rows")
    interaction_text_weight: float = help_field(1.0, "Copies per text per epoch in the word-head mixture")
    interaction_text_fields: list | None = help_field(None, "Fields of Dataset.interaction_text to use; null = all")
    interaction_text_templates: dict = help_field(
        {"review": "{user} wrote the following review for {item}:",
         "summary": "{user} summarized the review of {item} as:",
         "tags": "{user} tagged {item} with:"}, "Per-field prompt; slots {user} {item}")
    interaction_text_fallback: str = help_field("{user} wrote the following {field} for {item}:",
                                           "Prompt for fields without a template ({field} = field name)")
    item_text: bool = help_field(True, "Use item texts (title, description, brand, attributes, genres, ...)")
    item_text_weight: float = help_field(1.0, "Copies per text per epoch in the word-head mixture")
    item_text_fields: list | None = help_field(None, "Fields of Dataset.item_text to use; null = all")
    item_text_templates: dict = help_field({"title": "The title of {item} is:"}, "Per-field prompt; slot {item}")
    item_text_fallback: str = help_field("The {field} of {item} is:", "Prompt for other fields ({field} = name)")
    user_text: bool = help_field(True, "Use user texts (profiles)")
    user_text_weight: float = help_field(1.0, "Copies per text per epoch in the word-head mixture")
    user_text_fields: list | None = help_field(None, "Fields of Dataset.user_text to use; null = all")
    user_text_mode: str = help_field("profile", "profile: one document per user, 'field: value, ...'; "
                                "per_field: one document per field")
    user_text_profile_template: str = help_field("The profile of {user} is:", "Prompt of the combined profile")
    user_text_fallback: str = help_field("The {field} of {user} is:", "Prompt per field in per_field mode")
    # ---- second paper's auxiliary tasks (item head), off by default
    mim: bool = help_field(False, "Masked item modeling documents in the item-head mixture")
    mim_weight: float = help_field(1.0, "Documents per user per epoch")
    mim_mask_ratio: float = help_field(0.2, "Fraction of the history masked (rule in the module docstring)")
    mim_mask_word: str = help_field("[mask]", "Word shown in place of a masked item (a space is put before it)")
    mim_template: str = help_field("{user} has interacted with {history} where {mask} hides an item; the hidden items are",
                              "Prompt; {history} = the history with masked items as the mask word; {mask} = "
                              "the mask word as text")
    bpr: bool = help_field(False, "Pairwise preference documents in the item-head mixture")
    bpr_weight: float = help_field(1.0, "Documents per user per epoch (each with a fresh pair)")
    bpr_template: str = help_field("Between {a} and {b}, {user} prefers", "Prompt; main = the consumed item")
    history: bool = help_field(False, "Recommendation documents describing the user by item titles")
    history_weight: float = help_field(1.0, "Documents per user (with >= 2 training items) per epoch")
    history_mask_ratio: float = help_field(0.2, "Fraction of the history held out as the main text")
    history_field: str | None = help_field(None, "Item text field naming an item; null = first of title, "
                                      "movie_title, name present")
    history_title_tokens: int = help_field(32, "Longest title kept per item")
    history_template: str = help_field("A user has interacted with {titles} and will interact with",
                                  "Prompt; {titles} = the quoted titles, each followed by a comma")
    # ---- recommendation-oriented fine-tuning and evaluation
    finetune_mask_ratio: float = help_field(0.5, "p_m: fraction of training items masked from the prompt (rule in "
                                       "the docstring); the paper: 0.2")
    finetune_target: str = help_field("all", "all: every training item, visible or masked (the authors' code; a "
                                 "denoising autoencoder's target, as in Multi-DAE/VAE); masked: the held-out "
                                 "items only (the paper); next: a random time-ordered prefix -> the item "
                                 "right after it; sequence: the whole time-ordered history as the main text, "
                                 "the item head scores every next item in one pass (SASRec's shape; next and "
                                 "sequence need item_order=time, sequence a template ending in {items})")
    finetune_template: str = help_field("{user} has interacted with {items}, {user} will interact with",
                                   "Fine-tuning and evaluation prompt; slot {items} required")
    eval_order: str = help_field("shuffle", "shuffle: one fixed seeded permutation per user; time: time order")
    eval_seed: int = help_field(0, "Seed of the fixed evaluation permutation")
    eval_test_includes_valid: bool = help_field(False, "Test prompts list training + validation items")
    # ---- rating prediction (the third task of Cao et al. 2024), trained in fine-tuning
    rating: bool = help_field(False, "Rating documents (needs ratings in the data), trained alongside fine-tuning")
    rating_weight: float = help_field(1.0, "Documents per training rating per epoch (fractions sample)")
    rating_template: str = help_field("{user} rated {item}:", "Prompt; main = the rating as a word, e.g. ' 4'")

    def __post_init__(self):
        for name in ("mim_mask_ratio", "history_mask_ratio", "finetune_mask_ratio"):
            p = getattr(self, name)
            if not 0.0 < p < 1.0:
                raise ValueError(f"corpus.{name} must be in (0, 1), got {p}")
        if self.finetune_target in ("next", "sequence") and self.item_order != "time":
            raise ValueError(f"corpus.finetune_target={self.finetune_target} predicts the item after a time-ordered "
                             "prefix: set corpus.item_order=time (corpus=sequential)")
        if self.finetune_target == "sequence" and not self.finetune_template.rstrip().endswith("{items}"):
            raise ValueError(f"corpus.finetune_target=sequence scores the items as the main text, so "
                             f"corpus.finetune_template must end with {{items}}, got {self.finetune_template!r} "
                             "(corpus=sequential has one)")
        choices = {"finetune_target": ("masked", "all", "next", "sequence"), "item_order": ("shuffle", "time"),
                   "eval_order": ("shuffle", "time"), "user_text_mode": ("profile", "per_field")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"corpus.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("max_prompt_tokens", "max_main_tokens", "history_title_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"corpus.{name} must be >= 1, got {getattr(self, name)}")
        for f in dataclasses.fields(self):
            if f.name.endswith("_weight") and getattr(self, f.name) < 0:
                raise ValueError(f"corpus.{f.name} must be >= 0, got {getattr(self, f.name)}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> "CorpusConfig":
        """From a dict or an OmegaConf node (pass `OmegaConf.to_container(cfg.corpus)`)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ValueError(f"unknown corpus option(s) {unknown}; valid options: {sorted(names)}")
        return cls(**{k: (dict(v) if isinstance(v, Mapping) else list(v) if isinstance(v, (list, tuple)) else v)
                      for k, v in cfg.items()})


# ====================================================================== documents
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
class CorpusBuilder:
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
    def _collaborative(self, rng) -> Documents:
        c = self.cfg
        self._room(self.t_collab, "collaborative")
        order, rank = self._permute(rng)
        keep = self._keep_room(np.ones(len(order), bool), c.max_main_tokens, self.train_user, self.train_ptr,
                               from_end=c.item_order == "time")
        users = np.flatnonzero(self.train_count > 0)
        items = self.train_item[order][keep]
        n = np.minimum(self.train_count, c.max_main_tokens)[users]
        segs = self.t_collab.segments({"user": self.vocab.user(users)})
        n_prompt = len(segs)
        segs.append(("ragged", self.vocab.item(items), n))
        tokens, offsets, plen = _assemble(len(users), segs, n_prompt)
        return self._docs("collaborative", tokens, offsets, plen, users)

    def _finetune(self, rng) -> Documents:
        c = self.cfg
        order, rank = self._permute(rng)
        if c.finetune_target == "sequence":
            # the most recent max_main_tokens items, in time order, after the prompt
            keep = self._keep_room(np.ones(len(order), bool), c.max_main_tokens, self.train_user, self.train_ptr,
                                   from_end=True)
            users = np.flatnonzero(self.train_count > 0)
            n = np.minimum(self.train_count, c.max_main_tokens)[users]
            segs = self.t_finetune.segments({"user": self.vocab.user(users),
                                             "items": (self.vocab.item(self.train_item[order][keep]), n)})
            tokens, offsets, plen = _assemble(len(users), segs, len(segs) - 1)
            return self._docs("finetune", tokens, offsets, plen, users)
        if c.finetune_target == "next":
            # a prefix of 1..n-1 items, uniformly, and the one item after it (time order)
            n = self.train_count
            cut = np.where(n >= 2, 1 + (rng.random(len(n)) * np.maximum(n - 1, 1)).astype(np.int64), 0)
            masked = rank == cut[self.train_user]
            users = np.flatnonzero(n >= 2)
            visible = rank < cut[self.train_user]
            return self._finetune_docs(users, visible, masked, np.ones(len(users), np.int64), order)
        m = self._mask_counts(self.train_count, c.finetune_mask_ratio, rng)
        masked = self._masked_rows(rank, m)
        users = np.flatnonzero(self.train_count > 0)
        if c.finetune_target == "all":
            return self._finetune_docs(users, ~masked, None, None, order)
        return self._finetune_docs(users, ~masked, masked, m[users], order)

    def _finetune_docs(self, users, visible, target, n_target, order=None) -> Documents:
        """Prompts from the `visible` permuted training rows (cue-keeping truncation) of
        `users`; targets = the `target` rows (n_target per user), or all training items."""
        order = np.arange(len(self.train_item)) if order is None else order
        items = self.train_item[order]
        room = self._room(self.t_finetune, "finetune")
        shown = self._keep_room(visible, room, self.train_user, self.train_ptr, from_end=self.cfg.item_order == "time")
        n_shown = np.bincount(self.train_user[shown], minlength=self.ds.n_users)[users]
        segs = self.t_finetune.segments({"user": self.vocab.user(users),
                                         "items": (self.vocab.item(items[shown]), n_shown)})
        tokens, offsets, plen = _assemble(len(users), segs, len(segs))
        if target is None:
            targets, tlens = self.train_item, self.train_count[users]
        else:
            targets, tlens = items[target], n_target
        return self._docs("finetune", tokens, offsets, plen, users, None, targets, tlens)

    def _mim(self, rng) -> Documents:
        c = self.cfg
        order, rank = self._permute(rng)
        mw = len(self.mask_tokens)
        room = self._room(self.t_mim, "mim", mw)
        # subsample long histories first (as if a p-fraction were masked), mask, then drop
        # visible items while the prompt is still too long
        k_max = max(1, int(room / (1 + c.mim_mask_ratio * (mw - 1))))
        sub = self._keep_room(np.ones(len(order), bool), k_max, self.train_user, self.train_ptr,
                              from_end=c.item_order == "time")
        user, items = self.train_user[sub], self.train_item[order][sub]
        n = np.bincount(user, minlength=self.ds.n_users)
        ptr = _offsets(n)
        m = np.minimum(self._mask_counts(n, c.mim_mask_ratio, rng), min(c.max_main_tokens, room // mw))
        # masked: m random positions of each history (a second, independent shuffle)
        pick = np.argsort(user + rng.random(len(user)), kind="stable")
        rank2 = np.empty(len(user), np.int64)
        rank2[pick] = np.arange(len(user)) - ptr[user]
        masked = rank2 < m[user]
        excess = np.maximum(n + m * (mw - 1) - room, 0)
        keep = masked | (_group_cumsum(~masked, user, ptr) > excess[user])   # drop the first visible ones
        user, items, masked = user[keep], items[keep], masked[keep]
        users = np.flatnonzero(n > 0)
        # {history}: per position one item token or the mask word
        pos_segs = [("ragged", self.vocab.item(items[~masked]), (~masked).astype(np.int64)),
                    ("ragged", np.tile(self.mask_tokens, int(masked.sum())), masked * mw)]
        hist, hoff, _ = _assemble(len(user), pos_segs, 0)
        hist_len = np.bincount(user, weights=np.diff(hoff), minlength=self.ds.n_users).astype(np.int64)[users]
        segs = self.t_mim.segments({"user": self.vocab.user(users), "history": (hist, hist_len)})
        n_prompt = len(segs)
        segs.append(("ragged", self.vocab.item(items[masked]), m[users]))
        tokens, offsets, plen = _assemble(len(users), segs, n_prompt)
        return self._docs("mim", tokens, offsets, plen, users)

    def _negatives(self, users: np.ndarray, rng) -> np.ndarray:
        """One item per user, uniform over the warm items the user never interacted with (any split)."""
        J = self.ds.n_items
        cold = self.ds.cold_items if self.ds.cold_items is not None else np.zeros(J, bool)
        neg = rng.integers(0, J, len(users))
        todo = np.arange(len(users))
        for _ in range(1000):
            keys = users[todo] * J + neg[todo]
            pos = np.searchsorted(self._pair_keys, keys)
            hit = (pos < len(self._pair_keys)) & (self._pair_keys[np.minimum(pos, len(self._pair_keys) - 1)] == keys)
            hit |= cold[neg[todo]]
            todo = todo[hit]
            if not len(todo):
                return neg
            neg[todo] = rng.integers(0, J, len(todo))
        raise RuntimeError("could not sample BPR negatives: some users interacted with almost every item")

    def _bpr(self, rng) -> Documents:
        self._room(self.t_bpr, "bpr")
        warm = self.ds.warm_items()
        n_warm = np.bincount(self.ds.user[np.isin(self.ds.item, warm)], minlength=self.ds.n_users)
        users = np.flatnonzero((self.train_count > 0) & (n_warm < len(warm)))   # a negative exists
        # one training item per user, uniformly
        pick = (rng.random(len(users)) * self.train_count[users]).astype(np.int64)
        pos = self.train_item[self.train_ptr[users] + pick]
        neg = self._negatives(users, rng)
        flip = rng.random(len(users)) < 0.5
        a, b = np.where(flip, neg, pos), np.where(flip, pos, neg)
        segs = self.t_bpr.segments({"user": self.vocab.user(users), "a": self.vocab.item(a), "b": self.vocab.item(b)})
        n_prompt = len(segs)
        segs.append(("one", self.vocab.item(pos)))
        tokens, offsets, plen = _assemble(len(users), segs, n_prompt)
        return self._docs("bpr", tokens, offsets, plen, users, pos)

    def _titles(self) -> tuple[np.ndarray, np.ndarray]:
        """Per item the piece ' "Title",' (tokenized once; a title longer than
        history_title_tokens is cut and closed with '",')."""
        if "_titles" not in self._tables:
            c, texts = self.cfg, self.ds.item_text
            name = c.history_field or next((f for f in ("title", "movie_title", "name") if f in texts), None)
            if name is None or name not in texts:
                raise ValueError(f"history documents need an item title field, but dataset {self.ds.name!r} "
                                 f"has item texts {sorted(texts)}: set corpus.history_field to one of them, "
                                 "or corpus.history=false")
            tokens, offsets = self._tokenize([f' "{t.strip()}",' for t in texts[name]])
            close = np.asarray(self._words('",'), np.int64)
            if c.history_title_tokens <= len(close):
                raise ValueError(f"corpus.history_title_tokens must be > {len(close)}, got {c.history_title_tokens}")
            lens = np.diff(offsets)
            long = lens > c.history_title_tokens
            # cut pieces: the first (limit - |close|) tokens, then the closing '",'
            head, _ = _ragged_take(tokens, offsets, np.flatnonzero(long), c.history_title_tokens - len(close))
            segs = [("ragged", head, long * (c.history_title_tokens - len(close))),
                    ("ragged", np.tile(close, int(long.sum())), long * len(close)),
                    ("ragged", tokens[~np.repeat(long, lens)], np.where(long, 0, lens))]
            flat, offs, _ = _assemble(self.ds.n_items, segs, 0)
            self._tables["_titles"] = (flat, offs)
        return self._tables["_titles"]

    def _history(self, rng) -> Documents:
        c = self.cfg
        flat, offs = self._titles()
        order, rank = self._permute(rng)
        user, items = self.train_user, self.train_item[order]
        n = np.where(self.train_count >= 2, self.train_count, 0)
        m = self._mask_counts(n, c.history_mask_ratio, rng)
        masked = self._masked_rows(rank, m) & (n[user] > 0)
        vis = ~masked & (n[user] > 0)
        # titles of visible items, kept while they fit
        piece = np.where(vis, np.diff(offs)[items], 0)
        room = self._room(self.t_history, "history", c.history_title_tokens)
        run = _group_cumsum(piece, user, self.train_ptr)
        if c.item_order == "time":  # the most recent titles: count from each user's end
            run = np.bincount(user, weights=piece, minlength=self.ds.n_users).astype(np.int64)[user] - run + piece
        shown = vis & (run <= room)
        v_item, v_user = items[shown], user[shown]
        hist, lens = _ragged_take(flat, offs, v_item)
        users = np.flatnonzero(n > 0)
        hist_len = np.bincount(v_user, weights=lens, minlength=self.ds.n_users).astype(np.int64)[users]
        segs = self.t_history.segments({"titles": (hist, hist_len)})
        n_prompt = len(segs)
        main = self._keep_room(masked, c.max_main_tokens, user, self.train_ptr, from_end=False)
        segs.append(("ragged", self.vocab.item(items[main]), np.bincount(user[main], minlength=self.ds.n_users)[users]))
        tokens, offsets, plen = _assemble(len(users), segs, n_prompt)
        return self._docs("history", tokens, offsets, plen, users)

    # ------------------------------------------------------------------ word-head kinds
    def _text_docs(self, kind: str, table: _TextTable, template: Template) -> Documents:
        rows = np.flatnonzero(np.diff(table.offsets) > 0)             # texts that are not empty
        main, lens = _ragged_take(table.tokens, table.offsets, rows, self.cfg.max_main_tokens)  # cut at the end
        user, item = table.user[rows], table.item[rows]
        fill = {}
        if "user" in template.slots:
            fill["user"] = self.vocab.user(user)
        if "item" in template.slots:
            fill["item"] = self.vocab.item(item)
        segs = template.segments(fill)
        n_prompt = len(segs)
        segs.append(("ragged", main, lens))
        tokens, offsets, plen = _assemble(len(rows), segs, n_prompt)
        return self._docs(kind, tokens, offsets, plen, user, item)

    def _text_tables(self, kind: str) -> list[tuple[_TextTable, Template]]:
        """Tokenized texts of one content kind, one table per field (built once)."""
        if kind in self._tables:
            return self._tables[kind]
        ds, c = self.ds, self.cfg
        out = []
        if kind == "interaction_text":
            rows = self.train_row                # training interactions only
            for f in self._fields(ds.interaction_text, c.interaction_text_fields, kind):
                texts = [ds.interaction_text[f][r] for r in rows]
                tpl = c.interaction_text_templates.get(f, c.interaction_text_fallback)
                out.append(self._table(f, texts, ds.user[rows], ds.item[rows], tpl, {"user", "item"}, kind))
        elif kind == "item_text":
            items = ds.warm_items()              # a cold item's text waits for serving (cold_items.py)
            for f in self._fields(ds.item_text, c.item_text_fields, kind):
                tpl = c.item_text_templates.get(f, c.item_text_fallback)
                out.append(self._table(f, [ds.item_text[f][j] for j in items], None, items, tpl, {"item"}, kind))
        elif kind == "user_text":
            users = np.arange(ds.n_users)
            fields = self._fields(ds.user_text, c.user_text_fields, kind)
            if c.user_text_mode == "profile" and fields:
                texts = [", ".join(f"{f.replace('_', ' ')}: {ds.user_text[f][u]}" for f in fields
                                   if ds.user_text[f][u]) for u in range(ds.n_users)]
                out.append(self._table("profile", texts, users, None, c.user_text_profile_template, {"user"}, kind))
            elif c.user_text_mode == "per_field":
                for f in fields:
                    out.append(self._table(f, ds.user_text[f], users, None, c.user_text_fallback, {"user"}, kind))
        self._tables[kind] = out
        return out

    def _table(self, name, texts, user, item, template, slots, kind):
        tpl = Template(template.replace("{field}", name.replace("_", " ")), self._words, slots, set(),
                       f"{kind}_templates")
        texts = [(" " + t.strip()) if t and t.strip() else "" for t in texts]   # follows a prompt: leading space
        tokens, offsets = self._tokenize(texts)
        n = len(texts)
        none = np.full(n, -1, np.int64)
        return (_TextTable(name, tokens, offsets, none if user is None else np.asarray(user, np.int64),
                           none if item is None else np.asarray(item, np.int64)), tpl)

    def _content(self, kind: str) -> Documents:
        return Documents.concat([self._text_docs(kind, table, tpl) for table, tpl in self._text_tables(kind)])

    def _interaction_text(self, rng) -> Documents:
        return self._content("interaction_text")

    def _item_text(self, rng) -> Documents:
        return self._content("item_text")

    def _user_text(self, rng) -> Documents:
        return self._content("user_text")


# ====================================================================== batching
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

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

Files: config.py (kinds, heads, CorpusConfig), documents.py (Documents, segment assembly, collate,
length buckets), text.py (templates, cached tokenization), builder.py (CorpusBuilder: epochs,
mixtures, evaluation prompts), and one per document kind, each a part of CorpusBuilder:
collaborative.py (collaborative, fine-tuning), auxiliary.py (MIM, BPR, history), content.py
(interaction / item / user texts), rating.py (rating documents and RatingScale).
"""
from __future__ import annotations

from .builder import CorpusBuilder
from .config import CONTENT_KINDS, HEAD, KIND_CODE, KINDS, CorpusConfig
from .documents import Documents, LengthBucketSampler, collate
from .rating import RatingScale
from .text import Template, tokenize_texts, tokenizer_fingerprint

__all__ = ["CONTENT_KINDS", "HEAD", "KIND_CODE", "KINDS", "CorpusBuilder", "CorpusConfig", "Documents",
           "LengthBucketSampler", "RatingScale", "Template", "collate", "tokenize_texts", "tokenizer_fingerprint"]

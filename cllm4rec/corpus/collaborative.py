"""Collaborative documents (user -> items) and the fine-tuning prompts and targets."""
from __future__ import annotations


import numpy as np

from .documents import Documents, _assemble


class CollaborativeDocs:
    """Collaborative and fine-tuning documents (a part of CorpusBuilder)."""

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

"""The second paper's auxiliary documents: masked item modeling, BPR pairs, history-described prompts."""
from __future__ import annotations


import numpy as np

from .documents import Documents, _assemble, _group_cumsum, _offsets, _ragged_take


class AuxiliaryDocs:
    """MIM, BPR and history documents (a part of CorpusBuilder)."""

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

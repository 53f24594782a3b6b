"""Content documents: interaction, item and user texts as word main texts."""
from __future__ import annotations


import numpy as np

from .documents import Documents, _assemble, _ragged_take
from .text import Template, _TextTable


class ContentDocs:
    """Content (word head) documents (a part of CorpusBuilder)."""

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

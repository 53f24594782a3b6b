"""Sequence files without ratings: S3-Rec `user item item ...` text files (with P5 datamaps,
attribute maps and LETTER item texts) and LC-Rec JSON histories."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from .dataset import Dataset
from .errors import BadLines, DataError
from .readers_io import (SKIP, iter_lines, json_object, line_of, no_interactions, pointer, read_json_document,
                         stem, text)

SKIP_ENTRY = "Fix or delete that entry, or run with strict=false to skip bad entries and count them"
JOIN = {"description": " ", "categories": " > "}   # how list values become text; others ', '


def _index_list(value) -> list[str] | None:
    """A JSON list of integer indices (or digit strings) as strings; None if it is not one."""
    if not isinstance(value, list):
        return None
    out = []
    for x in value:
        if isinstance(x, int) and not isinstance(x, bool):
            out.append(str(x))
        elif isinstance(x, str) and x.isascii() and x.isdigit():
            out.append(x)
        else:
            return None
    return out


def _index_lists(path, doc: str, obj: dict, bad: BadLines, what: str) -> dict[str, list[str]]:
    """key -> `_index_list` of its value for a JSON object of lists; an entry that is not a list
    of indices goes to `bad` (named by its line and key) and is left out."""
    lists = {}
    for k, value in obj.items():
        ids = _index_list(value)
        if ids is None:
            bad(DataError(path, f"expected a list of {what}, got {_described(value)}",
                          line=line_of(doc, k), field=pointer(k), hint=SKIP_ENTRY))
            continue
        lists[k] = ids
    return lists


def _described(value) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def item_text_json(path, bad: BadLines, offset: int = 0) -> dict[str, dict[str, str]]:
    """LC-Rec / LETTER item texts: {"k": {"title": ..., "description": ..., ...}} -> raw id
    str(int(k) + offset) -> {field: text}; every field of an entry is kept."""
    path = Path(path)
    obj, doc = read_json_document(path)
    obj = json_object(path, doc, obj, "item index -> {title, description, ...}")
    out = {}
    for k, entry in obj.items():
        try:
            if offset and not (k.isascii() and k.isdigit()):
                raise DataError(path, f"key {k!r} is not an item index", line=line_of(doc, k), field=pointer(k),
                                hint=SKIP_ENTRY)
            if not isinstance(entry, dict):
                raise DataError(path, f"expected an object of texts, got {_described(entry)}", line=line_of(doc, k),
                                field=pointer(k), hint=SKIP_ENTRY)
            row = {}
            for f, value in entry.items():
                try:
                    row[f] = text(value, path, None, pointer(k, f), sep=JOIN.get(f, ", "))
                except DataError:
                    raise DataError(path, f"expected text, got {_described(value)}", line=line_of(doc, k, f),
                                    field=pointer(k, f), hint=SKIP_ENTRY) from None
        except DataError as e:
            bad(e)
            continue
        out[str(int(k) + offset) if offset else k] = row
    return out


class S3RecSequences:
    """S3-Rec sequence file (Beauty.txt, Yelp.txt): one line per user, `user item item ...`
    in time order, integer ids; no ratings or timestamps. Repeated items are kept.

    `datamaps` (P5 datamaps.json) turns ids into the original ones (reviewerID / ASIN /
    business id) and attribute ids into names (Beauty's attribute ids are a renumbering of
    P5's: see _attribute_names). `attributes` (*_item2attributes.json) gives the item text
    `attributes` (', '-joined). `item_text` (LETTER's Yelp.item.json: key k describes item
    k+1) gives `title`, `description` and any other field it has.
    """

    def __init__(self, path, attributes=None, datamaps=None, item_text=None, name: str | None = None):
        self.path = str(path)
        self.attributes = None if attributes is None else str(attributes)
        self.datamaps = None if datamaps is None else str(datamaps)
        self.item_text = None if item_text is None else str(item_text)
        self.name = name or stem(path)
        self.notes: dict = {}

    def files(self) -> list[Path]:
        return [Path(p) for p in (self.path, self.attributes, self.datamaps, self.item_text) if p]

    def read(self, bad: BadLines) -> Dataset:
        self.notes = {}
        maps = self._datamaps() if self.datamaps else {}
        id2user, id2item = maps.get("id2user"), maps.get("id2item")
        path = Path(self.path)
        users, items, empty = [], [], 0
        for n, line in iter_lines(path, bad):
            ids = line.split()
            if len(ids) < 2:
                empty += 1
                continue
            try:
                ids = self._resolve(ids, id2user, id2item, path, n)
            except DataError as e:
                bad(e)
                continue
            users += [ids[0]] * (len(ids) - 1)
            items += ids[1:]
        if not users:
            raise no_interactions(path, bad)
        if empty:
            self.notes["users_without_items"] = empty
        return Dataset.from_raw(self.name, users, items, item_text=self._texts(bad, maps))

    def _resolve(self, ids: list[str], id2user, id2item, path, n) -> list[str]:
        """Check one line's ids and map them through the datamaps."""
        joined = "".join(ids)
        if not (joined.isascii() and joined.isdigit()):
            j = next(j for j, x in enumerate(ids) if not (x.isascii() and x.isdigit()))
            raise DataError(path, f"{ids[j]!r} is not an integer id", line=n, field="user" if j == 0 else "item",
                            hint=SKIP)
        if id2user is None:
            return ids
        try:
            return [id2user[ids[0]]] + [id2item[x] for x in ids[1:]]
        except KeyError as e:
            kind = "user" if e.args[0] == ids[0] and e.args[0] not in id2user else "item"
            raise DataError(path, f"{kind} id {e.args[0]} is not in {Path(self.datamaps).name} (id2{kind})",
                            line=n, field=kind, hint="The datamaps must come from the same version of this "
                            "dataset. " + SKIP) from None

    def _datamaps(self) -> dict[str, dict[str, str]]:
        path = Path(self.datamaps)
        obj, doc = read_json_document(path)
        obj = json_object(path, doc, obj, "P5 datamaps with id2user, id2item, id2attribute")
        need = ["id2user", "id2item"] + (["id2attribute"] if self.attributes else [])
        hint = "A P5 datamaps.json holds id2user, id2item and id2attribute: check that this is one"
        for key in need:
            if key not in obj:
                raise DataError(path, "missing required field", line=1, field=key, hint=hint)
            table = obj[key]
            if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
                raise DataError(path, "expected an object of id -> name strings", line=line_of(doc, key),
                                field=key, hint=hint)
            if key != "id2attribute" and len(set(table.values())) != len(table):
                raise DataError(path, "two ids map to the same original id", line=line_of(doc, key), field=key,
                                hint=hint)
        maps = {key: obj[key] for key in need}
        if self.attributes and "attributeid2num" in obj:  # Beauty has it, Yelp not: see _attribute_names
            num = obj["attributeid2num"]
            if not (isinstance(num, dict) and all(isinstance(v, int) for v in num.values())):
                raise DataError(path, "expected an object of attribute id -> count", field="attributeid2num",
                                line=line_of(doc, "attributeid2num"), hint=hint)
            maps["attributeid2num"] = num
        return maps

    def _attributes(self, bad: BadLines, maps: dict) -> dict[str, str]:
        """S3-Rec item id -> ', '-joined attribute names (ids without datamaps)."""
        path = Path(self.attributes)
        obj, doc = read_json_document(path)
        obj = json_object(path, doc, obj, "item id -> list of attribute ids")
        lists = _index_lists(path, doc, obj, bad, "attribute ids")
        if "id2attribute" not in maps or not lists:
            return {k: ", ".join(ids) for k, ids in lists.items()}
        used = Counter(a for ids in lists.values() for a in ids)
        names = self._attribute_names(used, maps, path, complete=len(lists) == len(obj))
        out = {}
        for k, ids in lists.items():
            unknown = [a for a in ids if a not in names]
            if unknown:
                bad(DataError(path, f"attribute id {unknown[0]} is not in {Path(self.datamaps).name}",
                              line=line_of(doc, k), field=pointer(k), hint=SKIP_ENTRY))
                continue
            out[k] = ", ".join(names[a] for a in ids)
        return out

    def _attribute_names(self, used: Counter, maps: dict, path: Path, complete: bool) -> dict[str, str]:
        """S3-Rec attribute id -> name.

        S3-Rec numbers only the attributes that occur at least `core` times, keeping the order
        of P5's ids (Beauty: core 5, 637 of P5's 2,320), so P5's id2attribute cannot be used
        as is. With P5's `attributeid2num` the core is the smallest one for which every S3-Rec
        attribute count equals the count of the P5 attribute it stands for (is at most that
        count when bad entries were skipped); without it (Yelp) the ids are P5's own.
        """
        id2attribute, id2num = maps["id2attribute"], maps.get("attributeid2num")
        if id2num is None:
            return id2attribute
        num = {int(k): int(v) for k, v in id2num.items()}
        order = sorted(num)
        top = max(int(a) for a in used)
        for core in sorted(set(num.values())):
            kept = [k for k in order if num[k] >= core]
            if len(kept) >= top and all(num[kept[int(a) - 1]] == n if complete else num[kept[int(a) - 1]] >= n
                                        for a, n in used.items()):
                self.notes["attribute_core"] = core
                return {str(j): id2attribute[str(k)] for j, k in enumerate(kept, 1)}
        raise DataError(path, f"its attribute ids do not match {Path(self.datamaps).name} (no attribute core "
                        "makes the counts of attributeid2num agree)", line=1,
                        hint="Use the datamaps of the same release, or leave datamaps out to keep attribute ids")

    def _texts(self, bad: BadLines, maps: dict) -> dict[str, dict[str, str]]:
        """Raw item id -> {field: text} from the attribute map and the item-text file."""
        texts: dict[str, dict[str, str]] = {}
        if self.attributes:
            for k, names in self._attributes(bad, maps).items():
                texts.setdefault(k, {})["attributes"] = names
        if self.item_text:
            for k, row in item_text_json(self.item_text, bad, offset=1).items():
                texts.setdefault(k, {}).update(row)
        id2item = maps.get("id2item")
        if id2item is None:
            return texts
        unknown = [k for k in texts if k not in id2item]
        if unknown:
            self.notes["item_texts_not_in_datamaps"] = len(unknown)
        return {id2item[k]: row for k, row in texts.items() if k in id2item}


class LCRecJSON:
    """LC-Rec JSON layout: `<name>.inter.json` {user idx: [item idx, ...] in time order} and
    optional `<name>.item.json` {item idx: {title, description, brand, categories}}.
    Raw ids are the indices as strings; item fields are kept as given."""

    def __init__(self, inter, items=None, name: str | None = None):
        self.inter = str(inter)
        self.items = None if items is None else str(items)
        self.name = name or stem(inter)
        self.notes: dict = {}

    def files(self) -> list[Path]:
        return [Path(self.inter)] + ([Path(self.items)] if self.items else [])

    def read(self, bad: BadLines) -> Dataset:
        self.notes = {}
        path = Path(self.inter)
        obj, doc = read_json_document(path)
        obj = json_object(path, doc, obj, "user index -> list of item indices")
        users, items, empty = [], [], 0
        for u, ids in _index_lists(path, doc, obj, bad, "item indices").items():
            if not ids:
                empty += 1
                continue
            users += [u] * len(ids)
            items += ids
        if not users:
            raise no_interactions(path, bad)
        if empty:
            self.notes["users_without_items"] = empty
        item_text = item_text_json(self.items, bad) if self.items else None
        return Dataset.from_raw(self.name, users, items, item_text=item_text)

"""Amazon review data (McAuley lab): 2014, 2018 and 2023 review files, optional metadata."""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .dataset import Dataset
from .errors import BadLines, DataError
from .readers_io import SKIP, identifier, iter_lines, number, parsed_columns, require, stem, text


@dataclass(frozen=True)
class ReviewFormat:
    """Where one release keeps each value of a review line."""
    version: str
    user: str
    item: tuple[str, ...]   # the first of these with a value names the item
    rating: str
    time: str
    per_second: int         # timestamp units per second
    review: str
    summary: str


FORMATS = (
    ReviewFormat("2014/2018", "reviewerID", ("asin",), "overall", "unixReviewTime", 1, "reviewText", "summary"),
    ReviewFormat("2023", "user_id", ("parent_asin", "asin"), "rating", "timestamp", 1000, "text", "title"),
)

# Item id of a metadata line, found without parsing it (JSON or Python literal quoting).
_META_ID = [re.compile(r"""["']%s["']\s*:\s*["']([^"']+)["']""" % k) for k in ("parent_asin", "asin")]


def _json_line(line: str, path, n) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON: {e.msg} (column {e.colno})", line=n, hint=SKIP) from None
    if not isinstance(obj, dict):
        raise DataError(path, f"expected a JSON object, got {type(obj).__name__}", line=n, hint=SKIP)
    return obj


def _detect(obj: dict, path, n) -> ReviewFormat:
    for f in FORMATS:
        if f.user in obj:
            return f
    raise DataError(path, "neither 'reviewerID' (2014/2018 format) nor 'user_id' (2023 format) in this line",
                    line=n, field="reviewerID", hint="Give an Amazon review file; " + SKIP[0].lower() + SKIP[1:])


def _item(obj: dict, fmt: ReviewFormat, path, n) -> str:
    for key in fmt.item:
        if obj.get(key) not in (None, ""):
            return identifier(obj[key], path, n, key)
    return identifier(require(obj, fmt.item[-1], path, n), path, n, fmt.item[-1])


def _meta_object(line: str, path, n) -> dict:
    """2018/2023 metadata lines are JSON; 2014 lines are Python dict literals (single quotes)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        try:
            obj = ast.literal_eval(line)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
            raise DataError(path, f"neither JSON nor a Python dict literal ({type(e).__name__})", line=n,
                            hint=SKIP) from None
    if not isinstance(obj, dict):
        raise DataError(path, f"expected an object, got {type(obj).__name__}", line=n, hint=SKIP)
    return obj


def _categories(value, path, n, field) -> str:
    """2014: list of category paths -> 'a > b; c > d'. 2018/2023: one path -> 'a > b'."""
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(p, list) for p in value):
        return "; ".join(s for s in (text(p, path, n, field, sep=" > ") for p in value) if s)
    return text(value, path, n, field, sep=" > ")


def _meta_texts(obj: dict, path, n) -> dict[str, str]:
    brand = "brand" if obj.get("brand") not in (None, "") else "store"   # 2023 calls it store
    cats = "categories" if "categories" in obj else "category"          # 2018 calls it category
    return {"title": text(obj.get("title"), path, n, "title"),
            "description": text(obj.get("description"), path, n, "description"),
            "brand": text(obj.get(brand), path, n, brand),
            "categories": _categories(obj.get(cats), path, n, cats)}


class AmazonReviews:
    """Amazon review JSON lines (gzip or plain), optionally with a metadata file.

    The release is recognised from the keys of the first good line: 2014/2018 (reviewerID,
    asin, overall, unixReviewTime, reviewText, summary) or 2023 (user_id, parent_asin else
    asin, rating, timestamp in ms, text, title). Interaction texts: `review`, `summary`. Item
    texts from `meta`: `title`, `description`, `brand` (2023: store), `categories`.
    """

    def __init__(self, reviews, meta=None, name: str | None = None):
        self.reviews = str(reviews)
        self.meta = None if meta is None else str(meta)
        self.name = name or stem(reviews)
        self.notes: dict = {}

    def files(self) -> list[Path]:
        return [Path(self.reviews)] + ([Path(self.meta)] if self.meta else [])

    def read(self, bad: BadLines) -> Dataset:
        self.notes = {}
        path = Path(self.reviews)
        fmt = None

        def parse(n, line):
            nonlocal fmt
            obj = _json_line(line, path, n)
            fmt = fmt or _detect(obj, path, n)
            return (identifier(require(obj, fmt.user, path, n), path, n, fmt.user), _item(obj, fmt, path, n),
                    number(require(obj, fmt.rating, path, n), path, n, fmt.rating),
                    int(number(require(obj, fmt.time, path, n), path, n, fmt.time)) // fmt.per_second,
                    text(obj.get(fmt.review), path, n, fmt.review), text(obj.get(fmt.summary), path, n, fmt.summary))
        users, items, ratings, times, reviews, summaries = parsed_columns(path, iter_lines(path, bad), parse, bad)
        self.notes["format"] = fmt.version
        item_text = self._meta(Path(self.meta), bad, set(items)) if self.meta else None
        return Dataset.from_raw(self.name, users, items, rating=ratings, timestamp=times, item_text=item_text,
                                interaction_text={"review": reviews, "summary": summaries})

    def _meta(self, path: Path, bad: BadLines, reviewed: set[str]) -> dict:
        """asin -> item texts, for the reviewed items only (other lines are not even parsed)."""
        out, others = {}, 0
        for n, line in iter_lines(path, bad):
            found = next((m for m in (p.search(line) for p in _META_ID) if m), None)
            if found and found.group(1) not in reviewed:
                others += 1
                continue
            try:
                obj = _meta_object(line, path, n)
                key = "parent_asin" if obj.get("parent_asin") not in (None, "") else "asin"
                i = identifier(require(obj, key, path, n), path, n, key)
                texts = _meta_texts(obj, path, n)
            except DataError as e:
                bad(e)
                continue
            if i in reviewed:
                out[i] = texts
            else:
                others += 1
        self.notes["meta_items_without_reviews"] = others
        self.notes["reviewed_items_without_meta"] = len(reviewed - out.keys())
        return out

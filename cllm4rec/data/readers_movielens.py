"""Table readers: RecBole atomic files (TSV with typed header), GroupLens MovieLens CSVs, and any
delimited file of interactions with its columns named in the config (`data=csv`)."""
from __future__ import annotations

import csv
import datetime as _dt
from collections import defaultdict
from pathlib import Path

from .dataset import Dataset
from .errors import BadLines, DataError
from .readers_io import SKIP, check_file, identifier, iter_lines, number, parsed_columns, stem


def _header(path, first, names: list[str], required: tuple[str, ...], example: str) -> dict[str, int]:
    """Column name -> position; the header must be line 1 and hold every required column."""
    if first is None or first[0] != 1:
        raise DataError(path, "the header line could not be read", line=1,
                        hint=f"The first line must name the columns, e.g. {example}")
    for r in required:
        if r not in names:
            raise DataError(path, f"the header has no {r!r} column (it has {names})", line=1, field=r,
                            hint=f"The first line must name the columns, e.g. {example}")
    return {n: j for j, n in enumerate(names)}


def _rows(path, bad, lines, names):
    """(line, values) of each row with exactly one value per column; others go to `bad`."""
    for n, values in lines:
        if len(values) != len(names):
            missing = names[len(values)] if len(values) < len(names) else None
            bad(DataError(path, f"{len(values)} values, the header names {len(names)} columns", line=n,
                          field=missing, hint=SKIP))
            continue
        yield n, values


# ---------------------------------------------------------------------- RecBole atomic files
def atomic_table(path, bad: BadLines, required: tuple[str, ...]):
    """Read a RecBole atomic file: tab-separated, header `name:type` (token, token_seq, float,
    float_seq). Returns (names, types, rows), rows yielding (line, values) lazily."""
    lines = ((n, t.split("\t")) for n, t in iter_lines(path, bad))
    first = next(lines, None)
    cols = [c.partition(":") for c in (first[1] if first else [])]
    names = [c[0].strip() for c in cols]
    types = [c[2].strip() or "token" for c in cols]
    _header(path, first, names, required, "user_id:token<TAB>item_id:token<TAB>rating:float")
    return names, types, _rows(path, bad, lines, names)


class RecBoleAtomic:
    """RecBole atomic files `<dataset>.inter` (+ optional `.item`, `.user`) in one folder.

    Ratings come from `rating`, timestamps from `timestamp` (float seconds -> int64); other
    token/token_seq columns of `.inter` become interaction texts. Item texts: movie_title ->
    title, release_year -> year, class -> genres (', '-joined); other token/token_seq columns
    keep their names. User texts: every other `.user` column.
    """
    ITEM_FIELDS = {"movie_title": "title", "release_year": "year", "class": "genres"}

    def __init__(self, path, dataset: str | None = None, name: str | None = None):
        self.path = str(path)
        self.dataset = dataset
        found = self._inter_files() if dataset is None else []
        self.name = name or dataset or (found[0].stem if len(found) == 1 else Path(path).name)
        self.notes: dict = {}

    def _inter_files(self) -> list[Path]:
        folder = Path(self.path)
        return sorted(folder.glob("*.inter")) if folder.is_dir() else []

    def _stem(self) -> str:
        if self.dataset:
            return self.dataset
        folder = Path(self.path)
        if not folder.is_dir():
            raise DataError(folder, "folder not found", hint="Give the folder holding <dataset>.inter")
        found = self._inter_files()
        if len(found) != 1:
            raise DataError(folder, f"expected one .inter file, found {[f.name for f in found]}",
                            hint="Name the one to read with dataset=<name> (reads <name>.inter)")
        return found[0].stem

    def files(self) -> list[Path]:
        folder, stem = Path(self.path), self._stem()
        optional = [folder / f"{stem}.{ext}" for ext in ("item", "user")]
        return [folder / f"{stem}.inter"] + [f for f in optional if f.exists()]

    def read(self, bad: BadLines) -> Dataset:
        self.notes = {}
        folder, stem = Path(self.path), self._stem()
        inter = check_file(folder / f"{stem}.inter")
        names, types, rows = atomic_table(inter, bad, ("user_id", "item_id"))
        col = {n: j for j, n in enumerate(names)}
        extra = [n for n, t in zip(names, types)
                 if t in ("token", "token_seq") and n not in ("user_id", "item_id", "rating", "timestamp")]
        users, items, ratings, times, *text_columns = interaction_rows(
            inter, rows, col, bad, "user_id", "item_id", "rating" if "rating" in col else None,
            "timestamp" if "timestamp" in col else None, extra=extra)
        texts = dict(zip(extra, text_columns))
        item_text = self._side(folder / f"{stem}.item", bad, "item_id", set(items), item=True)
        user_text = self._side(folder / f"{stem}.user", bad, "user_id", set(users), item=False)
        return Dataset.from_raw(self.name, users, items,
                                rating=ratings if "rating" in col else None,
                                timestamp=times if "timestamp" in col else None,
                                item_text=item_text, user_text=user_text, interaction_text=texts)

    def _side(self, path: Path, bad, key: str, used: set, item: bool) -> dict:
        """raw id -> {field: text} from an optional .item / .user file."""
        if not path.exists():
            return {}
        names, types, rows = atomic_table(path, bad, (key,))
        keep = [(j, self.ITEM_FIELDS.get(n, n) if item else n) for j, (n, t) in enumerate(zip(names, types))
                if n != key and (not item or t in ("token", "token_seq"))]
        j_key = names.index(key)
        out, unused = {}, 0
        for n, v in rows:
            try:
                raw = identifier(v[j_key], path, n, key)
            except DataError as e:
                bad(e)
                continue
            unused += raw not in used
            row = {f: v[j].strip() for j, f in keep}
            if "genres" in row and item:  # RecBole's token_seq of genres: 'Animation Children's Comedy'
                row["genres"] = ", ".join(row["genres"].split())
            out[raw] = row
        if unused:
            self.notes[f"{path.suffix[1:]}_rows_without_interactions"] = unused
        return out


# ---------------------------------------------------------------------- GroupLens CSV
def csv_table(path, bad: BadLines, required: tuple[str, ...], delimiter: str = ","):
    """Read a delimited file with a header (quotes handled by the csv module).
    Returns (column -> position, rows) with rows yielding (line, values) lazily."""
    at = [0]  # line number of the last line the csv module has consumed

    def lines():
        for n, t in iter_lines(path, bad):
            at[0] = n
            yield t

    reader = csv.reader(lines(), delimiter=delimiter)

    def records():
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                bad(DataError(path, f"not readable as CSV ({e})", line=at[0], hint=SKIP))
                continue
            yield at[0], values

    recs = records()
    first = next(recs, None)
    names = [c.strip() for c in first[1]] if first else []
    col = _header(path, first, names, required, delimiter.join(required))
    return col, _rows(path, bad, recs, names)


def _seconds(value, path, line, field) -> int:
    return int(number(value, path, line, field))


def interaction_rows(path, rows, col, bad, user: str, item: str, rating: str | None = None,
                     timestamp: str | None = None, time=_seconds, extra: tuple[str, ...] | list[str] = ()):
    """(users, items, ratings, times, *one column per `extra` text field) from a table's (line, values)
    rows; a bad row goes to `bad`; ratings / times are None per row where their column is not given.
    No row left: DataError."""
    def parse(n, v):
        return (identifier(v[col[user]], path, n, user), identifier(v[col[item]], path, n, item),
                number(v[col[rating]], path, n, rating) if rating else None,
                time(v[col[timestamp]], path, n, timestamp) if timestamp else None,
                *(v[col[f]].strip() for f in extra))
    return parsed_columns(path, rows, parse, bad)


class MovieLensCSV:
    """A GroupLens MovieLens CSV folder (ml-latest-small, ml-25m, ...): ratings.csv,
    movies.csv, optional tags.csv.

    Item texts: `title`, `genres` ('|' -> ', '; '(no genres listed)' -> ''). Tags become the
    interaction text `tags` ('; '-joined in file order) of the matching (user, movie) rating
    rows; tags of pairs without a rating are dropped and counted in notes.
    """

    def __init__(self, path, name: str | None = None):
        self.path = str(path)
        self.name = name or Path(path).name
        self.notes: dict = {}

    def files(self) -> list[Path]:
        folder = Path(self.path)
        tags = folder / "tags.csv"
        return [folder / "ratings.csv", folder / "movies.csv"] + ([tags] if tags.exists() else [])

    def read(self, bad: BadLines) -> Dataset:
        self.notes = {}
        folder = Path(self.path)
        ratings_csv = folder / "ratings.csv"
        col, rows = csv_table(ratings_csv, bad, ("userId", "movieId", "rating", "timestamp"))
        users, items, ratings, times = interaction_rows(ratings_csv, rows, col, bad, "userId", "movieId",
                                                        "rating", "timestamp")
        interaction_text = {}
        if (folder / "tags.csv").exists():
            tags = self._tags(folder / "tags.csv", bad)
            rated = set(zip(users, items))
            self.notes["tags_without_rating"] = sum(len(v) for k, v in tags.items() if k not in rated)
            interaction_text["tags"] = ["; ".join(tags.get(p, ())) for p in zip(users, items)]
        return Dataset.from_raw(self.name, users, items, rating=ratings, timestamp=times,
                                item_text=self._movies(folder / "movies.csv", bad), interaction_text=interaction_text)

    def _movies(self, path: Path, bad) -> dict:
        col, rows = csv_table(check_file(path), bad, ("movieId", "title", "genres"))
        out = {}
        for n, v in rows:
            try:
                i = identifier(v[col["movieId"]], path, n, "movieId")
            except DataError as e:
                bad(e)
                continue
            genres = v[col["genres"]].strip()
            genres = "" if genres == "(no genres listed)" else ", ".join(g.strip() for g in genres.split("|"))
            out[i] = {"title": v[col["title"]].strip(), "genres": genres}
        return out

    def _tags(self, path: Path, bad) -> dict[tuple[str, str], list[str]]:
        col, rows = csv_table(path, bad, ("userId", "movieId", "tag"))
        tags = defaultdict(list)
        for n, v in rows:
            try:
                pair = (identifier(v[col["userId"]], path, n, "userId"),
                        identifier(v[col["movieId"]], path, n, "movieId"))
            except DataError as e:
                bad(e)
                continue
            if v[col["tag"]].strip():
                tags[pair].append(v[col["tag"]].strip())
        return tags


# ---------------------------------------------------------------------- your own CSV
DELIMITERS = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}


def _time(value: str, path, line, field) -> int:
    """Seconds since the epoch: a number, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    try:
        return _seconds(value, path, line, field)
    except DataError:
        try:
            t = _dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise DataError(path, f"{value!r} is neither seconds since 1970 nor an ISO 8601 date", line=line,
                            field=field, hint=SKIP) from None
        return int((t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)).timestamp())


class CSVInteractions:
    """Interactions from any delimited text file with a header line: one row per interaction,
    the user and item columns named by `user` / `item`, optional `rating` (a number) and
    `timestamp` (seconds or an ISO 8601 date) columns; other columns are ignored. `delimiter`:
    one character, or tab / comma / semicolon / pipe / space. Rows keep the file's order where
    there is no timestamp (the order leave-one-out then takes as time).

    `item_text`: an optional second file (same delimiter) with an `item_text_id` column (default:
    the `item` column's name) and the item's texts in `item_text_fields` (default: every other
    column), e.g. title, description, categories.
    """

    def __init__(self, path, user: str = "user", item: str = "item", rating: str | None = None,
                 timestamp: str | None = None, delimiter: str = ",", item_text=None,
                 item_text_id: str | None = None, item_text_fields=None, name: str | None = None):
        self.path = str(path)
        self.user, self.item, self.rating, self.timestamp = user, item, rating, timestamp
        self.delimiter = DELIMITERS.get(delimiter, delimiter)
        if len(self.delimiter) != 1:
            raise DataError(path, f"delimiter {delimiter!r} is not one character", field="delimiter",
                            hint=f"Give one character or one of {sorted(DELIMITERS)} (data.source.delimiter)")
        self.item_text = None if item_text is None else str(item_text)
        self.item_text_id = item_text_id or item
        self.item_text_fields = None if item_text_fields is None else [str(f) for f in item_text_fields]
        self.name = name or stem(path)
        self.notes: dict = {}

    def files(self) -> list[Path]:
        return [Path(self.path)] + ([Path(self.item_text)] if self.item_text else [])

    def read(self, bad: BadLines) -> Dataset:
        self.notes = {}
        path = check_file(self.path)
        optional = [c for c in (self.rating, self.timestamp) if c]
        col, rows = csv_table(path, bad, (self.user, self.item, *optional), self.delimiter)
        users, items, ratings, times = interaction_rows(path, rows, col, bad, self.user, self.item, self.rating,
                                                        self.timestamp, time=_time)
        return Dataset.from_raw(self.name, users, items, rating=ratings if self.rating else None,
                                timestamp=times if self.timestamp else None,
                                item_text=self._texts(set(items), bad) if self.item_text else None)

    def _texts(self, used: set, bad) -> dict:
        path = check_file(self.item_text)
        col, rows = csv_table(path, bad, (self.item_text_id, *(self.item_text_fields or ())), self.delimiter)
        fields = self.item_text_fields or [c for c in col if c != self.item_text_id]
        out, unused = {}, 0
        for n, v in rows:
            try:
                i = identifier(v[col[self.item_text_id]], path, n, self.item_text_id)
            except DataError as e:
                bad(e)
                continue
            unused += i not in used
            out[i] = {f: v[col[f]].strip() for f in fields}
        if unused:
            self.notes["item_text_rows_without_interactions"] = unused
        return out

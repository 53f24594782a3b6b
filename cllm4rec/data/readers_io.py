"""Shared plumbing of the raw-file readers: lines, JSON documents, values, error places.

Every reader goes through `iter_lines` (line files: TSV, CSV, JSON lines, sequence files) or
`read_json_document` (one JSON value per file), so all readers treat gzip, undecodable bytes,
empty and missing files the same way. Gzip is recognised by its magic bytes, not the name.
"""
from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from pathlib import Path

from .errors import BadLines, DataError

GZIP_MAGIC = b"\x1f\x8b"
SKIP = "Fix or delete that line, or run with strict=false to skip bad lines and count them"
REFETCH = "The file is probably an incomplete or damaged download: fetch it again"
WHOLE = "The file is one JSON document, so no part of it can be skipped: fix it there or fetch it again"


def stem(path) -> str:
    """File name without any suffix: All_Beauty_5.json.gz -> All_Beauty_5."""
    return Path(path).name.split(".")[0]


def check_file(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found", hint="Check the path given to the reader "
                        "(data.source.* in the data config)")
    if not path.is_file():
        raise DataError(path, "is not a file", hint="Give the path of the file itself")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty", hint=REFETCH)
    return path


def open_binary(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == GZIP_MAGIC else open(path, "rb")


def iter_lines(path, bad: BadLines):
    """Yield (1-based line number, text without line end) for every non-blank line.

    A line that is not UTF-8 goes to `bad`. A gzip stream that breaks off (truncated
    download) or is corrupt goes to `bad` once, as the line after the last complete one;
    the complete lines before the break have been yielded. A file without any line raises.
    """
    path = check_file(path)
    n, seen = 0, False
    with open_binary(path) as f:
        try:
            for n, raw in enumerate(f, 1):
                seen = True
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    bad(DataError(path, f"bytes {raw[e.start:e.start + 4]!r} at column {e.start + 1} are not "
                                  "UTF-8", line=n, hint="Re-save the file as UTF-8, or run with strict=false to skip "
                                  "such lines and count them"))
                    continue
                if n == 1:
                    text = text.lstrip("\ufeff")
                text = text.rstrip("\r\n")
                if text.strip():
                    yield n, text
        except (EOFError, OSError, zlib.error) as e:  # gzip cut off or damaged
            seen = True
            where = f"after line {n}" if n else "before the first line"
            bad(DataError(path, f"the compressed data is cut off or corrupt {where} ({e})", line=n + 1,
                          hint=REFETCH + " (strict=false keeps the lines before the break)"))
    if not seen:
        raise DataError(path, "file has no lines", hint=REFETCH)


def read_json_document(path) -> tuple[object, str]:
    """Parse a file holding one JSON value; returns (value, its text) — the text locates
    errors found later (see `line_of`). Any fault raises: a document cannot be read in part."""
    path = check_file(path)
    with open_binary(path) as f:
        try:
            raw = f.read()
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(path, f"the compressed data is cut off or corrupt ({e})", hint=REFETCH) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, f"bytes {raw[e.start:e.start + 4]!r} are not UTF-8",
                        line=raw.count(b"\n", 0, e.start) + 1, hint="Re-save the file as UTF-8. " + WHOLE) from None
    if not text.strip():
        raise DataError(path, "file is empty", hint=REFETCH)
    try:
        return json.loads(text), text
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON: {e.msg} (column {e.colno})", line=e.lineno, hint=WHOLE) from None


def line_of(text: str, *keys: str) -> int | None:
    """1-based line of the nested key path `keys` in a JSON text (first match of each key
    after the previous one). Used only to place an error, so a plain search is enough."""
    pos, start = 0, None
    for key in keys:
        m = re.compile(re.escape(json.dumps(str(key))) + r"\s*:").search(text, pos)
        if m is None:
            return None
        start, pos = m.start(), m.end()
    return None if start is None else text.count("\n", 0, start) + 1


def pointer(*keys) -> str:
    """JSON-pointer name of a place in a document: ('5', 'title') -> '/5/title'."""
    return "/" + "/".join(str(k) for k in keys)


def json_object(path, text: str, value, what: str) -> dict:
    if not isinstance(value, dict):
        raise DataError(path, f"expected a JSON object ({what}), got {type(value).__name__}", line=1,
                        hint="Check that this is the right file for this option")
    return value


# ---------------------------------------------------------------------- field values
NUMBER_LIMIT = 1e18   # ratings become float32 and timestamps int64: beyond this they would overflow


def number(value, path, line, field) -> float:
    """A finite number of magnitude below NUMBER_LIMIT: a JSON number or a numeric string ('4.0' in
    TSV/CSV)."""
    if isinstance(value, bool):
        x = None
    elif isinstance(value, (int, float)):
        x = float(value)
    else:
        try:
            x = float(value)
        except (TypeError, ValueError):
            x = None
    if x is None or not math.isfinite(x):
        raise DataError(path, f"{value!r} is not a number", line=line, field=field, hint=SKIP)
    if abs(x) >= NUMBER_LIMIT:
        raise DataError(path, f"{value!r} is out of range (a rating or timestamp has magnitude below "
                        f"{NUMBER_LIMIT:g})", line=line, field=field, hint=SKIP)
    return x


def identifier(value, path, line, field) -> str:
    """A non-empty id: a string, or an integer (written as its decimal digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    if value is None or value == "":
        raise DataError(path, "missing value", line=line, field=field, hint=SKIP)
    raise DataError(path, f"expected an id (string), got {type(value).__name__} {value!r}"[:200], line=line,
                    field=field, hint=SKIP)


def text(value, path, line, field, sep: str = " ") -> str:
    """Free text: a string, a number, or a list of them joined with `sep`; None -> ''."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        return sep.join(s for s in (str(v).strip() for v in value) if s)
    raise DataError(path, f"expected text, got {type(value).__name__}", line=line, field=field, hint=SKIP)


def require(obj: dict, key: str, path, line):
    if key not in obj:
        raise DataError(path, f"missing required field (the line has {', '.join(sorted(obj))[:200]})", line=line,
                        field=key, hint=SKIP)
    return obj[key]


def no_interactions(path, bad: BadLines) -> DataError:
    skipped = f" ({bad.count} bad lines skipped)" if bad.count else ""
    return DataError(path, f"no interactions could be read{skipped}",
                     hint="Check that this is the right file; with strict=true the first bad line is named")


def parsed_columns(path, rows, parse, bad: BadLines) -> list[list]:
    """The columns of what `parse(line, row)` returns (a tuple of fields) for each (line, row) of
    `rows`; a row it rejects with a DataError goes to `bad` and is skipped. No row left: DataError."""
    columns = None
    for n, row in rows:
        try:
            fields = parse(n, row)
        except DataError as e:
            bad(e)
            continue
        if columns is None:
            columns = [[] for _ in fields]
        for column, value in zip(columns, fields):
            column.append(value)
    if columns is None:
        raise no_interactions(path, bad)
    return columns

"""Seeded fuzzing of every reader: random corruptions of small real files (byte flips, cut files
and lines, wrong types, huge and negative numbers, duplicated headers, blank lines, Latin-1 bytes,
damaged gzip streams). Each outcome must be a clean dataset or a DataError that names the file
and the line (no line only for a file cut to nothing); anything else is a reader bug. The cases tried, and
how each ended, are printed and counted."""
import collections
import gzip
import random
import re
from pathlib import Path

import numpy as np
import pytest

from cllm4rec.data import BadLines, DataError, Dataset
from cllm4rec.data.readers import CSVInteractions
from test_bad_input import amazon, lcrec, movielens, recbole, s3rec


def own_csv(tmp, d):
    """data=csv: 50 real ML-100K ratings as a CSV with a timestamp column, and item texts."""
    lines = (d / "movielens_100k" / "ml-100k.inter").read_text().splitlines()[1:51]
    (tmp / "r.csv").write_text("u,i,r,t\n" + "".join(",".join(x.split("\t")) + "\n" for x in lines))
    items = (d / "movielens_100k" / "ml-100k.item").read_text().splitlines()[1:200]
    (tmp / "items.csv").write_text("i,title\n" + "".join(f'{x.split(chr(9))[0]},"{x.split(chr(9))[1]}"\n' for x in items))
    return CSVInteractions(tmp / "r.csv", user="u", item="i", rating="r", timestamp="t", item_text=tmp / "items.csv")


READERS = {
    "recbole": lambda tmp, d: recbole(tmp, d)[0],
    "movielens": lambda tmp, d: movielens(tmp, d)[0],
    "amazon": lambda tmp, d: amazon(tmp, d)[0],
    "s3rec": lambda tmp, d: s3rec(tmp, d)[0],
    "lcrec": lambda tmp, d: lcrec(tmp, d)[0],
    "csv": own_csv,
}
CASES_PER_READER = 100


def _lines(raw: bytes) -> list[bytes]:
    return raw.splitlines(keepends=True) or [b""]


def _number(rng: random.Random, raw: bytes, value: bytes) -> bytes:
    runs = [m.span() for m in re.finditer(rb"\d+", raw)]
    if not runs:
        return raw
    a, b = rng.choice(runs)
    return raw[:a] + value + raw[b:]


MUTATIONS = {
    "byte flip": lambda rng, raw: (lambda i: raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1:])(rng.randrange(max(len(raw), 1))),
    "cut file": lambda rng, raw: raw[:rng.randrange(max(len(raw), 1))],
    "cut lines": lambda rng, raw: b"".join(_lines(raw)[:rng.randrange(len(_lines(raw)) + 1)]),
    "duplicated header": lambda rng, raw: (lambda ls: b"".join(ls[:1] + ls[:rng.randrange(1, len(ls) + 1)][-1:] + ls[1:]))(_lines(raw)),
    "word for a number": lambda rng, raw: _number(rng, raw, b"abc"),
    "huge number": lambda rng, raw: _number(rng, raw, b"9" * 40),
    "negative number": lambda rng, raw: _number(rng, raw, b"-7"),
    "float for an id": lambda rng, raw: _number(rng, raw, b"3.5e300"),
    "blank line": lambda rng, raw: (lambda ls, i: b"".join(ls[:i] + [b"\n"] + ls[i:]))(_lines(raw), rng.randrange(len(_lines(raw)) + 1)),
    "latin-1 text": lambda rng, raw: (lambda i: raw[:i] + "\u00e9t\u00e9".encode("latin-1") + raw[i:])(rng.randrange(len(raw) + 1)),
}


def corrupt(path: Path, rng: random.Random) -> str:
    """Damage one file in place; returns what was done."""
    raw = path.read_bytes()
    gz = raw[:2] == b"\x1f\x8b"
    if gz and rng.random() < 0.25:         # the compressed stream itself
        kind = rng.choice(["byte flip", "cut file"])
        path.write_bytes(MUTATIONS[kind](rng, raw))
        return f"gzip stream: {kind}"
    kind = rng.choice(sorted(MUTATIONS))
    text = MUTATIONS[kind](rng, gzip.decompress(raw) if gz else raw)
    path.write_bytes(gzip.compress(text) if gz else text)
    return kind


def check_dataset(ds: Dataset) -> None:
    """A clean dataset: consistent columns, indices in range, one text per row."""
    n = ds.n_interactions
    assert len(ds.user) == len(ds.item) == n
    assert n == 0 or (0 <= ds.user.min() and ds.user.max() < ds.n_users and 0 <= ds.item.min()
                      and ds.item.max() < ds.n_items)
    assert ds.rating is None or (len(ds.rating) == n and np.isfinite(ds.rating).all())
    for table, rows in ((ds.item_text, ds.n_items), (ds.user_text, ds.n_users), (ds.interaction_text, n)):
        assert all(len(v) == rows and all(isinstance(s, str) for s in v) for v in table.values())


@pytest.mark.parametrize("reader", sorted(READERS))
def test_random_corruptions_give_a_dataset_or_a_located_error(reader, tmp_path, shared_data, capsys):
    rng = random.Random(f"fuzz-{reader}")
    outcomes = collections.Counter()
    for case in range(CASES_PER_READER):
        folder = tmp_path / f"case{case}"
        folder.mkdir()
        source = READERS[reader](folder, shared_data)
        ours = [Path(f) for f in source.files() if str(f).startswith(str(folder))]   # not the shared originals
        target = rng.choice(ours)
        what = f"{reader} case {case}: {corrupt(target, rng)} in {target.name}"
        try:
            ds = source.read(BadLines())
        except DataError as e:
            assert Path(e.file) in [Path(f) for f in source.files()] or Path(e.file) == Path(source.path), (what, str(e))
            assert str(e).startswith(e.file) and e.hint, (what, str(e))
            outcomes["error with a line" if e.line is not None else "error naming the file"] += 1
            # no line only where there is none to name: the file was cut to nothing
            assert e.line is not None or "file is empty" in str(e), (what, str(e))
        except Exception as e:      # noqa: BLE001 -- what the test is for: any other exception is a bug
            pytest.fail(f"{what}: {type(e).__name__}: {e}")
        else:
            check_dataset(ds)
            outcomes["clean dataset"] += 1
    print(f"{reader}: {CASES_PER_READER} cases tried: {dict(outcomes)}")
    assert sum(outcomes.values()) == CASES_PER_READER

"""RecBole atomic export: round trips, raw ids, header format, atomic writes, clear errors."""
import csv
import os
from collections import Counter

import numpy as np
import pytest

from cllm4rec.data import Dataset, split_leave_one_out, split_random
from cllm4rec.data import export as E
from cllm4rec.data.splits import split_counts
from test_baselines import read_ml100k


def read_atomic(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[0], rows[1:]


def synthetic(seed=0, rating=True, timestamp=True):
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(30):
        its = rng.choice(25, size=int(rng.integers(1, 9)), replace=False)
        users += [f"user-{u}"] * len(its)
        items += [f"item {i}" if i % 5 else f"{i:04d}" for i in its]   # spaces, leading zeros
    n = len(users)
    return Dataset.from_raw(
        "syn", users, items,
        rating=rng.choice([1.0, 2.5, 4.5, 5.0, 0.1], n) if rating else None,
        timestamp=rng.integers(0, 2_000_000_000, n) if timestamp else None,
        item_text={it: {"title": f"T\t{it}\nline2", "brand": "B"} for it in set(items)},
        user_text={u: {"age": "3"} for u in set(users)})


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("rating,timestamp", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("protocol", [split_random, split_leave_one_out])
def test_round_trip(tmp_path, seed, rating, timestamp, protocol):
    ds = protocol(synthetic(seed, rating, timestamp))
    paths = E.export_recbole(ds, tmp_path / "out", "syn")
    assert [p.name for p in paths] == ["syn.train.inter", "syn.valid.inter", "syn.test.inter", "syn.item", "syn.user"]
    want_header = ["user_id:token", "item_id:token"] + (["rating:float"] if rating else []) + \
        (["timestamp:float"] if timestamp else [])
    counts = split_counts(ds)
    for part, path in zip(("train", "valid", "test"), paths):
        header, rows = read_atomic(path)
        assert header == want_header
        assert len(rows) == counts[part]
        keep = ds.mask(part)
        want = [[ds.user_ids[u], ds.item_ids[i]] for u, i in zip(ds.user[keep], ds.item[keep])]
        got = [r[:2] for r in rows]
        assert got == want                                         # raw ids, canonical order
        if rating:
            np.testing.assert_array_equal(np.float32([r[2] for r in rows]), ds.rating[keep])
        if timestamp:
            np.testing.assert_array_equal(np.int64([r[-1] for r in rows]), ds.timestamp[keep])
    header, rows = read_atomic(paths[3])
    assert header == ["item_id:token", "brand:token_seq", "title:token_seq"]
    assert [r[0] for r in rows] == ds.item_ids
    assert all(r[2] == f"T {r[0]} line2" for r in rows)          # tab and newline became spaces
    assert not list((tmp_path / "out").glob(".*"))                # no temporary files left


def test_ml100k_export_reproduces_the_source_lines(tmp_path, shared_data):
    src = shared_data / "movielens_100k" / "ml-100k.inter"
    ds = split_random(read_ml100k(src.parent), seed=0)
    paths = E.export_recbole(ds, tmp_path, "ml-100k")
    assert [p.name for p in paths[:3]] == ["ml-100k.train.inter", "ml-100k.valid.inter", "ml-100k.test.inter"]
    lines = [p.read_text(encoding="utf-8").splitlines() for p in paths[:3]]
    source = src.read_text(encoding="utf-8").splitlines()
    assert all(part[0] == source[0] for part in lines)            # the very same header
    assert [len(part) - 1 for part in lines] == [80_808, 9_596, 9_596] == list(split_counts(ds).values())
    # every source line lands in exactly one part, byte for byte (ids, ratings, timestamps)
    assert Counter(line for part in lines for line in part[1:]) == Counter(source[1:])


def test_unsplit_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="has no split.*split it first"):
        E.export_recbole(synthetic(), tmp_path, "syn")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_bad_name(tmp_path, name):
    with pytest.raises(ValueError, match="plain file-name stem"):
        E.export_recbole(split_random(synthetic()), tmp_path, name)


def test_id_with_tab_is_refused_before_writing(tmp_path):
    ds = split_random(Dataset.from_raw("t", ["a\tb", "c", "c"], ["x", "y", "z"]))
    with pytest.raises(ValueError, match="tab or line break"):
        E.export_recbole(ds, tmp_path, "t")
    assert not any(tmp_path.iterdir())


def test_failed_write_leaves_no_files(tmp_path, monkeypatch):
    ds = split_random(synthetic())
    real_fdopen, calls = os.fdopen, []

    def failing_fdopen(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_fdopen(*args, **kwargs)

    monkeypatch.setattr(E.os, "fdopen", failing_fdopen)
    (tmp_path / "syn.train.inter").write_text("old\n")            # an older export stays intact
    with pytest.raises(OSError, match="disk full"):
        E.export_recbole(ds, tmp_path, "syn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn.train.inter"]
    assert (tmp_path / "syn.train.inter").read_text() == "old\n"

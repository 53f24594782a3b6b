"""The Dataset container, preprocessing and split protocols, on synthetic and real data."""
import numpy as np
import pytest

from cllm4rec.data import (TEST, TRAIN, VALID, Dataset, deduplicate, kcore, keep_ratings_above, preprocess,
                           split_leave_one_out, split_random)


def random_dataset(seed=0, n_users=50, n_items=40, max_len=12, repeats=False, with_time=True):
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        n = int(rng.integers(1, max_len + 1))
        its = rng.choice(n_items, size=n, replace=repeats)
        users += [f"u{u}"] * n
        items += [f"i{i}" for i in its]
        times += list(rng.integers(0, 10_000, size=n))
    ratings = rng.integers(1, 6, size=len(users))
    return Dataset.from_raw("synthetic", users, items, rating=ratings,
                            timestamp=times if with_time else None,
                            item_text={f"i{i}": {"title": f"title {i}"} for i in range(n_items)},
                            user_text={f"u{u}": {"age": str(20 + u)} for u in range(n_users)},
                            interaction_text={"review": [f"r{j}" for j in range(len(users))]})


def test_from_raw_is_canonical_and_keeps_texts():
    ds = Dataset.from_raw("t", ["b", "a", "b", "a"], ["x", "y", "z", "x"], timestamp=[5, 3, 1, 2],
                          item_text={"x": {"title": "X"}, "z": {"title": "Z"}, "unused": {"title": "?"}},
                          interaction_text={"review": ["bx", "ay", "bz", "ax"]})
    assert ds.user_ids == ["b", "a"] and ds.item_ids == ["x", "y", "z"]
    # grouped by user index, then time
    assert [(ds.user_ids[u], ds.item_ids[i]) for u, i in zip(ds.user, ds.item)] == \
        [("b", "z"), ("b", "x"), ("a", "x"), ("a", "y")]
    assert ds.interaction_text["review"] == ["bz", "bx", "ax", "ay"]
    assert ds.item_text["title"] == ["X", "", "Z"]
    assert list(ds.indptr) == [0, 2, 4]


def test_save_load_round_trip(tmp_path):
    ds = split_random(random_dataset(), seed=3)
    ds.save(tmp_path / "d")
    back = Dataset.load(tmp_path / "d")
    assert back.user_ids == ds.user_ids and back.item_ids == ds.item_ids
    for key in ("user", "item", "rating", "timestamp", "split"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ds, key))
    assert back.item_text == ds.item_text and back.user_text == ds.user_text
    assert back.interaction_text == ds.interaction_text


def test_select_renumbers_compactly():
    ds = random_dataset()
    keep = ds.user % 2 == 0
    sub = ds.select(keep)
    assert sub.n_users == len(np.unique(ds.user[keep]))
    assert sub.user.max() == sub.n_users - 1 and sub.item.max() == sub.n_items - 1
    # raw pairs are preserved
    before = {(ds.user_ids[u], ds.item_ids[i]) for u, i in zip(ds.user[keep], ds.item[keep])}
    after = {(sub.user_ids[u], sub.item_ids[i]) for u, i in zip(sub.user, sub.item)}
    assert before == after
    assert sub.item_text["title"] == [f"title {raw[1:]}" for raw in sub.item_ids]


@pytest.mark.parametrize("how", ["first", "last"])
def test_deduplicate(how):
    ds = random_dataset(repeats=True, max_len=30, n_items=10)
    out = deduplicate(ds, how)
    pairs = list(zip(out.user, out.item))
    assert len(pairs) == len(set(pairs)) == len({(u, i) for u, i in zip(ds.user, ds.item)})
    # the kept occurrence carries the first/last timestamp of its pair
    for u, i, t in zip(out.user, out.item, out.timestamp):
        ru, ri = out.user_ids[u], out.item_ids[i]
        ts = [tt for uu, ii, tt in zip(ds.user, ds.item, ds.timestamp)
              if ds.user_ids[uu] == ru and ds.item_ids[ii] == ri]
        assert t == (min(ts) if how == "first" else max(ts))


@pytest.mark.parametrize("core", [2, 3, 5])
def test_kcore_matches_brute_force(core):
    ds = random_dataset(seed=core, n_users=80, n_items=60, max_len=8)
    out = kcore(ds, core, core)
    # brute force on raw pairs
    pairs = {(ds.user_ids[u], ds.item_ids[i]) for u, i in zip(ds.user, ds.item)}
    while True:
        uc, ic = {}, {}
        for u, i in pairs:
            uc[u] = uc.get(u, 0) + 1
            ic[i] = ic.get(i, 0) + 1
        nxt = {(u, i) for u, i in pairs if uc[u] >= core and ic[i] >= core}
        if nxt == pairs:
            break
        pairs = nxt
    assert {(out.user_ids[u], out.item_ids[i]) for u, i in zip(out.user, out.item)} == pairs


def test_rating_threshold_and_steps():
    ds = random_dataset()
    kept = keep_ratings_above(ds, 3)
    assert kept.rating.min() > 3 and kept.n_interactions == int((ds.rating > 3).sum())
    out, steps = preprocess(ds, keep_ratings_above=3, dedup="first", user_core=2, item_core=2)
    assert [s["step"] for s in steps][0] == "read" and steps[-1]["interactions"] == out.n_interactions
    with pytest.raises(ValueError, match="no ratings"):
        keep_ratings_above(Dataset.from_raw("x", ["a"], ["b"]), 3)


def _check_random_split(ds):
    sizes = np.bincount(ds.user, minlength=ds.n_users)
    for u in range(ds.n_users):
        s = ds.split[ds.user == u]
        n = sizes[u]
        if n >= 3:
            assert (s == VALID).sum() >= 1 and (s == TEST).sum() >= 1 and (s == TRAIN).sum() >= 1
            assert (s == TEST).sum() == max(1, int(np.floor(n * 0.1)))
        elif n == 2:
            assert sorted(s) == [TRAIN, TEST]
        else:
            assert list(s) == [TRAIN]


def test_random_split_invariants():
    ds = split_random(random_dataset(n_users=200), seed=0)
    assert ds.split.shape == (ds.n_interactions,)                    # complete: one label each
    assert set(np.unique(ds.split)) <= {TRAIN, VALID, TEST}          # disjoint by construction
    _check_random_split(ds)
    again = split_random(random_dataset(n_users=200), seed=0)
    np.testing.assert_array_equal(ds.split, again.split)
    other = split_random(random_dataset(n_users=200), seed=1)
    assert (other.split != ds.split).any()


def test_leave_one_out_takes_last_in_time():
    ds = split_leave_one_out(random_dataset(n_users=100))
    for u in range(ds.n_users):
        rows = np.flatnonzero(ds.user == u)
        t, s = ds.timestamp[rows], ds.split[rows]
        assert (np.diff(t) >= 0).all()
        if len(rows) >= 3:
            assert s[-1] == TEST and s[-2] == VALID and (s[:-2] == TRAIN).all()
        elif len(rows) == 2:
            assert list(s) == [TRAIN, TEST]


def test_matrix_and_histories():
    ds = split_random(random_dataset(), seed=0)
    m = ds.matrix("train")
    assert m.nnz == int(ds.mask("train").sum())
    hist = ds.histories("train")
    for u in range(ds.n_users):
        assert sorted(hist[u]) == sorted(m[u].indices)

"""Full-ranking and sampled metrics against a brute-force per-user reference written plainly here."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cllm4rec import metrics as M
from cllm4rec.data import Dataset, split_random

ALL_FULL = ("recall", "recall_full", "ndcg", "hr", "precision", "mrr", "mrr_full")


# ---------------------------------------------------------------------------- the reference
def ref_ranking(scores_row, seen_items):
    """Item indices, best first: seen items at -inf, score descending, ties to the lower index."""
    s = np.asarray(scores_row, dtype=np.float64).copy()
    s[list(seen_items)] = -np.inf
    return np.lexsort((np.arange(len(s)), -s))  # last key is primary


def ref_metrics(scores, seen, target, ks, users=None):
    """Plain loops over users and positions."""
    n_users, n_items = scores.shape
    users = range(n_users) if users is None else users
    sums, n_eval, n_skip = {}, 0, 0
    for u in users:
        T = set(target[u].indices.tolist())
        S = set(seen[u].indices.tolist())
        if not T:
            n_skip += 1
            continue
        n_eval += 1
        ranking = ref_ranking(scores[u], S)
        hit = [int(i in T and i not in S) for i in ranking]
        first = next((r + 1 for r, h in enumerate(hit) if h), None)
        vals = {"mrr_full": 0.0 if first is None else 1.0 / first}
        for k in ks:
            kc = min(k, n_items)
            h = sum(hit[:kc])
            dcg = sum(hit[r] / math.log2(r + 2) for r in range(kc))
            idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(T))))
            vals[f"recall@{k}"] = h / min(k, len(T))
            vals[f"recall_full@{k}"] = h / len(T)
            vals[f"ndcg@{k}"] = dcg / idcg
            vals[f"hr@{k}"] = float(h > 0)
            vals[f"precision@{k}"] = h / k
            vals[f"mrr@{k}"] = 1.0 / first if first is not None and first <= kc else 0.0
        for key, v in vals.items():
            sums[key] = sums.get(key, 0.0) + v
    out = {key: v / n_eval for key, v in sums.items()}
    out["n_users_evaluated"], out["n_users_skipped"] = n_eval, n_skip
    return out


# ---------------------------------------------------------------------------- random problems
def random_problem(seed, n_users, n_items, kind="float32", p_seen=0.15, p_target=0.1, p_no_target=0.2):
    rng = np.random.default_rng(seed)
    inter = rng.random((n_users, n_items))
    seen = inter < p_seen
    target = (inter >= p_seen) & (inter < p_seen + p_target)
    target[rng.random(n_users) < p_no_target] = False           # users without test items
    if kind == "float32":
        scores = torch.from_numpy(rng.standard_normal((n_users, n_items)).astype(np.float32))
    elif kind == "ties":                                           # integer-valued: many ties
        scores = torch.from_numpy(rng.integers(-3, 4, (n_users, n_items)).astype(np.float32))
    elif kind == "float64_ties":
        scores = torch.from_numpy(rng.integers(0, 5, (n_users, n_items)) / 3.0)
    elif kind == "int64":                                          # non-float output is accepted
        scores = torch.from_numpy(rng.integers(0, 3, (n_users, n_items)))
    else:
        raise ValueError(kind)
    return scores, sp.csr_matrix(seen.astype(np.float32)), sp.csr_matrix(target.astype(np.float32))


def table_fn(scores, calls=None):
    def score_fn(users):
        if calls is not None:
            calls.append(len(users))
        return scores[users]
    return score_fn


def assert_same(got, want, keys=None):
    for key in keys or want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


SHAPES = [(1, 5), (13, 7), (37, 50), (64, 201)]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["float32", "ties", "float64_ties", "int64"])
def test_matches_reference(seed, shape, kind):
    scores, seen, target = random_problem(seed, *shape, kind=kind)
    ks = (1, 3, 10, 20, 300)                                       # 300 > n_items in every shape
    want = ref_metrics(scores.numpy(), seen, target, ks)
    got = M.evaluate(table_fn(scores), seen, target, ks=ks, metrics=ALL_FULL, batch_size=5)
    assert got["n_users_evaluated"] == want["n_users_evaluated"]
    assert got["n_users_skipped"] == want["n_users_skipped"]
    if want["n_users_evaluated"]:
        assert_same(got, want, [k for k in want if not k.startswith("n_")])
    else:
        assert all(math.isnan(v) for k, v in got.items() if not k.startswith("n_"))


@pytest.mark.parametrize("batch", [dict(batch_size=1), dict(batch_size=7), dict(batch_size=1000),
                                   dict(max_batch_bytes=1), dict(max_batch_bytes=60 * 24 * 11)])
def test_batching_does_not_change_results_and_respects_the_bound(batch):
    scores, seen, target = random_problem(3, 101, 60, kind="ties")  # 101 users: no batch size divides it
    calls = []
    got = M.evaluate(table_fn(scores, calls), seen, target, ks=(5, 20), metrics=ALL_FULL, **batch)
    want = ref_metrics(scores.numpy(), seen, target, (5, 20))
    assert_same(got, want, [k for k in want if not k.startswith("n_")])
    bound = batch.get("batch_size") or M.batch_users(60, batch["max_batch_bytes"])
    assert max(calls) <= bound and sum(calls) == got["n_users_evaluated"]
    if "max_batch_bytes" in batch:
        assert len(calls) == math.ceil(got["n_users_evaluated"] / bound)


def test_batch_size_from_bytes():
    assert M.batch_users(1000, 1) == 1
    assert M.batch_users(1000, 24 * 1000 * 50) == 50
    assert M.batch_users(12_101, 256 * 2**20) == 256 * 2**20 // (12_101 * 24)


def test_hand_computed_tiny_case():
    # 2 users, 6 items. user 0: seen {0}, targets {2, 5}; user 1: no targets -> skipped.
    scores = torch.tensor([[9.0, 1.0, 5.0, 5.0, 0.0, 2.0],
                           [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    seen = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], np.float32))
    target = sp.csr_matrix(np.array([[0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]], np.float32))
    # ranking of user 0: item 0 -> -inf; 2 and 3 tie at 5 -> 2 first; then 5 (2.0), 1, 4, 0
    # positions: 1:item2 (hit) 2:item3 3:item5 (hit) 4:item1 5:item4 6:item0
    got = M.evaluate(table_fn(scores), seen, target, ks=(1, 2, 3), metrics=ALL_FULL)
    assert got["n_users_evaluated"] == 1 and got["n_users_skipped"] == 1
    assert got["recall@1"] == 1.0                                   # 1 / min(1, 2)
    assert got["recall_full@1"] == 0.5
    assert got["recall@2"] == 0.5 and got["recall@3"] == 1.0
    assert got["ndcg@2"] == pytest.approx(1.0 / (1 + 1 / math.log2(3)))
    assert got["ndcg@3"] == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)))
    assert got["hr@1"] == 1.0 and got["precision@3"] == pytest.approx(2 / 3)
    assert got["mrr@1"] == 1.0 and got["mrr_full"] == 1.0
    # flip the tie: now item 3 outranks item 2, the first hit moves to position 2
    scores[0, 3] = 5.5
    got = M.evaluate(table_fn(scores), seen, target, ks=(1, 2), metrics=("recall", "mrr", "mrr_full"))
    assert got["recall@1"] == 0.0 and got["recall@2"] == 0.5
    assert got["mrr@1"] == 0.0 and got["mrr@2"] == 0.5 and got["mrr_full"] == 0.5


def test_ties_go_to_the_lower_item_index():
    n = 50
    scores = torch.zeros(1, n)                                      # every item ties
    seen = sp.csr_matrix(([1.0, 1.0], ([0, 0], [0, 3])), shape=(1, n))
    position = {1: 1, 2: 2, 4: 3, 5: 4, 49: 48}                  # free items in index order
    for item, r in position.items():
        target = sp.csr_matrix(([1.0], ([0], [item])), shape=(1, n))
        got = M.evaluate(table_fn(scores), seen, target, ks=(1, 3), metrics=("hr", "mrr_full"))
        assert got["hr@1"] == float(r == 1) and got["hr@3"] == float(r <= 3)
        assert got["mrr_full"] == pytest.approx(1.0 / r)


def test_negative_and_positive_zero_tie():
    scores = torch.tensor([[-0.0, 0.0, -1e-30, 1e-30]])
    target = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 4))
    seen = sp.csr_matrix((1, 4), dtype=np.float32)
    got = M.evaluate(table_fn(scores), seen, target, ks=(1, 2), metrics=("hr",))
    assert got["hr@1"] == 0.0 and got["hr@2"] == 1.0               # 1e-30 first, then -0.0 (index 0) == +0.0


@pytest.mark.parametrize("flush_denormal", [False, True])
def test_key_order_is_exact_for_extreme_floats(flush_denormal):
    # Built from bit patterns: under flush-to-zero even creating a subnormal from a Python float
    # may give 0, and loading a backbone turns flush-to-zero on for the rest of the process.
    bits = torch.tensor([[0xFF800000, 0xFF61EE3F, 0xBF800000, 0x80000001, 0x80000000,
                          0x00000000, 0x00000001, 0x3F800000, 0x7F61EE3F, 0x7F800000]], dtype=torch.int64)
    vals = bits.to(torch.int32).view(torch.float32)  # -inf -3e38 -1 -1e-45 -0 +0 1e-45 1 3e38 inf
    previous = bool((vals[0, 6] * 1.0) == 0)          # is flush-to-zero on now? restore it after
    torch.set_flush_denormal(flush_denormal)
    try:
        keys = M._order_keys(vals)
    finally:
        torch.set_flush_denormal(previous)
    order = torch.argsort(keys, dim=1, descending=True)[0].tolist()
    assert order == [9, 8, 7, 6, 4, 5, 3, 2, 1, 0]                 # -0.0 and +0.0 tie: lower index first


def test_users_subset_and_skipped_count():
    scores, seen, target = random_problem(7, 40, 30)
    users = [3, 5, 5, 39, 0]
    got = M.evaluate(table_fn(scores), seen, target, ks=(5,), users=users, metrics=ALL_FULL)
    want = ref_metrics(scores.numpy(), seen, target, (5,), users=users)
    assert_same(got, want)


def test_seen_target_overlap_warns_and_never_hits():
    scores = torch.tensor([[3.0, 2.0, 1.0]])
    seen = sp.csr_matrix(np.array([[1, 0, 0]], np.float32))
    target = sp.csr_matrix(np.array([[1, 0, 1]], np.float32))
    with pytest.warns(UserWarning, match="also in `seen`"):
        got = M.evaluate(table_fn(scores), seen, target, ks=(3,), metrics=("recall_full", "recall"))
    assert got["recall_full@3"] == 0.5 and got["recall@3"] == 0.5   # item 0 ranked (at -inf) but not a hit


def test_bad_inputs_are_named():
    scores, seen, target = random_problem(0, 5, 8, p_target=0.6, p_no_target=0.0)
    with pytest.raises(ValueError, match="unknown metric"):
        M.evaluate(table_fn(scores), seen, target, metrics=("recal",))
    with pytest.raises(ValueError, match="same shape"):
        M.evaluate(table_fn(scores), seen[:, :4], target)
    with pytest.raises(ValueError, match=r"expected \(\d+, 8\)"):
        M.evaluate(lambda u: scores[u, :4], seen, target)
    bad = scores.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        M.evaluate(table_fn(bad), seen, target)
    with pytest.raises(TypeError, match="scipy.sparse"):
        M.evaluate(table_fn(scores), seen.toarray(), target)
    with pytest.raises(ValueError, match="users must be indices"):
        M.evaluate(table_fn(scores), seen, target, users=[5])
    with pytest.raises(ValueError, match="ks must be positive"):
        M.evaluate(table_fn(scores), seen, target, ks=(0, 5))


def test_score_fn_output_is_not_modified():
    scores, seen, target = random_problem(1, 9, 12, p_target=0.6, p_no_target=0.0)
    before = scores.clone()
    got = M.evaluate(lambda u: scores, seen, target, ks=(3,), batch_size=9)   # returns the tensor itself
    assert got["n_users_evaluated"] == 9
    assert torch.equal(scores, before)


def test_evaluate_split_masks_train_for_valid_and_train_valid_for_test():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(30), 10)
    items = np.concatenate([rng.choice(40, 10, replace=False) for _ in range(30)])
    ds = split_random(Dataset.from_raw("t", users, items), seed=1)
    scores = torch.from_numpy(rng.standard_normal((ds.n_users, ds.n_items)).astype(np.float32))
    train, valid, test = ds.matrix("train"), ds.matrix("valid"), ds.matrix("test")
    assert_same(M.evaluate_split(table_fn(scores), ds, "valid", ks=(5,), metrics=ALL_FULL),
                ref_metrics(scores.numpy(), train, valid, (5,)))
    assert_same(M.evaluate_split(table_fn(scores), ds, "test", ks=(5,), metrics=ALL_FULL),
                ref_metrics(scores.numpy(), train + valid, test, (5,)))
    with pytest.raises(ValueError, match="part must be"):
        M.evaluate_split(table_fn(scores), ds, "train")


# ---------------------------------------------------------------------------- sampled protocol
def loo_problem(seed, n_users=60, n_items=150):
    rng = np.random.default_rng(seed)
    rows, cols, trows, tcols = [], [], [], []
    for u in range(n_users):
        items = rng.choice(n_items, size=int(rng.integers(2, 12)), replace=False)
        rows += [u] * (len(items) - 1)
        cols += list(items[:-1])
        if u % 7:                                                   # every 7th user: no held-out item
            trows.append(u)
            tcols.append(items[-1])
    train = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, n_items))
    test = sp.csr_matrix((np.ones(len(trows)), (trows, tcols)), shape=(n_users, n_items))
    return train, test


@pytest.mark.parametrize("seed", range(4))
def test_negatives_are_unseen_distinct_seeded_and_per_user(seed):
    train, test = loo_problem(seed)
    inter = train + test
    users = np.arange(60)
    neg = M.sample_negatives(inter, users, n_negatives=99, seed=seed)
    assert neg.shape == (60, 99)
    for u in users:
        assert len(set(neg[u])) == 99
        assert not set(neg[u]) & set(inter[u].indices)
    np.testing.assert_array_equal(neg, M.sample_negatives(inter, users, 99, seed=seed))
    assert not np.array_equal(neg, M.sample_negatives(inter, users, 99, seed=seed + 100))
    # a user's negatives do not depend on which other users are sampled
    np.testing.assert_array_equal(neg[[5, 17]], M.sample_negatives(inter, [5, 17], 99, seed=seed))


def test_too_few_negatives_is_a_clear_error():
    inter = sp.csr_matrix(np.ones((2, 10), np.float32))
    with pytest.raises(ValueError, match="only 0 can be negatives"):
        M.sample_negatives(inter, [0], n_negatives=1)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["float32", "ties"])
@pytest.mark.parametrize("batch_size", [None, 1, 8])
def test_sampled_matches_reference(seed, kind, batch_size):
    train, test = loo_problem(seed)
    scores, _, _ = random_problem(seed, 60, 150, kind=kind)
    users, cand = M.sampled_candidates(train + test, test, n_negatives=20, seed=seed)
    assert len(users) == len([u for u in range(60) if u % 7])
    assert all(test[int(u), int(c)] == 1 for u, c in zip(users, cand[:, 0]))
    _, again = M.sampled_candidates(train, test, n_negatives=20, seed=seed)   # test part left out
    assert torch.equal(cand, again)                                # the positive is excluded anyway
    got = M.evaluate_sampled(table_fn(scores), users, cand, ks=(1, 5, 10), metrics=("hr", "ndcg", "mrr"),
                             batch_size=batch_size)
    want = {}
    for u, row in zip(users.tolist(), cand.tolist()):
        s = scores[u].double().numpy()
        order = sorted(row, key=lambda i: (-s[i], i))               # same tie rule
        r = order.index(row[0]) + 1
        for k in (1, 5, 10):
            want[f"sampled_hr@{k}"] = want.get(f"sampled_hr@{k}", 0) + (r <= k)
            want[f"sampled_ndcg@{k}"] = want.get(f"sampled_ndcg@{k}", 0) + (r <= k) / math.log2(r + 1)
        want["sampled_mrr"] = want.get("sampled_mrr", 0) + 1 / r
    for key, v in want.items():
        assert got[key] == pytest.approx(v / len(users), abs=1e-12), key
    assert got["sampled_n_candidates"] == 21 and got["n_users_evaluated"] == len(users)
    assert not any(k.startswith(("hr", "ndcg", "recall")) for k in got)   # protocol is in every key


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["float32", "ties"])
def test_candidate_recorder_gives_both_protocols_in_one_pass(seed, kind):
    train, test = loo_problem(seed)
    scores, _, _ = random_problem(seed, 60, 150, kind=kind)
    users, cand = M.sampled_candidates(train + test, test, n_negatives=20, seed=seed)
    calls = []
    fn = table_fn(scores)
    rec = M.CandidateRecorder(lambda u: calls.append(len(u)) or fn(u), users, cand)
    with pytest.raises(RuntimeError, match="never scored"):
        rec.sampled()
    full = M.evaluate(rec, train, test, (5, 10), ("recall", "ndcg"), batch_size=7)
    assert full == M.evaluate(fn, train, test, (5, 10), ("recall", "ndcg"), batch_size=7)
    assert sum(calls) == len(users)                                 # each user scored once
    assert rec.sampled((1, 5, 10), ("hr", "ndcg", "mrr")) == M.evaluate_sampled(
        fn, users, cand, (1, 5, 10), ("hr", "ndcg", "mrr"))


def test_sampled_candidates_need_one_target_per_user():
    train, test = loo_problem(0)
    test = test.tolil()
    test[1, 0] = test[1, 1] = 1
    with pytest.raises(ValueError, match="one held-out item per user"):
        M.sampled_candidates(train, test.tocsr())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["float32", "ties", "float64_ties"])
def test_cuda_matches_reference(kind):
    scores, seen, target = random_problem(11, 57, 300, kind=kind)
    gpu = scores.cuda()
    got = M.evaluate(lambda u: gpu[u], seen, target, ks=(1, 10, 500), metrics=ALL_FULL, batch_size=8,
                     device="cuda")
    want = ref_metrics(scores.numpy(), seen, target, (1, 10, 500))
    assert_same(got, want, [k for k in want if not k.startswith("n_")])

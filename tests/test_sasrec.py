"""SASRec: it learns a deterministic next-item rule, masks the future, ignores padding and batch
company, is deterministic under its seed, and scores the test part from train + valid items."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cllm4rec.baselines import Popularity
from cllm4rec.data import Dataset, split_leave_one_out
from cllm4rec.metrics import evaluate_split
from cllm4rec.sasrec import SASRec, _LinearCrossEntropy

SMALL = dict(dim=32, max_len=20, dropout=0.0, lr=5e-3, batch_size=64, max_epochs=60, patience=5)


def successor_dataset(n_users=300, n_items=40, seed=0, min_len=5, max_len=12) -> Dataset:
    """Each user walks item -> (item + 1) mod n_items from a random start, so the next item is
    a function of the previous one; popularity is flat. Leave-one-out split."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        start, n = rng.integers(n_items), rng.integers(min_len, max_len + 1)
        users += [f"u{u}"] * n
        items += [f"i{(start + t) % n_items}" for t in range(n)]
    ds = Dataset.from_raw("successor", users, items)
    return split_leave_one_out(ds)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one intra-op thread is faster, and immune to a loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def successor():
    return successor_dataset()


@pytest.fixture(scope="module")
def fitted(successor):
    return SASRec(**SMALL, seed=0).fit_dataset(successor)


def item_index(ds: Dataset, raw: int) -> int:
    return ds.item_ids.index(f"i{raw}")


# ---------------------------------------------------------------------------- learning
def test_learns_the_successor_rule_and_beats_popularity(successor, fitted):
    m = evaluate_split(fitted.scorer("test"), successor, "test", ks=(1, 10), metrics=("hr",))
    pop = Popularity().fit(successor.matrix("train"))
    p = evaluate_split(pop.score, successor, "test", ks=(1, 10), metrics=("hr",))
    assert m["hr@1"] > 0.97, m
    assert m["hr@10"] > p["hr@10"] + 0.5, (m, p)
    h = fitted.history
    assert h and {"epoch", "loss", "valid_ndcg@10", "valid_hr@10", "seconds"} <= set(h[0])
    assert h[-1]["loss"] < h[0]["loss"]
    assert fitted.best_epoch == int(np.argmax([e["valid_ndcg@10"] for e in h]))


def test_sampled_softmax_learns_too(successor):
    model = SASRec(**SMALL, loss="sampled", n_negatives=16, seed=0).fit_dataset(successor)
    m = evaluate_split(model.scorer("test"), successor, "test", ks=(1,), metrics=("hr",))
    assert m["hr@1"] > 0.9, m


def test_early_stopping_restores_the_best_epoch(successor):
    model = SASRec(**{**SMALL, "max_epochs": 12, "patience": 2, "lr": 3e-2}, seed=1).fit_dataset(successor)
    valid = evaluate_split(model.scorer("valid"), successor, "valid", ks=(10,), metrics=("ndcg",))["ndcg@10"]
    assert valid == pytest.approx(max(e["valid_ndcg@10"] for e in model.history), abs=1e-12)
    assert len(model.history) <= 12


# ---------------------------------------------------------------------------- the network
def test_causal_mask_future_items_do_not_change_earlier_positions(fitted):
    net = fitted.net.eval()
    seq = torch.tensor([[3, 7, 1, 9, 4, 2, 8]])
    lengths = torch.tensor([7])
    changed = seq.clone()
    changed[0, 4] = 11
    with torch.no_grad():
        a, b = net(seq, lengths), net(changed, lengths)
    torch.testing.assert_close(a[0, :4], b[0, :4], rtol=0, atol=1e-6)
    assert not torch.allclose(a[0, 4:], b[0, 4:])


def test_padding_and_batch_company_do_not_change_scores(successor, fitted):
    lengths = fitted.inputs["test"][1]
    longest, shortest = int(np.argmax(lengths)), int(np.argmin(lengths))
    assert lengths[longest] > lengths[shortest]                    # `shortest` is padded in the batch below
    alone = fitted.score(torch.tensor([shortest]), part="test")
    batch = fitted.score(torch.tensor([longest, shortest, 5]), part="test")
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-5, atol=1e-5)
    s = fitted.score_sequences([[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], [1, 2, 3]])
    torch.testing.assert_close(s[0], s[2], rtol=0, atol=0)
    torch.testing.assert_close(s[:1], fitted.score_sequences([[1, 2, 3]]), rtol=1e-5, atol=1e-5)


def test_only_the_last_max_len_items_are_used(fitted):
    seq = list(range(30))
    torch.testing.assert_close(fitted.score_sequences([seq]), fitted.score_sequences([seq[-fitted.max_len:]]),
                               rtol=1e-5, atol=1e-5)


def test_empty_history_gets_finite_scores(fitted):
    s = fitted.score_sequences([[], [1, 2]])
    assert s.shape == (2, fitted.n_items) and torch.isfinite(s).all()


@pytest.mark.parametrize("positions", ["forward", "inverse"])
def test_a_prefix_scores_like_its_position_in_the_sequence(positions):
    """forward positions: hidden state t of a sequence == the last hidden state of its prefix."""
    ds = successor_dataset(n_users=40)
    model = SASRec(**{**SMALL, "max_epochs": 1}, positions=positions, seed=0).fit_dataset(ds, valid=False)
    seq = torch.tensor([[3, 7, 1, 9, 4]])
    with torch.no_grad():
        full = model.net.eval()(seq, torch.tensor([5]))[0, 2]
        prefix = model.net(seq[:, :3], torch.tensor([3]))[0, 2]
    assert torch.allclose(full, prefix, atol=1e-5) == (positions == "forward")


# ---------------------------------------------------------------------------- the protocol
def test_test_scoring_includes_the_validation_item(successor, fitted):
    train, valid, test = (successor.histories(p) for p in ("train", "valid", "test"))
    u = 7
    inp, n = fitted.inputs["test"]
    assert inp[u, :n[u]].tolist() == list(train[u]) + list(valid[u])
    inp, n = fitted.inputs["valid"]
    assert inp[u, :n[u]].tolist() == list(train[u])
    # the model predicts the successor of its last input item: valid item for "valid", test item for "test"
    assert int(fitted.score(torch.tensor([u]), part="valid").argmax()) == valid[u][0]
    assert int(fitted.score(torch.tensor([u]), part="test").argmax()) == test[u][0]
    assert torch.equal(fitted.score(torch.tensor([u])), fitted.score(torch.tensor([u]), part="valid"))


def test_fit_wants_the_dataset_not_a_matrix(successor):
    with pytest.raises(TypeError, match="sequence model"):
        SASRec().fit(successor.matrix("train"), valid=successor.matrix("valid"))
    with pytest.raises(ValueError, match="part"):
        SASRec(**{**SMALL, "max_epochs": 1}).fit(successor).score(torch.tensor([0]), part="train")


def test_deterministic_under_the_seed(successor):
    kw = {**SMALL, "max_epochs": 3, "dropout": 0.2}
    a, b = (SASRec(**kw, seed=3).fit_dataset(successor) for _ in range(2))
    c = SASRec(**kw, seed=4).fit_dataset(successor)
    users = torch.arange(20)
    assert [e["loss"] for e in a.history] == [e["loss"] for e in b.history]
    assert torch.equal(a.score(users, "test"), b.score(users, "test"))
    assert not torch.equal(a.score(users, "test"), c.score(users, "test"))
    state = torch.random.get_rng_state()
    SASRec(**kw, seed=3).fit_dataset(successor)
    assert torch.equal(state, torch.random.get_rng_state())       # the global RNG is untouched


# ---------------------------------------------------------------------------- the loss
def test_fused_full_softmax_matches_cross_entropy():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(37, 8, generator=g, requires_grad=True)
    w = torch.randn(50, 8, generator=g, requires_grad=True)
    y = torch.randint(0, 50, (37,), generator=g)
    ref = F.cross_entropy(h @ w.T, y)
    ref_grads = torch.autograd.grad(3.0 * ref, (h, w), retain_graph=True)
    for chunk in (5, 37, 4096):
        loss = _LinearCrossEntropy.apply(h, w, y, chunk, torch.float32)
        torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
        for got, want in zip(torch.autograd.grad(3.0 * loss, (h, w)), ref_grads):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    loss = _LinearCrossEntropy.apply(h, w, y, 16, torch.bfloat16)   # bf16 matmuls: close, not exact
    assert abs(float(loss.detach()) - float(ref.detach())) < 0.01 * float(ref.detach())
    for got, want in zip(torch.autograd.grad(loss, (h, w)), torch.autograd.grad(ref, (h, w))):
        assert float((got - want).norm() / want.norm()) < 0.02


@pytest.mark.slow
def test_beauty_slice_beats_popularity(shared_data):
    """Real data: Beauty's 1,000 most popular items among its first 8,000 users (users with >= 3
    of them kept; leave-one-out). Ten epochs (~15 s) beat popularity by a wide margin on test."""
    from cllm4rec.data import BadLines
    from cllm4rec.data.readers import S3RecSequences
    ds = S3RecSequences(path=shared_data / "amazon_s3rec_splits" / "Beauty.txt").read(BadLines())
    top = np.argsort(-np.bincount(ds.item, minlength=ds.n_items), kind="stable")[:1000]
    ds = ds.select(np.isin(ds.item, top) & (ds.user < 8000))
    n = np.bincount(ds.user, minlength=ds.n_users)
    ds = split_leave_one_out(ds.select(n[ds.user] >= 3))
    assert ds.n_users > 3000 and ds.n_items > 900
    model = SASRec(max_epochs=10, eval_every=5, seed=0).fit_dataset(ds)
    m = evaluate_split(model.scorer("test"), ds, "test", ks=(10,), metrics=("hr", "ndcg"))
    p = evaluate_split(Popularity().fit(ds.matrix("train")).score, ds, "test", ks=(10,), metrics=("hr", "ndcg"))
    assert m["hr@10"] > 1.2 * p["hr@10"] and m["ndcg@10"] > 1.2 * p["ndcg@10"], (m, p)

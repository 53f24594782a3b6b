"""Baselines: closed-form and unit checks, and ML-100K numbers against RecBole 1.2.1's.

RecBole 1.2.1 on ML-100K, per-user random 80/10/10, all ratings kept, test Recall@20 with the
min(K, |T|) denominator (measured on these machines): Pop 0.190, EASE 0.419, Multi-VAE 0.403.
"""
import csv
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cllm4rec import baselines as B
from cllm4rec.data import Dataset, split_random
from cllm4rec.metrics import evaluate, evaluate_split

# ---------------------------------------------------------------------------- data
def read_ml100k(folder: Path) -> Dataset:
    """ML-100K from its RecBole atomic files, every rating kept: the package's reader when it is
    there, else a plain read of ml-100k.inter."""
    try:
        from cllm4rec.data.readers import RecBoleAtomic
    except ImportError:
        return _read_ml100k_inter(folder)
    from cllm4rec.data import BadLines
    return RecBoleAtomic(path=str(folder), dataset="ml-100k", name="ml100k").read(BadLines())


def _read_ml100k_inter(folder: Path) -> Dataset:
    with open(folder / "ml-100k.inter", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    rows = rows[1:]
    return Dataset.from_raw("ml100k", [r[0] for r in rows], [r[1] for r in rows],
                            rating=[float(r[2]) for r in rows], timestamp=[int(float(r[3])) for r in rows])


@pytest.fixture(scope="module")
def ml100k(shared_data):
    ds = split_random(read_ml100k(shared_data / "movielens_100k"), seed=0)
    assert ds.counts() == {"users": 943, "items": 1682, "interactions": 100_000}
    return ds


def recall20_on_test(model, ds):
    return evaluate_split(model.score, ds, "test", ks=(20,), metrics=("recall",))["recall@20"]


def clustered(seed=0, n_users=240, n_items=80, groups=4, per_user=10):
    """Users of group g interact only with items of block g: an easy structure to learn."""
    rng = np.random.default_rng(seed)
    block = n_items // groups
    rows, cols = [], []
    for u in range(n_users):
        g = u % groups
        rows += [u] * per_user
        cols += list(g * block + rng.choice(block, per_user, replace=False))
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    train, valid = m.copy().tolil(), sp.lil_matrix(m.shape, dtype=np.float32)
    for u in range(n_users):                                      # hold out one item per user
        j = rng.choice(m[u].indices)
        train[u, j], valid[u, j] = 0, 1
    return train.tocsr(), valid.tocsr()


# ---------------------------------------------------------------------------- Popularity
def test_popularity_scores_are_training_counts():
    x = sp.csr_matrix(np.array([[1, 0, 1, 0], [1, 1, 0, 0], [1, 0, 1, 0]], np.float32))
    model = B.Popularity().fit(x)
    s = model.score(torch.tensor([0, 2, 1]))
    assert s.shape == (3, 4) and s.dtype == torch.float32
    assert torch.equal(s, torch.tensor([[3.0, 1.0, 2.0, 0.0]]).expand(3, 4))
    assert torch.argsort(s[0], descending=True, stable=True).tolist() == [0, 2, 1, 3]


def test_popularity_on_ml100k(ml100k):
    model = B.Popularity().fit(ml100k.matrix("train"), ml100k.matrix("valid"))
    assert abs(recall20_on_test(model, ml100k) - 0.190) < 0.03


# ---------------------------------------------------------------------------- EASE
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("l2", [0.5, 10.0, 500.0])
def test_ease_matches_columnwise_ridge_regression(seed, l2):
    """EASE's closed form equals, per column j, ridge regression of x_j on the other columns
    (the constrained problem diag(B) = 0 solved directly, no Lagrangian)."""
    rng = np.random.default_rng(seed)
    x = (rng.random((40, 12)) < 0.3).astype(np.float64)
    model = B.EASE(l2).fit(sp.csr_matrix(x))
    got = model.weights.double().numpy()
    want = np.zeros((12, 12))
    for j in range(12):
        others = [i for i in range(12) if i != j]
        xo = x[:, others]
        want[others, j] = np.linalg.solve(xo.T @ xo + l2 * np.eye(11), xo.T @ x[:, j])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert np.all(np.diag(got) == 0.0)
    np.testing.assert_allclose(model.score(torch.arange(40)).double().numpy(), x @ got, rtol=1e-5, atol=1e-6)


def test_ease_rejects_nonpositive_l2():
    with pytest.raises(ValueError, match="l2 must be positive"):
        B.EASE(0.0).fit(sp.csr_matrix(np.eye(3, dtype=np.float32)))


def test_ease_on_ml100k(ml100k):
    model = B.EASE(l2=500.0).fit(ml100k.matrix("train"))
    assert abs(recall20_on_test(model, ml100k) - 0.419) < 0.03


def test_ease_grid_selects_on_validation(ml100k):
    train, valid = ml100k.matrix("train"), ml100k.matrix("valid")
    best, results = B.select_ease_l2(train, valid, grid=(20.0, 500.0, 5000.0))
    assert set(results) == {20.0, 500.0, 5000.0}
    assert best.l2 == max(results, key=results.get)
    assert results[500.0] > results[20.0] and results[500.0] > results[5000.0]   # interior optimum
    want = evaluate(B.EASE(best.l2).fit(train).score, train, valid, ks=(20,), metrics=("recall",))
    assert results[best.l2] == pytest.approx(want["recall@20"])


# ---------------------------------------------------------------------------- Multi-VAE
def small_vae(**kw):
    return B.MultiVAE(**{"hidden": 32, "latent": 8, "batch_size": 64, "max_epochs": 40, "lr": 3e-3, **kw})


def test_multivae_loss_decreases_and_learns_structure():
    train, valid = clustered()
    model = small_vae().fit(train)
    nll = [e["nll"] for e in model.log]
    assert len(nll) == 40 and nll[-1] < 0.9 * nll[0]
    # the held-out item is in the user's block: a learned model ranks the block first
    r = evaluate(model.score, train, valid, ks=(10,), metrics=("recall",))["recall@10"]
    assert r > 0.6                    # random: 10 / 71 unseen items; perfect block ranking: 10 / 11


def test_multivae_is_seeded_and_leaves_global_rng_alone():
    train, valid = clustered()
    state = torch.get_rng_state()
    a = small_vae(max_epochs=5, seed=3).fit(train, valid)
    assert torch.equal(torch.get_rng_state(), state)
    b = small_vae(max_epochs=5, seed=3).fit(train, valid)
    c = small_vae(max_epochs=5, seed=4).fit(train, valid)
    users = torch.arange(train.shape[0])
    untimed = lambda log: [{k: v for k, v in e.items() if not k.endswith('seconds')} for e in log]  # noqa: E731
    assert torch.equal(a.score(users), b.score(users)) and untimed(a.log) == untimed(b.log)
    assert not torch.equal(a.score(users), c.score(users))


def test_multivae_early_stopping_keeps_the_best_epoch():
    train, valid = clustered(seed=1)
    model = small_vae(max_epochs=60, patience=3, lr=1e-2).fit(train, valid)
    values = [e["valid_recall@20"] for e in model.log]
    assert model.best_epoch == int(np.argmax(values))             # first epoch reaching the best value
    assert len(values) == model.best_epoch + 4 < 60                # stopped after 3 epochs without gain
    # the kept weights are exactly those after the best epoch: retrain just that far, no validation
    again = small_vae(max_epochs=model.best_epoch + 1, lr=1e-2).fit(train)
    users = torch.arange(train.shape[0])
    assert torch.equal(model.score(users), again.score(users))
    final = evaluate(model.score, train, valid, ks=(20,), metrics=("recall",))["recall@20"]
    assert final == pytest.approx(max(values))


def test_multivae_anneals_beta():
    train, _ = clustered()
    model = small_vae(max_epochs=10, anneal_steps=40, beta_max=0.2).fit(train)  # 4 updates per epoch
    betas = [e["beta"] for e in model.log]                       # beta of each epoch's last update
    assert betas[:3] == pytest.approx([3 / 40, 7 / 40, 0.2]) and betas[-1] == 0.2


@pytest.mark.slow
def test_multivae_on_ml100k(ml100k):
    model = B.MultiVAE(seed=0).fit(ml100k.matrix("train"), ml100k.matrix("valid"))
    assert recall20_on_test(model, ml100k) > 0.35


# ---------------------------------------------------------------------------- plumbing
@pytest.mark.parametrize("cls", [B.Popularity, B.EASE, lambda: small_vae(max_epochs=1)])
def test_unfitted_and_bad_users_are_clear_errors(cls):
    model = cls()
    with pytest.raises(RuntimeError, match="not fitted"):
        model.score(torch.tensor([0]))
    model.fit(sp.csr_matrix(np.eye(4, dtype=np.float32)))
    with pytest.raises(ValueError, match=r"user indices must be in \[0, 4\)"):
        model.score(torch.tensor([4]))
    with pytest.raises(TypeError, match="scipy.sparse"):
        cls().fit(np.eye(4))

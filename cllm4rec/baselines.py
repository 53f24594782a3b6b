"""Classical baselines with one interface: `fit(train, valid=None) -> self`, then
`score(users: LongTensor[B]) -> FloatTensor[B, n_items]`, which plugs into `metrics.evaluate`.

Protocol (as RecBole's): models are fitted on the training matrix and score a user from their
training row; the evaluator masks training items for validation and training + validation
items for test. `valid` is used only for model selection (early stopping, the EASE grid).

- Popularity: an item's score is its number of training interactions.
- EASE (Steck, WWW 2019): B = I - P / diag(P) with P = (X^T X + l2 I)^-1, i.e.
  B_ij = -P_ij / P_jj off the diagonal and B_jj = 0; scores = X_u B.
- MultiVAE (Liang et al., WWW 2018): multinomial-likelihood VAE, encoder
  n_items -> 600 -> 2 x 200 (mean, log-variance), decoder 200 -> 600 -> n_items, tanh,
  L2-normalised input with dropout 0.5, KL weight annealed linearly to beta_max = 0.2.

Item-text baselines (`fit_dataset(ds) -> self`, then the same `score(users)`), the only peers
that can rank items nobody interacted with (the cold_items split):
- RandomScores: a seeded uniform score per (user, item): the floor where popularity has no counts.
- TextKNN: TF-IDF over each item's description (scikit-learn; sublinear tf, English stop words),
  a user's profile the mean of their training items' unit vectors, score = cosine(profile, item).
- BackboneKNN: the same with the backbone's own text vectors (mean last hidden state, centred):
  what the LLM's reading of the text alone gives, without any training.

Rating prediction (`fit(users, items, ratings)`, `predict(users, items)`):
- MeanRating: the global mean training rating for every pair.
- BiasRating: r_ui ~ mu + b_u + b_i, ridge-regularised (l2 on b), fitted by alternating
  closed-form updates, the classical baseline predictor (Koren 2008, eq. 2).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from .fitting import fit_epochs
from .metrics import evaluate
from .progress import Progress

__all__ = ["Popularity", "EASE", "MultiVAE", "select_ease_l2", "RandomScores", "TextKNN", "BackboneKNN",
           "MeanRating", "BiasRating"]


def _binary_csr(m, name: str = "train") -> sp.csr_matrix:
    if not sp.issparse(m):
        raise TypeError(f"{name} must be a scipy.sparse users x items matrix (e.g. Dataset.matrix('train')), "
                        f"got {type(m).__name__}")
    m = sp.csr_matrix(m, dtype=np.float32, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.data[:] = 1.0
    return m


class _Baseline:
    """Shared plumbing: the training matrix and checks on the users asked for."""

    history: sp.csr_matrix | None = None

    def _set_history(self, train) -> sp.csr_matrix:
        self.history = _binary_csr(train)
        return self.history

    @property
    def n_items(self) -> int:
        return self.history.shape[1]

    def _rows(self, users) -> np.ndarray:
        if self.history is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call .fit(train) first")
        u = torch.as_tensor(users).reshape(-1).cpu().numpy().astype(np.int64)
        if len(u) and (u.min() < 0 or u.max() >= self.history.shape[0]):
            raise ValueError(f"user indices must be in [0, {self.history.shape[0]}), got [{u.min()}, {u.max()}]")
        return u

    def _dense_history(self, users) -> torch.Tensor:
        return torch.from_numpy(self.history[self._rows(users)].toarray())  # [B, n_items] float32

    def __call__(self, users) -> torch.Tensor:
        return self.score(users)

    def scorer(self, part: str = "test"):
        """The score_fn for any part: a user is scored from their training row (the protocol above)."""
        return self.score


# ---------------------------------------------------------------------------- Popularity
class Popularity(_Baseline):
    """score(u, i) = number of training interactions of item i (the same for every user)."""

    def fit(self, train, valid=None) -> "Popularity":
        x = self._set_history(train)
        self.counts = torch.from_numpy(np.asarray(x.sum(0), dtype=np.float32).reshape(-1))  # [n_items]
        return self

    def score(self, users) -> torch.Tensor:
        u = self._rows(users)
        return self.counts.expand(len(u), -1).clone()              # [B, n_items]


# ---------------------------------------------------------------------------- item text
class RandomScores(_Baseline):
    """A uniform random score per (user, item), the same for a user in every batch (seeded per user)."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, train, valid=None) -> "RandomScores":
        self._set_history(train)
        return self

    def fit_dataset(self, ds) -> "RandomScores":
        return self.fit(ds.matrix("train"))

    def score(self, users) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.random.default_rng([self.seed, int(u)]).random(self.n_items, np.float32)
                                          for u in self._rows(users)]).reshape(-1, self.n_items))


class _TextProfiles(_Baseline):
    """Unit item vectors [J, D] (sparse or dense); a user's profile is the mean of their training items'."""

    def _fit_vectors(self, ds, vectors) -> "_TextProfiles":
        x = self._set_history(ds.matrix("train"))
        self.vectors = vectors
        self.profiles = sp.diags(1.0 / np.maximum(np.asarray(x.sum(1)).reshape(-1), 1.0)) @ x @ vectors  # [U, D]
        return self

    def score(self, users) -> torch.Tensor:
        s = self.profiles[self._rows(users)] @ self.vectors.T        # [B, J]; the profile's norm does not rank
        return torch.from_numpy(np.asarray(s.toarray() if sp.issparse(s) else s, np.float32))


def _descriptions(ds, fields=None) -> list[str]:
    from .cold_items import item_descriptions
    if not ds.item_text:
        raise ValueError(f"dataset {ds.name!r} has no item texts: the text baselines need them")
    return item_descriptions(ds.item_text, range(ds.n_items), fields)


class TextKNN(_TextProfiles):
    """Content k-NN: TF-IDF over each item's description (`fields`: the item text fields to read;
    None: all), the user the mean of their training items' vectors, cosine scores."""

    def __init__(self, fields: list | None = None, sublinear_tf: bool = True, stop_words: str | None = "english"):
        self.fields, self.sublinear_tf, self.stop_words = fields, sublinear_tf, stop_words

    def fit_dataset(self, ds) -> "TextKNN":
        from sklearn.feature_extraction.text import TfidfVectorizer
        tfidf = TfidfVectorizer(sublinear_tf=self.sublinear_tf, stop_words=self.stop_words)   # rows l2-normalised
        return self._fit_vectors(ds, tfidf.fit_transform(_descriptions(ds, self.fields)).astype(np.float32))


class BackboneKNN(_TextProfiles):
    """Content k-NN on the backbone's own text vectors (mean last hidden state, centred): the
    LLM's reading of the item text without any training."""

    def __init__(self, backbone: str, fields: list | None = None, max_tokens: int = 128, seed: int = 0):
        self.backbone, self.fields, self.max_tokens, self.seed = backbone, fields, max_tokens, seed

    def fit_dataset(self, ds) -> "BackboneKNN":
        from .backbone import load_backbone
        from .text_init import text_vectors
        model, tokenizer = load_backbone(self.backbone, seed=self.seed)
        enc = tokenizer(_descriptions(ds, self.fields), add_special_tokens=False)["input_ids"]
        offsets = np.concatenate([[0], np.cumsum([len(t) for t in enc])]).astype(np.int64)
        tokens = np.asarray([t for ids in enc for t in ids], np.int64)
        v = text_vectors(model, tokens, offsets, self.max_tokens).numpy()
        v = v - v.mean(0, keepdims=True)            # an LLM's states share one large direction
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return self._fit_vectors(ds, v.astype(np.float32))


# ---------------------------------------------------------------------------- EASE
def _ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """B = I - P / diag(P), P = (G + l2 I)^-1; zero diagonal. gram: [n, n] float64 X^T X."""
    if l2 <= 0:
        raise ValueError(f"EASE l2 must be positive, got {l2}")
    g = gram.copy()
    g[np.diag_indices_from(g)] += l2
    p = np.linalg.inv(g)
    b = p / (-np.diag(p))[None, :]                                  # B_ij = -P_ij / P_jj
    np.fill_diagonal(b, 0.0)
    return b


def _gram(x: sp.csr_matrix) -> np.ndarray:
    x64 = x.astype(np.float64)
    return np.asarray((x64.T @ x64).toarray())


class EASE(_Baseline):
    """Embarrassingly Shallow Autoencoder. l2: the ridge weight lambda (select it on validation
    with `select_ease_l2`; the default 500 is its pick on ML-100K, RecBole's is 250: re-select per
    dataset). Memory: two dense n_items x n_items float64 matrices while fitting."""

    def __init__(self, l2: float = 500.0):
        self.l2 = float(l2)

    def fit(self, train, valid=None, gram: np.ndarray | None = None) -> "EASE":
        x = self._set_history(train)
        b = _ease_weights(_gram(x) if gram is None else gram, self.l2)
        self.weights = torch.from_numpy(b.astype(np.float32))      # [n_items, n_items]
        return self

    def score(self, users) -> torch.Tensor:
        return self._dense_history(users) @ self.weights           # [B, n] @ [n, n] -> [B, n]


def select_ease_l2(train, valid, grid=(50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0), metric: str = "recall@20",
                   **eval_kwargs) -> tuple[EASE, dict[float, float]]:
    """Fit EASE for every l2 in `grid` (one Gram matrix), evaluate on `valid` with training items
    masked, and return (the model with the best `metric`, {l2: metric}). Ties: the smaller l2."""
    name, k = metric.split("@")
    x = _binary_csr(train)
    gram = _gram(x)
    results: dict[float, float] = {}
    best = None
    progress = Progress(len(grid), "EASE (l2 on validation)", unit="fits")
    for l2 in sorted(float(v) for v in grid):
        model = EASE(l2).fit(x, gram=gram)
        results[l2] = evaluate(model.score, x, valid, ks=(int(k),), metrics=(name,), **eval_kwargs)[metric]
        progress.update(1, l2=l2, **{metric: results[l2]})
        if best is None or results[l2] > results[best.l2]:
            best = model
    progress.close()
    return best, results


# ---------------------------------------------------------------------------- Multi-VAE
class _VAE(nn.Module):
    def __init__(self, n_items: int, hidden: int, latent: int, dropout: float):
        super().__init__()
        self.latent = latent
        self.drop = nn.Dropout(dropout)
        self.enc1 = nn.Linear(n_items, hidden)
        self.enc2 = nn.Linear(hidden, 2 * latent)                   # mean and log-variance
        self.dec1 = nn.Linear(latent, hidden)
        self.dec2 = nn.Linear(hidden, n_items)
        for layer in (self.enc1, self.enc2, self.dec1, self.dec2):  # as in the authors' code
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=0.001)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        h = self.drop(F.normalize(x, dim=1))                        # [B, n] L2-normalised rows
        h = torch.tanh(self.enc1(h))                                # [B, hidden]
        mu, logvar = self.enc2(h).split(self.latent, dim=1)         # [B, latent] each
        z = mu
        if self.training:                                           # reparameterisation
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
            z = mu + eps * torch.exp(0.5 * logvar)
        logits = self.dec2(torch.tanh(self.dec1(z)))                # [B, n]
        return logits, mu, logvar


class MultiVAE(_Baseline):
    """Mult-VAE (Liang et al. 2018): n_items -> hidden -> latent (mean, log-variance) -> hidden ->
    n_items, tanh, L2-normalised input, input dropout, KL annealing beta = min(beta_max, updates /
    anneal_steps) (the authors' 200,000 steps: on small data beta stays near 0), Adam.

    Loss per batch = mean over users of [ -sum_i x_ui log softmax(logits)_i
                                          + beta * KL(N(mu, sigma^2) || N(0, I)) ].
    Each epoch visits the users with training items in a seeded random order, in batches of
    `batch_size`. With `valid`, validation recall@20 is computed after every epoch; training
    stops after `patience` epochs without improvement and the best epoch's weights are kept.
    The global torch RNG is left untouched (a forked RNG seeded with `seed` is used).
    """

    def __init__(self, hidden: int = 600, latent: int = 200, dropout: float = 0.5, beta_max: float = 0.2,
                 anneal_steps: int = 200_000, lr: float = 1e-3, batch_size: int = 500, max_epochs: int = 200,
                 patience: int = 20, seed: int = 0, valid_metric: str = "recall@20", device: str = "cpu"):
        self.hidden, self.latent, self.dropout = hidden, latent, dropout
        self.beta_max, self.anneal_steps = beta_max, anneal_steps
        self.lr, self.batch_size, self.max_epochs, self.patience = lr, batch_size, max_epochs, patience
        self.seed, self.valid_metric, self.device = seed, valid_metric, torch.device(device)
        self.log: list[dict] = []                                   # one entry per epoch

    def fit(self, train, valid=None) -> "MultiVAE":
        x = self._set_history(train)
        metric, k = self.valid_metric.split("@")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net = _VAE(x.shape[1], self.hidden, self.latent, self.dropout).to(self.device)
            self._order = np.random.default_rng(self.seed)
            self._noise = torch.Generator(device=self.device).manual_seed(self.seed)
            self._active = np.flatnonzero(np.diff(x.indptr) > 0)      # users with training items
            self._updates, self._beta = 0, 0.0
            out = fit_epochs(self, name="Multi-VAE", max_epochs=self.max_epochs, patience=self.patience,
                             device=self.device, valid=None if valid is None else (x, valid), ks=(int(k),),
                             metrics=(metric,), monitor=self.valid_metric)
        self.log, self.best_epoch = out["history"], out["best_epoch"]
        self.net.eval()
        return self

    # the training loop's parts (fitting.py)
    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)

    def epoch_batches(self) -> list[np.ndarray]:
        rows = self._order.permutation(self._active)
        return [rows[start:start + self.batch_size] for start in range(0, len(rows), self.batch_size)]

    def batch_loss(self, rows: np.ndarray):
        batch = torch.from_numpy(self.history[rows].toarray()).to(self.device)          # [B, n_items]
        self._beta = min(self.beta_max, self._updates / self.anneal_steps) if self.anneal_steps else self.beta_max
        self._updates += 1
        logits, mu, logvar = self.net(batch, self._noise)
        nll = -(F.log_softmax(logits, dim=1) * batch).sum(1).mean()
        kl = 0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1).sum(1).mean()
        return nll + self._beta * kl, {"nll": (nll, len(rows)), "kl": (kl, len(rows))}

    def epoch_info(self) -> dict:
        return {"beta": self._beta}    # of the epoch's last update

    def valid_scores(self, users: torch.Tensor) -> torch.Tensor:
        return self.score(users)

    @torch.no_grad()
    def score(self, users) -> torch.Tensor:
        x = self._dense_history(users).to(self.device)             # [B, n_items]; checks fitted first
        was_training = self.net.training
        self.net.eval()
        logits, _, _ = self.net(x)                                  # [B, n_items]
        self.net.train(was_training)
        return logits.float()


# ---------------------------------------------------------------------------- rating prediction
class MeanRating:
    """Predicts the global mean training rating."""

    def fit(self, users, items, ratings) -> "MeanRating":
        self.mu = float(np.mean(np.asarray(ratings, np.float64)))
        return self

    def predict(self, users, items) -> np.ndarray:
        return np.full(len(users), self.mu, np.float32)


class BiasRating:
    """r_ui ~ mu + b_u + b_i; minimises sum (r - mu - b_u - b_i)^2 + l2 (|b_u|^2 + |b_i|^2) by
    alternating exact updates b_u = sum_i (r - mu - b_i) / (l2 + n_u) (and likewise b_i).
    Unknown users/items (no training rating) get bias 0."""

    def __init__(self, l2: float = 10.0, iterations: int = 20):
        self.l2, self.iterations = l2, iterations

    def fit(self, users, items, ratings) -> "BiasRating":
        u, i = np.asarray(users, np.int64), np.asarray(items, np.int64)
        r = np.asarray(ratings, np.float64)
        self.mu = float(r.mean())
        nu, ni = int(u.max()) + 1, int(i.max()) + 1
        cu, ci = np.bincount(u, minlength=nu), np.bincount(i, minlength=ni)
        self.bu, self.bi = np.zeros(nu), np.zeros(ni)
        for _ in range(self.iterations):
            self.bu = np.bincount(u, r - self.mu - self.bi[i], nu) / (self.l2 + cu)
            self.bi = np.bincount(i, r - self.mu - self.bu[u], ni) / (self.l2 + ci)
        return self

    def predict(self, users, items) -> np.ndarray:
        u, i = np.asarray(users, np.int64), np.asarray(items, np.int64)
        bu = np.where(u < len(self.bu), self.bu[np.minimum(u, len(self.bu) - 1)], 0.0)
        bi = np.where(i < len(self.bi), self.bi[np.minimum(i, len(self.bi) - 1)], 0.0)
        return (self.mu + bu + bi).astype(np.float32)

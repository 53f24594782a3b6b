"""Ranking metrics: full-catalogue evaluation in memory-bounded user batches, and the sampled
(1 positive + n negatives) protocol, kept apart by name.

Full ranking (`evaluate`). For a user u with target items T_u (|T_u| >= 1) and seen items S_u:
  1. score every item, set S_u to -inf;
  2. rank all items by score, descending; ties go to the LOWER item index (exact, see
     `_order_keys`), so the ranking is a pure function of the scores;
  3. top-K = the first min(K, n_items) items of that ranking; position r = 1, 2, ...;
     hit_r = 1 if the item at r is in T_u and not in S_u (a seen item never counts as a hit,
     even when K reaches into the -inf tail).
Per user, with h = sum of hit_r over the top-K:
  recall@K       = h / min(K, |T_u|)         CLLM4Rec's definition (capped denominator)
  recall_full@K  = h / |T_u|                 the uncapped textbook variant
  ndcg@K         = DCG / IDCG, DCG = sum_r hit_r / log2(r + 1),
                   IDCG = sum_{r=1}^{min(K, |T_u|)} 1 / log2(r + 1)   (binary gains)
  hr@K           = 1 if h > 0 else 0         (hit rate; equals recall@K when |T_u| = 1)
  precision@K    = h / K
  mrr@K          = 1 / (position of the first hit) if it is within the top-K, else 0
  mrr_full       = 1 / (position of the first hit in the whole ranking); no cut-off
Each metric is the mean over the evaluated users: those with |T_u| >= 1 (others are skipped
and counted). |T_u| counts every target item, including any that is also seen (such an item
can never be hit; `evaluate` warns when the two overlap).

Sampled protocol (`evaluate_sampled`): each user has one held-out item and n sampled negatives
(items the user never interacted with, `sample_negatives`). Its metrics are reported under
`sampled_*` keys and are NOT comparable to full-ranking numbers.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from .progress import Progress

ScoreFn = Callable[[torch.Tensor], torch.Tensor]  # LongTensor[B] user indices -> FloatTensor[B, n_items]

FULL_METRICS = ("recall", "recall_full", "ndcg", "hr", "precision", "mrr", "mrr_full")
SAMPLED_METRICS = ("hr", "ndcg", "mrr")
DEFAULT_MAX_BATCH_BYTES = 256 * 2**20
VAL_KEYS = ("recall@20", "recall@40", "ndcg@100")   # model selection: early stopping on their sum (val/sum)

# Working set of the evaluator per user and catalogue item, in bytes, for float32 scores:
# the masked copy of the scores (4) + a float32 copy inside _order_keys (4) + its int64 order
# keys (8) + int32/bool temporaries (4 + 1), rounded up. float64 scores take a sort instead
# (~40 bytes). What score_fn allocates itself (its output included) is on top of this.
_BYTES_PER_SCORE = 24


# ---------------------------------------------------------------------------- batching
def batch_users(n_items: int, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> int:
    """Users per batch so that the evaluator's dense [B, n_items] working set stays within
    `max_batch_bytes` (at least one user)."""
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    return max(1, int(max_batch_bytes) // (n_items * _BYTES_PER_SCORE))


def _csr(m, name: str) -> sp.csr_matrix:
    if not sp.issparse(m):
        raise TypeError(f"{name} must be a scipy.sparse matrix (users x items), got {type(m).__name__}")
    m = sp.csr_matrix(m, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.sort_indices()
    return m


# ---------------------------------------------------------------------------- exact ordering
def _order_keys(scores: torch.Tensor) -> torch.Tensor:
    """int64 keys [B, n] whose descending order is the ranking: score descending, ties toward
    the lower item index. Exact: no epsilon is added anywhere.

    float32 (and float16/bfloat16, which float32 holds exactly): the float's bits are mapped to
    an int32 that sorts like the float (negative floats have their magnitude bits flipped),
    shifted into the high 32 bits, with (n - 1 - index) in the low 32 bits.
    float64: a stable descending sort gives each item its position, and key = n - 1 - position.
    """
    n = scores.shape[1]
    if scores.dtype == torch.float64:
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # [B, n]
        ranks_desc = torch.arange(n - 1, -1, -1, device=scores.device).expand_as(order)
        return torch.empty_like(order).scatter_(1, order, ranks_desc)
    # Bit operations only: arithmetic (even `x + 0.0`) flushes subnormals to zero when
    # torch.set_flush_denormal(True) is on (the training code turns it on for CPU speed).
    s = scores.to(torch.float32, copy=True)
    bits = s.view(torch.int32)               # [B, n], shares memory with s
    bits.masked_fill_(bits == -(2 ** 31), 0)  # -0.0 -> +0.0: the two zeros must tie
    bits ^= (bits < 0).to(torch.int32) * 0x7FFFFFFF
    keys = bits.to(torch.int64)
    del s, bits
    keys <<= 32
    keys |= torch.arange(n - 1, -1, -1, device=keys.device, dtype=torch.int64)  # lower index wins
    return keys


# ---------------------------------------------------------------------------- full ranking
def _check_scores(scores, users: torch.Tensor, n_items: int) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"score_fn must return a torch.Tensor, got {type(scores).__name__}")
    if scores.shape != (len(users), n_items):
        raise ValueError(f"score_fn returned shape {tuple(scores.shape)} for {len(users)} users; "
                         f"expected ({len(users)}, {n_items}) = (batch, n_items)")
    if not scores.is_floating_point():
        scores = scores.to(torch.float64)
    if torch.isnan(scores).any():
        bad = users[torch.isnan(scores).any(1).cpu()][:5].tolist()
        raise ValueError(f"score_fn returned NaN scores (e.g. users {bad}); fix the model or its inputs "
                         "before evaluating")
    return scores


def _ideal_dcg(k_max: int) -> torch.Tensor:
    """[k_max + 1] IDCG for 0..k_max relevant items with binary gains."""
    disc = 1.0 / torch.log2(torch.arange(2, k_max + 2, dtype=torch.float64))
    return torch.cat([torch.zeros(1, dtype=torch.float64), disc.cumsum(0)])


def _metric_names(metrics: Iterable[str], allowed: Sequence[str]) -> list[str]:
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in allowed]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(allowed)}")
    return metrics


def _ks(ks: Iterable[int]) -> list[int]:
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


class RankingSums:
    """The per-user sums of the full-ranking metrics (definitions in the module docstring) over
    batches of users, so a data-parallel evaluation can add each rank's `totals` and read the means
    from the sum; `evaluate` is this over every user in memory-bounded batches.

    seen:    users x items sparse; its non-zeros are removed from the ranking (set to -inf).
    target:  users x items sparse; its non-zeros are the relevant items.
    ks, metrics: as `evaluate`.
    """

    def __init__(self, seen: sp.spmatrix, target: sp.spmatrix, ks: Iterable[int] = (20, 40, 100),
                 metrics: Iterable[str] = ("recall", "ndcg"), warn_overlap: bool = True):
        self.seen, target = _csr(seen, "seen"), _csr(target, "target")
        if self.seen.shape != target.shape:
            raise ValueError(f"seen {self.seen.shape} and target {target.shape} must have the same shape (users x items)")
        self.n_users, self.n_items = target.shape
        self.ks, self.metrics = _ks(ks), _metric_names(metrics, FULL_METRICS)
        self.k_max = min(self.ks[-1], self.n_items)
        self.n_target = np.diff(target.indptr)                      # [n_users] |T_u|
        overlap = target.multiply(self.seen)
        if overlap.nnz and warn_overlap:
            warnings.warn(f"{overlap.nnz} target (user, item) pairs are also in `seen`; they stay in |T_u| but can "
                          "never be hit. Check that the split parts do not overlap.", stacklevel=3)
        self.hittable = _csr(target - overlap, "target")            # T_u minus S_u
        self.idcg = _ideal_dcg(self.k_max)                          # [k_max + 1]
        self.disc = 1.0 / torch.log2(torch.arange(2, self.k_max + 2, dtype=torch.float64))  # [k_max]
        self.keys = [f"{m}@{k}" for m in self.metrics if m != "mrr_full" for k in self.ks]
        self.keys += ["mrr_full"] * ("mrr_full" in self.metrics)
        self.totals = torch.zeros(len(self.keys) + 1, dtype=torch.float64)   # the sums, then the user count

    def users(self, users=None) -> tuple[np.ndarray, int]:
        """(the users among `users` (default: all) that have a target, how many had none)."""
        users = np.arange(self.n_users) if users is None else np.asarray(users, dtype=np.int64).reshape(-1)
        if len(users) and (users.min() < 0 or users.max() >= self.n_users):
            raise ValueError(f"users must be indices in [0, {self.n_users}), got range [{users.min()}, {users.max()}]")
        keep = self.n_target[users] > 0
        return users[keep], int((~keep).sum())

    def add(self, u: np.ndarray, scores: torch.Tensor) -> None:
        """Adds users `u` (each with a target) scored [len(u), n_items] to the sums."""
        u_t = torch.as_tensor(u, dtype=torch.long)
        scores = _check_scores(scores, u_t, self.n_items) + 0.0     # own copy: never write into the caller's
        rows, cols = _batch_coo(self.seen, u)
        scores[rows.to(scores.device), cols.to(scores.device)] = -math.inf
        keys = _order_keys(scores)                                  # [B, n] int64
        del scores
        top = torch.topk(keys, self.k_max, dim=1, sorted=True).indices   # [B, k_max] item indices
        hits = _membership(self.hittable, u, top).cpu()             # [B, k_max] bool
        t = torch.as_tensor(self.n_target[u], dtype=torch.float64)  # [B]
        h_cum = hits.to(torch.float64).cumsum(1)                    # [B, k_max]
        dcg_cum = (hits.to(torch.float64) * self.disc).cumsum(1)    # [B, k_max]
        first = torch.where(hits.any(1), hits.to(torch.int8).argmax(1) + 1, 0)  # [B] 1-based, 0 = none
        sums = []
        for m in self.metrics:
            if m == "mrr_full":
                continue
            for k in self.ks:
                kc = min(k, self.n_items)
                h = h_cum[:, kc - 1]
                cap = torch.minimum(t, torch.tensor(float(k), dtype=torch.float64))
                if m == "recall":
                    v = h / cap
                elif m == "recall_full":
                    v = h / t
                elif m == "ndcg":
                    v = dcg_cum[:, kc - 1] / self.idcg[cap.long().clamp(max=self.k_max)]
                elif m == "hr":
                    v = (h > 0).to(torch.float64)
                elif m == "precision":
                    v = h / k
                else:  # mrr@K
                    v = torch.where((first > 0) & (first <= kc), 1.0 / first.clamp(min=1).double(), 0.0)
                sums.append(float(v.sum()))
        if "mrr_full" in self.metrics:
            sums.append(_mrr_full_batch(keys, self.hittable, u))
        self.totals += torch.tensor([*sums, len(u)], dtype=torch.float64)

    def means(self, totals: torch.Tensor | None = None) -> dict[str, float]:
        """The metric means from `totals` (default: this object's own; pass the sum over ranks),
        with "n_users_evaluated"."""
        totals = self.totals if totals is None else totals.to(torch.float64).cpu()
        n = int(totals[-1])
        out = {k: float(totals[i]) / n if n else float("nan") for i, k in enumerate(self.keys)}
        out["n_users_evaluated"] = n
        return out


def evaluate(score_fn: ScoreFn, seen: sp.spmatrix, target: sp.spmatrix, ks: Iterable[int] = (20, 40, 100),
             metrics: Iterable[str] = ("recall", "ndcg"), *, users=None,
             max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES, batch_size: int | None = None,
             device: str | torch.device = "cpu", label: str | None = None) -> dict[str, float]:
    """Full-catalogue ranking metrics (definitions in the module docstring).

    score_fn:  LongTensor[B] of user indices -> [B, n_items] scores (any float dtype, on any
               device; higher is better). Called once per batch, batches in user order.
    seen:      users x items sparse; its non-zeros are removed from the ranking (set to -inf).
               Validation: the training matrix; test: training + validation.
    target:    users x items sparse; its non-zeros are the relevant items.
    ks:        cut-offs; K > n_items is clipped to n_items (the key keeps the requested K).
    metrics:   any of FULL_METRICS; keys are f"{metric}@{K}", except "mrr_full".
    users:     the user indices to evaluate (default: all rows); those without targets are skipped.
    max_batch_bytes / batch_size: the evaluator never holds more than one batch of dense
               scores; the batch size is derived from the byte bound unless given.
    label:     show progress under this name (progress.py: a bar, or a log line a minute).
    Returns the metric means plus "n_users_evaluated" and "n_users_skipped".
    """
    sums = RankingSums(seen, target, ks, metrics)
    evaluated, n_skipped = sums.users(users)
    bs = batch_size or batch_users(sums.n_items, max_batch_bytes)
    progress = Progress(len(evaluated), label, unit="users") if label else None
    for start in range(0, len(evaluated), bs):
        u = evaluated[start:start + bs]
        with torch.no_grad():
            scores = score_fn(torch.as_tensor(u, dtype=torch.long).to(device))
        sums.add(u, scores.to(device) if isinstance(scores, torch.Tensor) else scores)
        del scores
        if progress:
            progress.update(len(u))
    if progress:
        progress.close()
    return {**sums.means(), "n_users_skipped": n_skipped}


def _batch_coo(m: sp.csr_matrix, u: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(local row, column) of the non-zeros of rows `u` of a CSR matrix, touching only those rows."""
    sub = m[u]                                                      # CSR [B, n], rows in batch order
    rows = np.repeat(np.arange(len(u)), np.diff(sub.indptr))
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(sub.indices, dtype=torch.long)


def _membership(m: sp.csr_matrix, u: np.ndarray, items: torch.Tensor) -> torch.Tensor:
    """[B, K] bool: is items[b, j] a non-zero of row u[b]? Binary search on flattened
    (row, item) keys, so no dense [B, n_items] matrix is built."""
    rows, cols = _batch_coo(m, u)                                   # sorted by (row, col): CSR is sorted
    n_items = m.shape[1]
    keys = (rows * n_items + cols).to(items.device)                 # [nnz] ascending
    if keys.numel() == 0:
        return torch.zeros(items.shape, dtype=torch.bool, device=items.device)
    q = torch.arange(len(u), device=items.device)[:, None] * n_items + items   # [B, K]
    pos = torch.searchsorted(keys, q).clamp(max=keys.numel() - 1)
    return keys[pos] == q


def _mrr_full_batch(keys: torch.Tensor, hittable: sp.csr_matrix, u: np.ndarray) -> float:
    """Sum over the batch of 1 / (1 + number of items ranked before the best hittable target)."""
    rows, cols = _batch_coo(hittable, u)
    rows, cols = rows.to(keys.device), cols.to(keys.device)
    best = torch.full((len(u),), torch.iinfo(torch.int64).min, dtype=torch.int64, device=keys.device)
    best = best.scatter_reduce(0, rows, keys[rows, cols], reduce="amax")          # [B]
    has = torch.zeros(len(u), dtype=torch.bool, device=keys.device)
    has[rows] = True
    ahead = (keys > best[:, None]).sum(1)                                          # [B]
    return float(torch.where(has, 1.0 / (ahead + 1).double(), 0.0).sum())


def evaluate_split(score_fn: ScoreFn, ds, part: str = "test", **kwargs) -> dict[str, float]:
    """`evaluate` on a split Dataset: part "valid" masks training items; part "test" masks
    training and validation items (the CLLM4Rec / RecBole protocol)."""
    if part not in ("valid", "test"):
        raise ValueError(f"part must be 'valid' or 'test', got {part!r}")
    seen = ds.matrix("train") if part == "valid" else ds.matrix("train", "valid")
    return evaluate(score_fn, seen, ds.matrix(part), **kwargs)


# ---------------------------------------------------------------------------- sampled protocol
def sample_negatives(interacted: sp.spmatrix, users, n_negatives: int = 99, seed: int = 0) -> np.ndarray:
    """[len(users), n_negatives] int64: for each user, distinct items drawn uniformly from the
    items the user never interacted with (non-zeros of `interacted`: pass all split parts).

    User u's draw depends only on (seed, u), not on which other users are in the list.
    """
    m = _csr(interacted, "interacted")
    n_items = m.shape[1]
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    out = np.empty((len(users), n_negatives), dtype=np.int64)
    for row, u in enumerate(users):
        own = m.indices[m.indptr[u]:m.indptr[u + 1]]                # sorted
        free = n_items - len(own)
        if free < n_negatives:
            raise ValueError(f"user {u} interacted with {len(own)} of {n_items} items: only {free} can be "
                             f"negatives, {n_negatives} requested. Use fewer negatives.")
        rng = np.random.default_rng([seed, int(u)])
        got = np.empty(0, dtype=np.int64)
        while len(got) < n_negatives:                               # rejection sampling, rarely > 1 round
            draw = rng.integers(0, n_items, size=2 * n_negatives + 8)
            draw = draw[~np.isin(draw, own)]
            got = np.concatenate([got, draw])
            _, first = np.unique(got, return_index=True)
            got = got[np.sort(first)]                               # distinct, in draw order
        out[row] = got[:n_negatives]
    return out


def sampled_candidates(interacted: sp.spmatrix, target: sp.spmatrix, n_negatives: int = 99,
                       seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate lists for the sampled protocol: (users LongTensor[U], candidates LongTensor[U, 1 + n])
    with the held-out item in column 0. Negatives: `sample_negatives` over `interacted` (pass all
    split parts) plus `target`. Every user with a target must have exactly one (leave-one-out);
    users without one are left out."""
    target = _csr(target, "target")
    n_target = np.diff(target.indptr)
    if (n_target > 1).any():
        bad = np.flatnonzero(n_target > 1)[:5].tolist()
        raise ValueError(f"the sampled protocol needs one held-out item per user; users {bad} have more. "
                         "Split with split_leave_one_out, or use the full-ranking `evaluate`.")
    users = np.flatnonzero(n_target == 1)
    positives = target.indices[target.indptr[users]]
    # the held-out item is never a negative, even if `interacted` leaves the test part out
    negatives = sample_negatives(_csr(interacted, "interacted") + target, users, n_negatives, seed)
    cand = np.concatenate([positives[:, None], negatives], axis=1)
    return torch.as_tensor(users, dtype=torch.long), torch.as_tensor(cand, dtype=torch.long)


def evaluate_sampled(score_fn: ScoreFn, users, candidates, ks: Iterable[int] = (1, 5, 10),
                     metrics: Iterable[str] = ("hr", "ndcg"), *, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
                     batch_size: int | None = None, device: str | torch.device = "cpu") -> dict[str, float]:
    """Sampled ranking: the held-out item (candidates[:, 0]) ranked among the other candidates.

    rank = 1 + number of candidates with a higher score, or an equal score and a lower item
    index (the same tie rule as `evaluate`). Per user: sampled_hr@K = [rank <= K],
    sampled_ndcg@K = [rank <= K] / log2(rank + 1), sampled_mrr = 1 / rank; means over users.
    score_fn is the full-catalogue one of `evaluate`; its scores are gathered at the candidates.
    """
    users = torch.as_tensor(users, dtype=torch.long).reshape(-1)
    candidates = torch.as_tensor(candidates, dtype=torch.long)
    if candidates.ndim != 2 or candidates.shape[0] != len(users):
        raise ValueError(f"candidates must be [n_users, n_candidates] with one row per user; got "
                         f"{tuple(candidates.shape)} for {len(users)} users")
    ks, metrics = _ks(ks), _metric_names(metrics, SAMPLED_METRICS)
    parts, bs, start = [], batch_size, 0
    while start < len(users):
        u = users[start:start + (bs or 1)]                          # one user first when bs is unknown
        with torch.no_grad():
            scores = score_fn(u.to(device))
        scores = _check_scores(scores, u, scores.shape[-1])
        bs = bs or batch_users(scores.shape[1], max_batch_bytes)
        parts.append(scores.gather(1, candidates[start:start + len(u)].to(scores.device)).cpu())  # [B, C]
        start += len(u)
    s = torch.cat(parts) if parts else torch.empty(0, candidates.shape[1])
    return sampled_metrics(s, candidates, ks, metrics)


def sampled_metrics(candidate_scores, candidates, ks: Iterable[int] = (1, 5, 10),
                    metrics: Iterable[str] = ("hr", "ndcg")) -> dict[str, float]:
    """`evaluate_sampled` from scores already gathered at the candidates: [U, C] (column 0 the
    held-out item), for when the full-catalogue scores were computed anyway (CandidateRecorder)."""
    s = torch.as_tensor(candidate_scores)
    c = torch.as_tensor(candidates, dtype=torch.long)
    if s.shape != c.shape:
        raise ValueError(f"candidate_scores {tuple(s.shape)} and candidates {tuple(c.shape)} must match")
    ks, metrics = _ks(ks), _metric_names(metrics, SAMPLED_METRICS)
    pos_s, pos_i = s[:, :1], c[:, :1]
    ahead = (s[:, 1:] > pos_s) | ((s[:, 1:] == pos_s) & (c[:, 1:] < pos_i))
    rank = 1 + ahead.sum(1).double()                                # [U]
    n = len(rank)
    out: dict[str, float] = {}
    for m in metrics:
        if m == "mrr":
            continue
        for k in ks:
            inside = (rank <= k).double()
            v = inside if m == "hr" else inside / torch.log2(rank + 1)
            out[f"sampled_{m}@{k}"] = float(v.sum()) / n if n else float("nan")
    if "mrr" in metrics:
        out["sampled_mrr"] = float((1.0 / rank).sum()) / n if n else float("nan")
    out["sampled_n_candidates"] = int(c.shape[1])
    out["n_users_evaluated"] = n
    return out


class CandidateRecorder:
    """A score_fn wrapper for `evaluate` that also keeps each listed user's scores at its
    candidates, so the sampled protocol needs no second scoring pass (`sampled_metrics`)."""

    def __init__(self, score_fn: ScoreFn, users, candidates):
        self.score_fn = score_fn
        self.users = torch.as_tensor(users, dtype=torch.long).reshape(-1)
        self.candidates = torch.as_tensor(candidates, dtype=torch.long)
        n = int(self.users.max()) + 1 if len(self.users) else 0
        self._row = torch.full((n,), -1, dtype=torch.long)
        self._row[self.users] = torch.arange(len(self.users))
        self.scores = torch.full(self.candidates.shape, float("nan"), dtype=torch.float64)   # [U, C], exact for any dtype

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        scores = self.score_fn(u)                                   # [B, n_items]
        uc = u.cpu()
        inside = uc < len(self._row)
        rows = torch.full_like(uc, -1)
        rows[inside] = self._row[uc[inside]]
        have = rows >= 0
        if have.any():
            r = rows[have]
            self.scores[r] = scores[have.to(scores.device)].gather(
                1, self.candidates[r].to(scores.device)).double().cpu()
        return scores

    def sampled(self, ks: Iterable[int] = (1, 5, 10), metrics: Iterable[str] = ("hr", "ndcg")) -> dict[str, float]:
        missing = torch.isnan(self.scores[:, 0])
        if missing.any():
            raise RuntimeError(f"{int(missing.sum())} sampled users were never scored (first: "
                               f"{self.users[missing][:5].tolist()}); score them through this recorder first")
        return sampled_metrics(self.scores, self.candidates, ks, metrics)


# ---------------------------------------------------------------------------- rating prediction
def rating_errors(predicted, true) -> dict[str, float]:
    """RMSE = sqrt(mean (p - r)^2) and MAE = mean |p - r| over rated pairs, plus their count."""
    p, r = np.asarray(predicted, np.float64).reshape(-1), np.asarray(true, np.float64).reshape(-1)
    if p.shape != r.shape:
        raise ValueError(f"{p.shape[0]} predictions for {r.shape[0]} ratings")
    if not len(r):
        raise ValueError("no rated pairs to evaluate")
    e = p - r
    return {"rmse": float(np.sqrt(np.mean(e * e))), "mae": float(np.mean(np.abs(e))), "n_ratings": int(len(r))}

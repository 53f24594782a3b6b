"""SASRec (Kang & McAuley, ICDM 2018): a causal transformer over item ids, trained to predict
the next item at every position, with full-softmax cross-entropy over the whole catalogue
(SASRec+ / "SASRec with CE", Klenitskiy & Vasilev, RecSys 2023) or sampled softmax with
uniform negatives (SASRec+SS, as in eSASRec's benchmark).

Model. For an input sequence s_1..s_L (L <= max_len, the user's most recent items):
  x_t   = Dropout(E[s_t] + P[pos_t])                 E: [n_items + 1, d] item table (last row =
                                                      padding), P: [max_len, d] learned positions
  x     = Block_1(...Block_n(x)), then LayerNorm      pre-LN blocks:
            x = x + Dropout(Attn(LN(x)))              causal multi-head self-attention
            x = x + Dropout(FF(LN(x)))                FF = Linear(d, ff_mult d), GELU, Dropout, Linear
  score(t, i) = x_t . E[i]                            tied output; over all n_items items
Position t sees items 1..t only. pos_t counts from the start of the window ("forward": the
hidden state of a prefix is exactly what scoring that prefix alone gives) or back from its
end ("inverse", as in the original SASRec's left padding and RecTools).

Training. Each user's training items in time order; the window is the last max_len + 1 of
them: inputs w[:-1], targets w[1:] (every prefix predicts its next item; the earliest items of
histories longer than max_len + 1 are not used, as in SASRec). Loss: mean over the real (non-
padding) target positions of the batch of -log softmax(scores)_target, over the full
catalogue (loss="ce") or over the target and `n_negatives` uniformly drawn items per position
(loss="sampled"; a negative equal to the target is masked out). Sequences are right-padded
and batched by length (random buckets of similar lengths, batch order shuffled), so short
histories do not pay for long ones and, with the causal mask, no real position ever attends to
padding. Adam (fused), constant learning rate. Lightning's loop (fitting.py): after every epoch
(every `eval_every`), validation NDCG@10 / HR@10 by full ranking (input: the training items,
training items masked); training stops after `patience` validations without a better NDCG@10
(or at the end of the epoch past `max_seconds`) and the best epoch's weights are restored.

Scoring (leave-one-out protocol). `score(users, part)`: part "valid" feeds the user's training
items, part "test" the training + validation items (the last max_len of them, time order), and
scores every item from the last position's hidden state. `scorer(part)` returns that as a
one-argument score_fn for `metrics.evaluate_split(score_fn, ds, part)`; the harness masks the
seen items (valid: train; test: train + valid). A user with no input items gets the output of a
lone padding token at position 0 (the same vector for all such users).

Speed on CPU: the full-softmax loss is one fused function (`_LinearCrossEntropy`: logits,
in-place softmax and both gradients per row chunk, no autograd graph over the [P, n_items]
logits); bf16=True runs its three matmuls and the softmax in bf16 (AVX512-BF16 / AMX CPUs: ~2x
faster epochs; on Beauty the loss and validation curves match fp32's to 3-4 decimals). Scoring
is always fp32 so rankings are exact. On a small or shared machine, torch.set_num_threads(1) is
often faster than more threads (the matrices are small; waiting threads stall each other).

Determinism: all randomness (initialisation, dropout, batch order, negatives) comes from
`seed`; the global torch RNG is left untouched (a forked RNG is used). Results are bit-exact
for a given seed, torch version and thread count.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .fitting import fit_epochs

__all__ = ["SASRec"]

PARTS_INPUT = {"valid": ("train",), "test": ("train", "valid")}  # scoring part -> input parts


# ---------------------------------------------------------------------------- network
class _Block(nn.Module):
    """Pre-LN transformer block with causal self-attention."""

    def __init__(self, dim: int, n_heads: int, dropout: float, ff_mult: int):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim ({dim}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.dropout = n_heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:            # x: [B, L, d]
        b, L, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, L, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)  # [B, h, L, d/h]
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, L, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class _SASRecNet(nn.Module):
    def __init__(self, n_items: int, dim: int, max_len: int, n_layers: int, n_heads: int, dropout: float,
                 ff_mult: int, positions: str, init_std: float):
        super().__init__()
        self.n_items, self.positions = n_items, positions
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=n_items)  # row n_items = padding
        self.pos = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(dim, n_heads, dropout, ff_mult) for _ in range(n_layers))
        self.norm = nn.LayerNorm(dim)
        for m in self.modules():                                    # BERT-style init (as RecBole)
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=init_std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.item.weight[n_items].zero_()

    @property
    def item_table(self) -> torch.Tensor:
        return self.item.weight[:self.n_items]                      # [n_items, d]

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """seq: [B, L] right-padded item indices (padding = n_items); lengths: [B] >= 1.
        Returns the hidden states [B, L, d] (padding positions hold junk)."""
        L = seq.shape[1]
        t = torch.arange(L, device=seq.device)
        if self.positions == "forward":
            pos = t.expand(seq.shape[0], L)
        else:                                                       # inverse: last item = 0
            pos = (lengths[:, None] - 1 - t).clamp(min=0)
        x = self.drop(self.item(seq) + self.pos(pos))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


# ---------------------------------------------------------------------------- full-softmax loss
class _LinearCrossEntropy(torch.autograd.Function):
    """mean_p [logsumexp_i (h_p . W_i) - h_p . W_{y_p}] and its gradients, computed together in
    row chunks with in-place softmax: per chunk, logits G = h W^T -> G = softmax(G) - onehot(y)
    -> grad_h = G W, grad_W += G^T h. The same numbers as F.cross_entropy(h @ W.T, y) (fp32) in
    fewer passes over the [P, n_items] logits (the loss is always differentiated right after
    the forward pass in training). mm_dtype=bfloat16: the three matmuls and the softmax run
    in bf16 (fp32 accumulation in the matmuls and in the row sums), as under bf16 autocast."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, table: torch.Tensor, y: torch.Tensor, chunk: int, mm_dtype: torch.dtype):
        n = h.shape[0]                                              # h: [P, d], table: [N, d], y: [P]
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros_like(table)
        total = 0.0
        h_mm, w_mm = h.to(mm_dtype), table.to(mm_dtype)             # matmul operands (bf16 or fp32)
        for s in range(0, n, chunk):
            hc, yc = h_mm[s:s + chunk], y[s:s + chunk]
            rows = torch.arange(len(yc), device=h.device)
            g = hc @ w_mm.T                                         # [c, N] logits
            top = g.amax(1, keepdim=True)                           # [c, 1]
            picked = g[rows, yc].float()                            # [c]
            g.sub_(top).exp_()                                      # exp(logit - max)
            z = g.sum(1).float()                                    # [c] partition function / exp(max)
            total += float((top.squeeze(1).float() + z.log() - picked).sum())
            g.mul_((1.0 / z)[:, None].to(g.dtype))                  # softmax
            g[rows, yc] -= 1.0                                      # d loss_p / d logits_p
            grad_h[s:s + chunk] = g @ w_mm
            grad_w += g.T @ hc
        ctx.save_for_backward(grad_h, grad_w)
        ctx.n = n
        return h.new_tensor(total / n)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_out / ctx.n
        return grad_h * scale, grad_w * scale, None, None, None


# ---------------------------------------------------------------------------- sequences
def _pack(seqs: list[np.ndarray], width: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Each sequence's last `width` items, left-aligned, padded on the right with `pad`.
    Returns ([n, width] int64, [n] lengths)."""
    out = np.full((len(seqs), width), pad, dtype=np.int64)
    lengths = np.zeros(len(seqs), dtype=np.int64)
    for r, s in enumerate(seqs):
        s = np.asarray(s)[-width:] if width else np.asarray(s)[:0]
        out[r, :len(s)] = s
        lengths[r] = len(s)
    return out, lengths


class SASRec:
    """SASRec with full-softmax cross-entropy (loss="ce", default) or sampled softmax
    (loss="sampled", `n_negatives` uniform negatives per position). Definition: module docstring.

    Defaults (the `baseline/sasrec` config; config.py registers them) are the eSASRec benchmark's
    SASRec settings for Beauty (blondered/transformer_benchmark README: 1 block, 1 head, 64 dims,
    dropout 0.2, max length 50, constant lr 1e-3; RecTools' default batch 128) with full softmax
    instead of their 256 sampled negatives (loss="sampled" gives their SASRec+SS), and early
    stopping on validation NDCG@10 (patience 20; theirs 50).
    """

    def __init__(self, n_layers: int = 1, n_heads: int = 1, dim: int = 64, max_len: int = 50,
                 dropout: float = 0.2, ff_mult: int = 1, positions: str = "forward", lr: float = 1e-3,
                 weight_decay: float = 0.0, batch_size: int = 128, max_epochs: int = 200, patience: int = 20,
                 loss: str = "ce", n_negatives: int = 256, init_std: float = 0.02, seed: int = 0,
                 device: str = "cpu", bf16: bool = False, eval_batch_size: int | None = None,
                 ce_chunk: int = 4096, eval_every: int = 1, max_seconds: float | None = None,
                 verbose: bool = False):
        if loss not in ("ce", "sampled"):
            raise ValueError(f"loss must be 'ce' (full softmax) or 'sampled', got {loss!r}")
        if positions not in ("forward", "inverse"):
            raise ValueError(f"positions must be 'forward' or 'inverse', got {positions!r}")
        self.n_layers, self.n_heads, self.dim, self.max_len = n_layers, n_heads, dim, max_len
        self.dropout, self.ff_mult, self.positions = dropout, ff_mult, positions
        self.lr, self.weight_decay, self.batch_size = lr, weight_decay, batch_size
        self.max_epochs, self.patience = max_epochs, patience
        self.loss, self.n_negatives, self.init_std, self.seed = loss, n_negatives, init_std, seed
        self.device, self.bf16, self.verbose = torch.device(device), bf16, verbose
        self.eval_batch_size = eval_batch_size
        self.ce_chunk, self.eval_every, self.max_seconds = ce_chunk, max(1, int(eval_every)), max_seconds
        self.history: list[dict] = []                               # one entry per epoch
        self.net: _SASRecNet | None = None
        self.inputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # part -> (padded [U, max_len], lengths [U])
        self.best_epoch = -1
        self.stopped = None                                         # why training ended

    def config(self) -> dict:
        keys = ("n_layers", "n_heads", "dim", "max_len", "dropout", "ff_mult", "positions", "lr", "weight_decay",
                "batch_size", "max_epochs", "patience", "loss", "n_negatives", "init_std", "seed", "bf16", "eval_every",
                "max_seconds")
        return {k: getattr(self, k) for k in keys}

    # ------------------------------------------------------------------ fitting
    def fit(self, train, valid=None) -> "SASRec":
        """SASRec needs the items' time order, which a users x items matrix has lost: pass the
        split Dataset (`fit(ds)` is `fit_dataset(ds)`)."""
        if hasattr(train, "histories") and hasattr(train, "matrix"):
            return self.fit_dataset(train)
        raise TypeError("SASRec is a sequence model: call fit_dataset(ds) (or fit(ds)) with the split "
                        f"cllm4rec.data.Dataset, not a {type(train).__name__}")

    def fit_dataset(self, ds, valid: bool = True) -> "SASRec":
        """Train on ds's training sequences; early-stop on validation NDCG@10 (if `valid` and the
        dataset has validation items), restore the best epoch. Returns self."""
        self.n_users, self.n_items = ds.n_users, ds.n_items
        self.set_inputs(ds)
        train = ds.histories("train")
        windows = [s[-(self.max_len + 1):] for s in train if len(s) >= 2]
        self._inp, self._len = _pack([w[:-1] for w in windows], self.max_len, self.n_items)  # [U, L], [U]
        self._tgt, _ = _pack([w[1:] for w in windows], self.max_len, -100)                   # [U, L]
        use_valid = valid and ds.matrix("valid").nnz > 0
        torch.set_flush_denormal(True)                              # process-wide: denormal Adam moments are slow
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net = _SASRecNet(self.n_items, self.dim, self.max_len, self.n_layers, self.n_heads, self.dropout,
                                  self.ff_mult, self.positions, self.init_std).to(self.device)
            self._rng = np.random.default_rng(self.seed)                          # batch order
            self._gen = torch.Generator(device=self.device).manual_seed(self.seed)  # negatives
            out = fit_epochs(self, name="SASRec", max_epochs=self.max_epochs, patience=self.patience,
                             device=self.device, valid=(ds.matrix("train"), ds.matrix("valid")) if use_valid else None,
                             ks=(10,), metrics=("ndcg", "hr"), monitor="ndcg@10", eval_every=self.eval_every,
                             max_seconds=self.max_seconds, verbose=self.verbose)
        self.history, self.best_epoch, self.stopped = out["history"], out["best_epoch"], out["stopped"]
        self.net.eval()
        return self

    # the training loop's parts (fitting.py)
    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay,
                                fused=True)                         # one kernel per step: far faster on CPU

    def epoch_batches(self) -> list[np.ndarray]:
        return self._batches(self._rng)

    def batch_loss(self, rows: np.ndarray):
        loss, n = self._loss(rows, self._gen)
        return loss, {"loss": (loss, n)}                           # the epoch's mean over target positions

    def valid_scores(self, users: torch.Tensor) -> torch.Tensor:
        return self.score(users, part="valid")

    def set_inputs(self, ds) -> None:
        """Scoring inputs from ds: part "valid" <- train items, "test" <- train + valid items."""
        self.n_users, self.n_items = ds.n_users, ds.n_items
        self.inputs = {part: _pack(ds.histories(*parts), self.max_len, self.n_items)
                       for part, parts in PARTS_INPUT.items()}

    def _batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Row indices per batch: a random permutation cut into buckets of 64 batches, each
        bucket sorted by length (stable) and cut into batches; the batches are shuffled."""
        order = rng.permutation(len(self._len))
        bucket = self.batch_size * 64
        batches = []
        for start in range(0, len(order), bucket):
            chunk = order[start:start + bucket]
            chunk = chunk[np.argsort(self._len[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def _loss(self, rows: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        L = int(self._len[rows].max())
        seq = torch.from_numpy(self._inp[rows, :L]).to(self.device)     # [B, L]
        tgt = torch.from_numpy(self._tgt[rows, :L]).to(self.device)     # [B, L], -100 = padding
        lengths = torch.from_numpy(self._len[rows]).to(self.device)     # [B]
        real = tgt >= 0
        h = self.net(seq, lengths)[real]                                # [P, d] real positions only
        y = tgt[real]                                                   # [P]
        table = self.net.item_table                                     # [n_items, d]
        if self.loss == "ce":                                           # full softmax, fused
            mm_dtype = torch.bfloat16 if self.bf16 else torch.float32
            return _LinearCrossEntropy.apply(h, table, y, self.ce_chunk, mm_dtype), len(y)
        neg = torch.randint(0, self.n_items, (len(y), self.n_negatives), generator=gen, device=self.device)  # [P, k]
        pos = (h * table[y]).sum(-1, keepdim=True)                      # [P, 1]
        negs = torch.einsum("pd,pkd->pk", h, table[neg])                # [P, k]
        negs = negs.masked_fill(neg == y[:, None], -math.inf)           # a negative equal to the target
        logits = torch.cat([pos, negs], 1)                              # [P, 1 + k]
        return F.cross_entropy(logits, torch.zeros_like(y)), len(y)

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score_sequences(self, seqs: list) -> torch.Tensor:
        """[len(seqs), n_items] float32 next-item scores for arbitrary item sequences (time
        order; the last max_len items are used)."""
        inp, lengths = _pack([np.asarray(s, dtype=np.int64) for s in seqs], self.max_len, self.n_items)
        return self._score_packed(inp, lengths)

    def _last_hidden(self, inp: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
        """[B, d] hidden state at each sequence's last item. The transformer runs on groups of
        `eval_batch_size` sequences of similar length (sorted), each trimmed to its longest."""
        if self.net is None:
            raise RuntimeError("SASRec is not fitted: call .fit_dataset(ds) first")
        lengths = np.maximum(lengths, 1)                           # empty input: a lone padding token
        order = np.argsort(lengths, kind="stable")
        last = torch.empty(len(lengths), self.dim, device=self.device)
        bs = self.eval_batch_size or 256
        for i in range(0, len(order), bs):
            rows = order[i:i + bs]
            L = int(lengths[rows].max())
            seq = torch.from_numpy(np.ascontiguousarray(inp[rows, :L])).to(self.device)  # [b, L]
            lens = torch.from_numpy(lengths[rows]).to(self.device)                        # [b]
            h = self.net(seq, lens)                                                       # [b, L, d]
            last[torch.from_numpy(rows).to(self.device)] = h[torch.arange(len(rows), device=self.device), lens - 1]
        return last

    def _score_packed(self, inp: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
        was_training = self.net.training if self.net is not None else False
        try:
            self.net.eval() if self.net is not None else None
            with torch.no_grad():                                   # fp32: exact rankings
                return self._last_hidden(inp, lengths) @ self.net.item_table.T     # [B, n_items]
        finally:
            self.net.train(was_training) if self.net is not None else None

    @torch.no_grad()
    def score(self, users, part: str = "valid") -> torch.Tensor:
        """users: LongTensor[B] -> [B, n_items] float32. part "valid": input = the user's training
        items; part "test": training + validation items (leave-one-out protocol)."""
        if part not in self.inputs:
            raise ValueError(f"part must be one of {sorted(PARTS_INPUT)}, got {part!r} "
                             "(or the model has no inputs: call fit_dataset / set_inputs)")
        u = torch.as_tensor(users).reshape(-1).cpu().numpy().astype(np.int64)
        if len(u) and (u.min() < 0 or u.max() >= self.n_users):
            raise ValueError(f"user indices must be in [0, {self.n_users}), got [{u.min()}, {u.max()}]")
        inp, lengths = self.inputs[part]
        return self._score_packed(inp[u], lengths[u])

    def scorer(self, part: str):
        """A score_fn (LongTensor[B] -> [B, n_items]) for `metrics.evaluate_split(fn, ds, part)` /
        `metrics.evaluate`. Unlike the matrix baselines the model object itself is not callable:
        which part's input to use must be explicit."""
        if part not in PARTS_INPUT:
            raise ValueError(f"part must be one of {sorted(PARTS_INPUT)}, got {part!r}")
        return lambda users: self.score(users, part=part)

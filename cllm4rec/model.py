"""CLLM4Rec as a plain torch module: one frozen backbone, two sets of ID embeddings.

    ids  [B, T]  in the layout of vocab.py: [vocabulary | users | items]
      -> embed(side)           words from the frozen vocabulary table, users/items from the
                               side's own tables (collaborative or content)
      -> backbone body         one forward pass over prompt + main text (inputs_embeds)
      -> head, only where the main text is:
           collaborative: item head tied to the side's item embeddings, softmax over J items
           content:       the backbone's own vocabulary head, softmax over N words
           recommendation: the item head at the prompt's last token, multinomial over J items
           rating:        the vocabulary head restricted to the K rating-level tokens, at the
                          prompt's last token; prediction = expected level value

As published only the four ID tables train and the backbone is frozen; `backbone_tuning` (tuning.py)
adds LoRA adapters or trains every backbone weight. No Lightning or Hydra here, so trained
embeddings load with plain torch (see `CLLM4Rec.id_embeddings`).
"""
from __future__ import annotations

import os
import shutil
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .paths import inductor_cache
from .tuning import LoraSettings, prepare_backbone
from .vocab import Vocab

SIDES = ("collaborative", "content")


def compile_unavailable() -> str | None:
    """Why torch.compile cannot build CPU kernels here (inductor compiles C++ for the CPU), or None."""
    if torch.cuda.is_available():
        return None
    names = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    if any(n and shutil.which(n) for n in names):
        return None
    return "no C++ compiler found (g++, c++, clang++ or $CXX), which inductor needs for CPU kernels"


class CLLM4Rec(nn.Module):
    def __init__(self, backbone: nn.Module, vocab: Vocab, init_std: float = ModelConfig.init_std,
                 item_prior: torch.Tensor | None = None, id_input_scale: float = 1.0,
                 backbone_tuning: str = "frozen", lora: LoraSettings | None = None,
                 backbone_dropout: float | None = None, sparse_user_rows: bool = False):
        """item_prior: optional [J] training item counts. Given, the collaborative item head
        gets a trainable bias initialised to the smoothed log item frequency, so its softmax
        starts at the popularity distribution instead of uniform and the tied embeddings
        learn what differs from it (a head-bias init as in Karpathy's "init well"; the paper's
        head has no bias: pass None).

        id_input_scale: user/item rows are multiplied by it where they enter the backbone, not
        in the tied item head (1: the paper, one vector in and out). The two ends want different
        scales: the head's logits are h . e_j with large h, so rows must start small (init_std),
        but rows far smaller than the word embeddings are nearly invisible to the backbone, whose
        hidden state then barely depends on the user (`auto_id_input_scale`).

        backbone_tuning: frozen (the paper), lora or full (tuning.py); the backbone is prepared in
        place, so pass a backbone no other model has prepared.

        sparse_user_rows: the user tables get sparse gradients (only the batch's rows), for the
        lazy row update of optim.AdamWSparseRows."""
        super().__init__()
        self.backbone = prepare_backbone(backbone, backbone_tuning, lora, backbone_dropout)
        self.backbone_tuning = backbone_tuning
        # Lightning keeps each module's mode as it finds it: a tuned backbone trains with dropout
        self.backbone.train(backbone_tuning != "frozen")
        self.vocab = vocab
        words = backbone.get_input_embeddings()
        if words.num_embeddings != vocab.n_vocab:
            raise ValueError(f"vocab.n_vocab={vocab.n_vocab} but the backbone has {words.num_embeddings} rows")
        d = words.embedding_dim
        # N(0, init_std); a large scale also makes the CPU backward slow (denormals)
        self.user = nn.ModuleDict({s: nn.Embedding(vocab.n_users, d, sparse=sparse_user_rows) for s in SIDES})
        self.item = nn.ModuleDict({s: nn.Embedding(vocab.n_items, d) for s in SIDES})
        for table in [*self.user.values(), *self.item.values()]:
            nn.init.normal_(table.weight, std=init_std)
        self.register_buffer("id_input_scale", torch.tensor(float(id_input_scale)))
        self.item_bias = None
        if item_prior is not None:
            self.item_bias = nn.Parameter(self.log_frequency(item_prior, vocab.n_items))

    @staticmethod
    def auto_id_input_scale(backbone: nn.Module, init_std: float) -> float:
        """std(word embedding entries) / init_std: new rows enter the backbone at the scale of
        its words (SmolLM2: .136 / .002 = 68). Zero rows (init_std 0) enter as zeros at any scale: 1."""
        if init_std <= 0:
            return 1.0
        return float(backbone.get_input_embeddings().weight.detach().float().std()) / init_std

    @staticmethod
    def log_frequency(counts: torch.Tensor, n_items: int) -> torch.Tensor:
        """[J] counts -> [J] log((c_j + 1) / (sum c + J)) (add-one smoothed)."""
        c = torch.as_tensor(counts, dtype=torch.float32).reshape(-1)
        if c.numel() != n_items:
            raise ValueError(f"item_prior has {c.numel()} counts for {n_items} items")
        return torch.log((c + 1) / (c.sum() + n_items))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone_tuning == "frozen":
            self.backbone.eval()  # frozen: no dropout, whatever the caller asks
        return self

    # ------------------------------------------------------------------ forward pieces
    def embed(self, ids: torch.Tensor, side: str) -> torch.Tensor:
        """[B, T] token ids -> [B, T, d] input embeddings for one side."""
        v = self.vocab
        words = self.backbone.get_input_embeddings()
        x = words(ids.clamp(max=v.n_vocab - 1))
        # user/item rows are written in place at their positions only: no full [B, T, d] lookups of
        # both tables and no two [B, T, d] selects (nor their zero-filled gradients in backward)
        is_user = (ids >= v.user_offset) & (ids < v.item_offset)
        for table, at, lo, n in ((self.user[side], is_user, v.user_offset, v.n_users),
                                 (self.item[side], ids >= v.item_offset, v.item_offset, v.n_items)):
            pos = at.nonzero(as_tuple=True)
            if pos[0].numel():
                rows = table((ids[pos] - lo).clamp(0, n - 1)) * self.id_input_scale
                x = x.index_put_(pos, rows.to(x.dtype))
        return x

    def hidden(self, ids: torch.Tensor, attention_mask: torch.Tensor, side: str) -> torch.Tensor:
        """[B, T] -> [B, T, d] last hidden states (final norm included), one backbone pass.
        Hidden states at padding positions are unspecified (no head reads them)."""
        if attention_mask is not None and bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all()):
            # right padding (or none): under the causal mask no real token sees a pad, so the mask
            # can go and SDPA runs its causal kernel (upper triangle skipped) instead of a dense
            # [B, 1, T, T] mask; outputs at real positions are unchanged (positions are 0..T-1 anyway)
            attention_mask = None
        body = self.__dict__.get("compiled_body", self.backbone.base_model)
        out = body(inputs_embeds=self.embed(ids, side), attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state

    def compile_body(self, enable: bool = True) -> "CLLM4Rec":
        """torch.compile the frozen backbone body (dynamic shapes: one graph for every batch shape).
        Kept out of the module tree (a plain attribute), so state dicts and checkpoints are unchanged.
        The first step pays for compilation (and validation for its own graph); fused element-wise
        ops and casts make later bf16 steps faster, so only a long run repays it (benchmarks/
        throughput.py, variant `compiled`). Equal to eager in fp32; under bf16 autocast it rounds
        differently."""
        if enable:
            missing = compile_unavailable()
            if missing:
                print(f"compile=true: {missing}; the backbone runs eager", file=sys.stderr)
                return self
            # inductor's compiled graphs persist across runs (its default lives in /tmp): only the
            # first run on a machine pays the full compilation
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(inductor_cache()))
            self.__dict__["compiled_body"] = torch.compile(self.backbone.base_model, dynamic=True)
        else:
            self.__dict__.pop("compiled_body", None)
        return self

    def item_logits(self, h: torch.Tensor, side: str = "collaborative") -> torch.Tensor:
        """[..., d] -> [..., J]: the item head, tied to the side's item embeddings.

        Always fp32, even under bf16 autocast: bf16 keeps ~3 significant digits, so close
        item scores would tie and the top-K would depend on rounding. The head is a small
        part of the FLOPs (d x J per scored position)."""
        with torch.autocast(h.device.type, enabled=False):
            logits = h.float() @ self.item[side].weight.float().T
            if side == "collaborative" and self.item_bias is not None:
                logits = logits + self.item_bias
            return logits

    def word_logits(self, h: torch.Tensor) -> torch.Tensor:
        """[..., d] -> [..., N]: the backbone's own vocabulary head."""
        return self.backbone.get_output_embeddings()(h)

    # ------------------------------------------------------------------ losses
    def lm_loss(self, ids: torch.Tensor, attention_mask: torch.Tensor, main_mask: torch.Tensor,
                side: str, exclude_seen: bool = False) -> torch.Tensor:
        """Mean next-token loss over every main-text token, the first one included.

        The logit at position t predicts token t+1, so label positions are main_mask[:, 1:]
        and the predicting hidden states sit one position earlier. Heads run only there.
        exclude_seen (item head only): items already in the main text up to t are out of the
        softmax at t (the target itself stays), as the ranking leaves out a user's seen items.
        """
        h = self.hidden(ids, attention_mask, side)           # [B, T, d]
        labels_at = main_mask[:, 1:]                          # [B, T-1]
        h = h[:, :-1][labels_at]                              # [M, d]
        labels = ids[:, 1:][labels_at]                        # [M]
        if side == "collaborative":
            logits = self.item_logits(h, side).float()        # [M, J]
            labels = labels - self.vocab.item_offset
            if exclude_seen:
                logits = self._without_seen(logits, labels, ids, main_mask, labels_at)
            return F.cross_entropy(logits, labels)
        return F.cross_entropy(self.word_logits(h).float(), labels)

    def _without_seen(self, logits, labels, ids, main_mask, labels_at) -> torch.Tensor:
        """[M, J] logits with -inf at each predicting position's earlier main-text items."""
        T = ids.shape[1]
        pos = torch.arange(T, device=ids.device)
        # [B, T-1, T]: predicting position t (label at t+1) has seen main item q when q <= t
        seen = labels_at[:, :, None] & main_mask[:, None, :] & (pos[None, :T - 1, None] >= pos[None, None, :])
        row = (labels_at.flatten().cumsum(0) - 1).view(labels_at.shape)   # [B, T-1] -> row of logits
        b, t, q = seen.nonzero(as_tuple=True)
        r, item = row[b, t], ids[b, q] - self.vocab.item_offset
        keep = item != labels[r]
        return logits.index_put((r[keep], item[keep]), torch.tensor(float("-inf"), device=logits.device))

    def recommend_logits(self, ids: torch.Tensor, attention_mask: torch.Tensor,
                         last_index: torch.Tensor, side: str = "collaborative") -> torch.Tensor:
        """[B, T] prompts -> [B, J] item scores read at each prompt's last token."""
        h = self.hidden(ids, attention_mask, side)           # [B, T, d]
        h_last = h[torch.arange(h.shape[0], device=h.device), last_index]  # [B, d]
        return self.item_logits(h_last, side).float()

    def rating_logits(self, ids: torch.Tensor, attention_mask: torch.Tensor, last_index: torch.Tensor,
                      level_tokens: torch.Tensor, side: str = "collaborative") -> torch.Tensor:
        """[B, T] rating prompts -> [B, K] vocabulary-head logits of the K level tokens, read at
        each prompt's last token (a K-way softmax: the rating as a word, nothing else)."""
        h = self.hidden(ids, attention_mask, side)           # [B, T, d]
        h_last = h[torch.arange(h.shape[0], device=h.device), last_index]  # [B, d]
        head = self.backbone.get_output_embeddings()
        logits = h_last @ head.weight[level_tokens].to(h.dtype).T   # [B, K]
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[level_tokens].to(h.dtype)
        return logits.float()

    @staticmethod
    def expected_rating(logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """[B, K] level logits, [K] level values -> [B] expected rating (minimises squared error)."""
        with torch.autocast(logits.device.type, enabled=False):
            return torch.softmax(logits.float(), -1) @ values.float()

    @staticmethod
    def multinomial_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Multinomial likelihood of multi-hot targets: -sum_j x_j log softmax(z)_j per user,
        averaged over users (Multi-VAE's form). logits, targets: [B, J]."""
        return -(F.log_softmax(logits, dim=-1) * targets).sum(-1).mean()

    def mutual_regularization(self, ids: torch.Tensor, side: str, reduction: str = "sum") -> torch.Tensor:
        """Pull `side`'s embeddings of the user/item tokens in `ids` toward the other side's,
        which is detached (L-step: side='collaborative'; C-step: side='content').

        reduction='sum' (the authors' code): sum over distinct tokens and dimensions of squared
        differences. 'mean': the same divided by the number of distinct tokens (the mean squared
        L2 distance per token), so lambda_mr(sum) = lambda_mr(mean) / n_tokens.
        """
        other = SIDES[1 - SIDES.index(side)]
        v = self.vocab
        ids = torch.unique(ids[ids >= v.user_offset])
        users = ids[ids < v.item_offset] - v.user_offset
        items = ids[ids >= v.item_offset] - v.item_offset
        diff_u = self.user[side](users) - self.user[other](users).detach()
        diff_i = self.item[side](items) - self.item[other](items).detach()
        total = diff_u.pow(2).sum() + diff_i.pow(2).sum()
        if reduction == "mean":
            return total / max(1, ids.numel())
        if reduction != "sum":
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        return total

    # ------------------------------------------------------------------ export
    def id_embeddings(self) -> dict[str, torch.Tensor]:
        """The trained tables by name, e.g. 'collaborative.user' [I, d] (for safetensors)."""
        out = {}
        for s in SIDES:
            out[f"{s}.user"] = self.user[s].weight.detach().cpu().contiguous()
            out[f"{s}.item"] = self.item[s].weight.detach().cpu().contiguous()
        out["id_input_scale"] = self.id_input_scale.detach().cpu().reshape(1).clone()
        if self.item_bias is not None:
            out["collaborative.item_bias"] = self.item_bias.detach().cpu().contiguous()
        return out

    def load_id_embeddings(self, tables: dict[str, torch.Tensor]) -> None:
        """Copy trained tables in; a saved item bias creates the bias if the model has none.
        Tables saved without an input scale were trained with 1 (the paper's tying)."""
        with torch.no_grad():
            self.id_input_scale.fill_(float(tables.get("id_input_scale", torch.ones(1)).reshape(-1)[0]))
            for s in SIDES:
                self.user[s].weight.copy_(tables[f"{s}.user"])
                self.item[s].weight.copy_(tables[f"{s}.item"])
            bias = tables.get("collaborative.item_bias")
            if bias is not None:
                if self.item_bias is None:
                    self.item_bias = nn.Parameter(torch.zeros(self.vocab.n_items, device=self.user["content"].weight.device))
                self.item_bias.copy_(bias)

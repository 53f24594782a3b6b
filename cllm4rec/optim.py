"""AdamW that also takes row-sparse gradients: the user tables with `model.sparse_user_rows`.

A dense embedding gradient and a dense Adam step cost the whole table on every step: with one
row per user, a step grows with the users and an epoch (whose steps grow with the users too)
grows as users^2 (benchmarks/scaling.py). A table built with `nn.Embedding(sparse=True)` gets a
sparse gradient holding only the rows in the batch, and this optimizer moves only those rows,
with the lazy Adam update of `torch.optim.SparseAdam`: the rows' moments are updated where they
have a gradient and the bias correction counts the table's steps. That is not dense Adam: there,
a row keeps moving on its momentum for the steps after its batch, here it rests until it is in a
batch again. Every dense parameter gets torch's AdamW unchanged (fused where it can).
"""
from __future__ import annotations

import torch


class AdamWSparseRows(torch.optim.AdamW):
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sparse = [(group, p) for group in self.param_groups for p in group["params"]
                  if p.grad is not None and p.grad.is_sparse]
        grads = [p.grad for _, p in sparse]
        for _, p in sparse:
            p.grad = None               # hidden from AdamW's (dense or fused) step
        super().step()
        for (group, p), grad in zip(sparse, grads):
            p.grad = grad
            self._lazy_rows(p, grad.coalesce(), group)
        return loss

    def _lazy_rows(self, p: torch.Tensor, grad: torch.Tensor, group: dict) -> None:
        if group["amsgrad"] or group["maximize"]:
            raise ValueError("AdamWSparseRows: amsgrad and maximize are not supported for sparse gradients")
        rows, g = grad.indices()[0], grad.values()                          # [R], [R, d]
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        t, (b1, b2), lr = float(state["step"]), group["betas"], group["lr"]
        m = state["exp_avg"][rows].mul_(b1).add_(g, alpha=1 - b1)
        v = state["exp_avg_sq"][rows].mul_(b2).addcmul_(g, g, value=1 - b2)
        state["exp_avg"][rows], state["exp_avg_sq"][rows] = m, v
        row = p[rows]
        if group["weight_decay"]:
            row.mul_(1 - lr * group["weight_decay"])
        # SparseAdam's form: eps added to the uncorrected sqrt(v), the corrections in the step size
        p[rows] = row.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-lr * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t))


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` (L2, over all gradients together) that also takes sparse
    gradients, whose norm torch's version cannot compute: a coalesced sparse gradient's norm is
    its values' norm, and it is scaled out of place."""
    params = [p for p in parameters if p.grad is not None]
    sparse = [p for p in params if p.grad.is_sparse]
    if not sparse:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    for p in sparse:
        p.grad = p.grad.coalesce()
    dense = [p for p in params if not p.grad.is_sparse]
    total = torch.nn.utils.get_total_norm([p.grad for p in dense] + [p.grad.values() for p in sparse])
    torch.nn.utils.clip_grads_with_norm_(dense, max_norm, total)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)       # clip_grads_with_norm_'s coefficient
    for p in sparse:
        p.grad = p.grad * coef.to(p.grad.device)
    return total

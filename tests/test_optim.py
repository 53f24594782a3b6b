"""optim.AdamWSparseRows against torch's own optimizers: SparseAdam for the sparse tables, AdamW for
the dense parameters; the sparse-aware clipping against torch's clip_grad_norm_ on dense copies."""
import pytest
import torch

from cllm4rec.optim import AdamWSparseRows, clip_grad_norm


def _steps(opt_factory, sparse: bool, steps: int = 6):
    torch.manual_seed(0)
    table = torch.nn.Embedding(50, 8, sparse=sparse)
    dense = torch.nn.Linear(8, 3)
    opt = opt_factory(table, dense)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        rows = torch.randint(0, 50, (7,), generator=gen)          # repeats: the gradient is not coalesced
        loss = dense(table(rows)).pow(2).sum()
        loss.backward()
        for o in (opt if isinstance(opt, tuple) else (opt,)):
            o.step()
            o.zero_grad()
    return table.weight.detach(), dense.weight.detach(), rows


@pytest.mark.parametrize("fused", [None, True])
def test_sparse_rows_follow_sparse_adam_and_dense_ones_adamw(fused):
    got_table, got_dense, _ = _steps(lambda t, d: AdamWSparseRows(
        [{"params": [t.weight], "weight_decay": 0.0}, {"params": d.parameters(), "weight_decay": 0.01}],
        lr=1e-2, fused=fused), sparse=True)
    ref_table, ref_dense, _ = _steps(lambda t, d: (torch.optim.SparseAdam([t.weight], lr=1e-2),
                                                   torch.optim.AdamW(d.parameters(), lr=1e-2, weight_decay=0.01)),
                                     sparse=True)
    torch.testing.assert_close(got_table, ref_table, rtol=1e-5, atol=1e-7)   # the same formula, other rounding
    torch.testing.assert_close(got_dense, ref_dense, rtol=1e-6, atol=1e-7)


def test_dense_gradients_are_plain_adamw():
    got, _, _ = _steps(lambda t, d: AdamWSparseRows(list(t.parameters()) + list(d.parameters()), lr=1e-2),
                       sparse=False)
    ref, _, _ = _steps(lambda t, d: torch.optim.AdamW(list(t.parameters()) + list(d.parameters()), lr=1e-2),
                       sparse=False)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_rows_outside_every_batch_never_move():
    torch.manual_seed(0)
    table = torch.nn.Embedding(20, 4, sparse=True)
    before = table.weight.detach().clone()
    opt = AdamWSparseRows([table.weight], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        table(torch.tensor([2, 5, 5])).sum().backward()
        opt.step()
        opt.zero_grad()
    moved = (table.weight.detach() != before).any(1)
    assert moved.nonzero().flatten().tolist() == [2, 5]


def test_clipping_matches_torch_on_dense_copies():
    torch.manual_seed(0)
    table, dense = torch.nn.Embedding(30, 4, sparse=True), torch.nn.Linear(4, 2)
    dense(table(torch.tensor([1, 3, 3, 7]))).pow(2).sum().mul(100).backward()
    copies = [torch.nn.Parameter(p.detach().clone()) for p in (table.weight, *dense.parameters())]
    for c, p in zip(copies, (table.weight, *dense.parameters())):
        c.grad = p.grad.to_dense().clone()
    ref = torch.nn.utils.clip_grad_norm_(copies, 0.5)
    got = clip_grad_norm([table.weight, *dense.parameters()], 0.5)
    torch.testing.assert_close(got, ref)
    for c, p in zip(copies, (table.weight, *dense.parameters())):
        torch.testing.assert_close(p.grad.to_dense(), c.grad)

"""CLLM4Rec nn.Module on tiny backbones: parity with the untouched backbone, frozen weights,
losses that go down, mutual regularization, the multinomial likelihood."""
import copy
import math

import pytest
import torch

from cllm4rec.backbone import load_backbone
from cllm4rec.model import CLLM4Rec
from cllm4rec.vocab import Vocab

ARCHS = ["tiny_gpt2", "tiny_llama"]
N_USERS, N_ITEMS = 6, 9


@pytest.fixture(scope="module", params=ARCHS)
def backbone(request):
    model, tok = load_backbone(request.param, seed=0)
    return model, tok


def make(backbone):
    model, tok = backbone
    n = model.get_input_embeddings().num_embeddings
    torch.manual_seed(0)
    return CLLM4Rec(copy.deepcopy(model), Vocab(n, N_USERS, N_ITEMS)), tok


def batch(m, tok):
    """Two documents: prompt '<user> has interacted with' + item main text, right-padded."""
    v = m.vocab
    words = tok(" has interacted with", add_special_tokens=False)["input_ids"]
    docs = [[v.user(1)] + words + [v.item(2), v.item(5), v.item(7)],
            [v.user(4)] + words + [v.item(0)]]
    T = max(map(len, docs))
    ids = torch.zeros(2, T, dtype=torch.long)
    att = torch.zeros(2, T, dtype=torch.long)
    main = torch.zeros(2, T, dtype=torch.bool)
    for b, d in enumerate(docs):
        ids[b, :len(d)] = torch.tensor(d)
        att[b, :len(d)] = 1
        main[b, 1 + len(words):len(d)] = True
    return ids, att, main


def test_parity_with_untouched_backbone(backbone):
    m, tok = make(backbone)
    ids = torch.tensor([tok("The best lipstick for dry lips is a matter of taste")["input_ids"]])
    att = torch.ones_like(ids)
    with torch.no_grad():
        ours = m.word_logits(m.hidden(ids, att, "content"))
        ref = backbone[0](input_ids=ids, attention_mask=att).logits
    assert torch.equal(ours, ref)


def test_embed_places_id_tokens(backbone):
    m, _ = make(backbone)
    v = m.vocab
    ids = torch.tensor([[5, v.user(3), v.item(8), v.item(0)]])
    x = m.embed(ids, "collaborative")
    assert torch.equal(x[0, 0], m.backbone.get_input_embeddings().weight[5])
    assert torch.equal(x[0, 1], m.user["collaborative"].weight[3])
    assert torch.equal(x[0, 2], m.item["collaborative"].weight[8])
    assert torch.equal(m.embed(ids, "content")[0, 3], m.item["content"].weight[0])
    from cllm4rec.config import ModelConfig      # the rows start ~ N(0, the config's init_std)
    assert m.item["content"].weight.std().item() == pytest.approx(ModelConfig.init_std, rel=0.5)


@pytest.mark.parametrize("side", ["collaborative", "content"])
def test_step_lowers_loss_and_keeps_backbone_frozen(backbone, side):
    m, tok = make(backbone)
    ids, att, main = batch(m, tok)
    if side == "content":   # a word main text: the prompt's words as the target
        main = torch.zeros_like(main)
        main[:, 2:4] = True
    before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(3):
        loss = m.lm_loss(ids, att, main, side) + m.mutual_regularization(ids, side)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(m.lm_loss(ids, att, main, side).item())
    assert losses[-1] < losses[0]
    after = m.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in m.backbone.parameters())


def test_lm_loss_counts_first_main_token(backbone):
    """Hand-computed: the loss is the mean item cross-entropy over all 4 main tokens."""
    m, tok = make(backbone)
    ids, att, main = batch(m, tok)
    h = m.hidden(ids, att, "collaborative")
    expect = []
    for b in range(2):
        for t in range(1, ids.shape[1]):
            if main[b, t]:
                logits = h[b, t - 1] @ m.item["collaborative"].weight.T
                expect.append(-torch.log_softmax(logits, -1)[ids[b, t] - m.vocab.item_offset])
    assert len(expect) == 4
    assert torch.allclose(m.lm_loss(ids, att, main, "collaborative"), torch.stack(expect).mean(), atol=1e-5)


def test_multinomial_nll_by_hand():
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    z0 = math.log(math.e + math.e ** 2 + 1)
    z1 = math.log(2 + math.e ** 3)
    expect = ((z0 - 1) + (z0 - 2) + (z1 - 3)) / 2
    assert CLLM4Rec.multinomial_nll(logits, targets).item() == pytest.approx(expect, rel=1e-6)


def test_finetune_step_lowers_nll(backbone):
    m, tok = make(backbone)
    ids, att, _ = batch(m, tok)
    last = att.sum(1) - 1
    targets = torch.zeros(2, N_ITEMS)
    targets[0, [3, 4]] = 1
    targets[1, 8] = 1
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    first = m.multinomial_nll(m.recommend_logits(ids, att, last), targets)
    for _ in range(3):
        loss = m.multinomial_nll(m.recommend_logits(ids, att, last), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m.multinomial_nll(m.recommend_logits(ids, att, last), targets) < first


def test_mutual_regularization(backbone):
    m, tok = make(backbone)
    ids, _, _ = batch(m, tok)
    with torch.no_grad():   # agreeing tables: zero
        m.user["content"].weight.copy_(m.user["collaborative"].weight)
        m.item["content"].weight.copy_(m.item["collaborative"].weight)
    assert m.mutual_regularization(ids, "collaborative").item() == 0.0
    m2, _ = make(backbone)
    # sum over distinct tokens: users 1, 4 and items 0, 2, 5, 7
    u, i = torch.tensor([1, 4]), torch.tensor([0, 2, 5, 7])
    by_hand = ((m2.user["collaborative"].weight[u] - m2.user["content"].weight[u]) ** 2).sum() + \
              ((m2.item["collaborative"].weight[i] - m2.item["content"].weight[i]) ** 2).sum()
    mr = m2.mutual_regularization(ids, "collaborative")
    assert torch.allclose(mr, by_hand)
    assert torch.allclose(m2.mutual_regularization(ids, "content", "mean"), by_hand / 6)
    # a step on MR alone pulls the collaborative side toward the content side, which stays put
    content_before = m2.item["content"].weight.detach().clone()
    opt = torch.optim.SGD([p for p in m2.parameters() if p.requires_grad], lr=0.1)
    mr.backward()
    opt.step()
    assert m2.mutual_regularization(ids, "collaborative") < mr
    assert torch.equal(m2.item["content"].weight, content_before)


def test_item_bias_starts_at_smoothed_popularity(backbone):
    model, tok = backbone
    n = model.get_input_embeddings().num_embeddings
    counts = torch.tensor([5, 0, 1, 2, 0, 0, 9, 3, 1])
    m = CLLM4Rec(copy.deepcopy(model), Vocab(n, N_USERS, N_ITEMS), init_std=0.0, item_prior=counts)
    expect = torch.log((counts.float() + 1) / (counts.sum() + N_ITEMS))
    assert torch.allclose(m.item_bias, expect)
    assert torch.allclose(torch.exp(expect).sum(), torch.tensor(1.0))
    # zero item rows: the collaborative head's softmax is exactly the smoothed popularity, the
    # content head has no bias
    ids, att, _ = batch(m, tok)
    with torch.no_grad():
        h = m.hidden(ids, att, "collaborative")
        assert torch.allclose(torch.softmax(m.item_logits(h), -1), torch.exp(expect).expand(2, ids.shape[1], -1))
        assert torch.all(m.item_logits(h, "content") == 0)
    with pytest.raises(ValueError, match="8 counts for 9 items"):
        CLLM4Rec(copy.deepcopy(model), Vocab(n, N_USERS, N_ITEMS), item_prior=counts[:8])


def test_item_bias_trains_and_round_trips(backbone):
    model, tok = backbone
    n = model.get_input_embeddings().num_embeddings
    torch.manual_seed(0)
    m = CLLM4Rec(copy.deepcopy(model), Vocab(n, N_USERS, N_ITEMS), item_prior=torch.ones(N_ITEMS))
    ids, att, main = batch(m, tok)
    before = m.item_bias.detach().clone()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    loss = m.lm_loss(ids, att, main, "collaborative")
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert not torch.equal(m.item_bias.detach(), before)
    tables = m.id_embeddings()
    assert set(tables) == {"collaborative.user", "collaborative.item", "content.user", "content.item",
                           "collaborative.item_bias", "id_input_scale"}
    plain = CLLM4Rec(copy.deepcopy(model), Vocab(n, N_USERS, N_ITEMS))   # no prior: the paper's head
    assert plain.item_bias is None and "collaborative.item_bias" not in plain.id_embeddings()
    plain.load_id_embeddings(tables)
    last = att.sum(1) - 1
    with torch.no_grad():
        assert torch.equal(plain.recommend_logits(ids, att, last), m.recommend_logits(ids, att, last))


@pytest.mark.parametrize("scale", [1.0, 68.0])
def test_id_input_scale_only_at_the_input(backbone, scale):
    model, tok = backbone
    n = model.get_input_embeddings().num_embeddings
    torch.manual_seed(0)
    m = CLLM4Rec(copy.deepcopy(model), Vocab(n, N_USERS, N_ITEMS), init_std=0.002, id_input_scale=scale)
    v = m.vocab
    ids = torch.tensor([[5, v.user(3), v.item(8)]])
    x = m.embed(ids, "content")
    assert torch.equal(x[0, 0], m.backbone.get_input_embeddings().weight[5])      # words untouched
    assert torch.allclose(x[0, 1], scale * m.user["content"].weight[3])
    assert torch.allclose(x[0, 2], scale * m.item["content"].weight[8])
    h = torch.randn(2, m.item["collaborative"].weight.shape[1])
    with torch.no_grad():   # the tied head reads the raw rows, whatever the input scale
        assert torch.allclose(m.item_logits(h), h @ m.item["collaborative"].weight.T)


def test_id_input_scale_changes_hidden_states_and_round_trips(backbone):
    model, tok = backbone
    n = model.get_input_embeddings().num_embeddings
    torch.manual_seed(0)
    m = CLLM4Rec(copy.deepcopy(model), Vocab(n, N_USERS, N_ITEMS), init_std=0.002,
                 id_input_scale=CLLM4Rec.auto_id_input_scale(model, 0.002))
    word_std = model.get_input_embeddings().weight.float().std().item()
    assert m.id_input_scale.item() == pytest.approx(word_std / 0.002)
    ids, att, _ = batch(m, tok)
    last = att.sum(1) - 1
    plain = CLLM4Rec(copy.deepcopy(model), Vocab(n, N_USERS, N_ITEMS))
    with torch.no_grad():
        tables = m.id_embeddings()
        plain.load_id_embeddings({k: v for k, v in tables.items() if k != "id_input_scale"})
        assert plain.id_input_scale.item() == 1.0     # saved by an older version: the paper's tying
        assert not torch.allclose(plain.recommend_logits(ids, att, last), m.recommend_logits(ids, att, last))
        plain.load_id_embeddings(tables)
        assert plain.id_input_scale.item() == pytest.approx(word_std / 0.002)
        assert torch.equal(plain.recommend_logits(ids, att, last), m.recommend_logits(ids, att, last))


@pytest.mark.slow
def test_compiled_body_matches_eager(backbone):
    """torch.compile'd backbone body: the same loss and ID-table gradients as eager, for two
    batch shapes (dynamic shapes, one graph), and no compiled module in the state dict.
    GPT-2 in fp32, Llama under bf16 autocast (each compile costs ~40 s on 2 cores)."""
    m, tok = make(backbone)
    autocast = type(backbone[0]).__name__.startswith("Llama")
    ids, att, main = batch(m, tok)
    shapes = [(ids, att, main), (ids[:1, :5], att[:1, :5], main[:1, :5])]
    keys = set(m.state_dict())

    def loss_and_grads():
        out = []
        for i, a, mm in shapes:
            m.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = m.lm_loss(i, a, mm, "collaborative")
            loss.backward()
            out.append((loss.detach().float(), m.item["collaborative"].weight.grad.clone()))
        return out

    eager = loss_and_grads()
    m.compile_body()
    compiled = loss_and_grads()
    assert set(m.state_dict()) == keys
    for (le, ge), (lc, gc) in zip(eager, compiled):
        assert gc.abs().sum() > 0
        if autocast:   # fused kernels round bf16 intermediates differently: compare as a whole
            torch.testing.assert_close(lc, le, rtol=1e-2, atol=0)
            assert (gc - ge).norm() / ge.norm() < 2e-2
        else:
            torch.testing.assert_close(lc, le, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(gc, ge, rtol=1e-4, atol=1e-6)
    m.compile_body(False)
    assert "compiled_body" not in m.__dict__


def test_compile_without_a_cxx_compiler_runs_eager_with_one_line(backbone, monkeypatch, capsys):
    from cllm4rec import model as model_module
    monkeypatch.setattr(model_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(model_module.torch.cuda, "is_available", lambda: False)
    m, tok = make(backbone)
    ids, att, main = batch(m, tok)
    m.compile_body()
    assert "compiled_body" not in m.__dict__
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no C++ compiler" in err[0] and "eager" in err[0]
    assert torch.isfinite(m.lm_loss(ids, att, main, "collaborative"))

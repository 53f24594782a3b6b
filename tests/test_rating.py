"""Rating prediction: rating documents on real ML-100K ratings, the restricted vocabulary head,
the expected rating, the rating baselines against brute-force least squares, and the
fine-tuning stage with rating batches."""
import copy

import numpy as np
import pytest
import torch

from cllm4rec.backbone import gpt2_tokenizer, load_backbone
from cllm4rec.baselines import BiasRating, MeanRating
from cllm4rec.corpus import KIND_CODE, CorpusBuilder, CorpusConfig, collate
from cllm4rec.data import TEST, TRAIN, BadLines, split_random
from cllm4rec.metrics import rating_errors
from cllm4rec.model import CLLM4Rec
from cllm4rec.modules import CLLM4RecModule, Schedule
from cllm4rec.vocab import IDTokenizer, Vocab


@pytest.fixture(scope="module")
def ml100k(shared_data):
    from cllm4rec.data.readers import RecBoleAtomic
    return split_random(RecBoleAtomic(path=shared_data / "movielens_100k").read(BadLines()), seed=0)


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


def builder(ds, tok, n_vocab=50257, **cfg):
    return CorpusBuilder(ds, tok, Vocab(n_vocab, ds.n_users, ds.n_items), CorpusConfig(rating=True, **cfg))


def test_rating_scale_gpt2(ml100k, tok):
    scale = builder(ml100k, tok).rating_scale
    assert scale.values.tolist() == [1, 2, 3, 4, 5]
    assert [tok.decode([t]) for t in scale.tokens] == [" 1", " 2", " 3", " 4", " 5"]
    assert len(scale.prefix) == 0
    assert scale.level(np.array([5.0, 1.0, 3.0])).tolist() == [4, 0, 2]
    with pytest.raises(ValueError, match="not one of the training levels"):
        scale.level(np.array([3.5]))


def test_rating_scale_with_a_separate_space_token(ml100k):
    """SmolLM2's tokenizer writes ' 4' as [' ', '4']: the shared space ends the prompt."""
    from cllm4rec.backbone import smollm2_folder
    from transformers import AutoTokenizer
    t = AutoTokenizer.from_pretrained(smollm2_folder())
    b = builder(ml100k, t, n_vocab=len(t))
    scale = b.rating_scale
    assert len(scale.prefix) == 1 and t.decode(scale.prefix.tolist()) == " "
    assert [t.decode([x]) for x in scale.tokens] == ["1", "2", "3", "4", "5"]
    docs = b.epoch("rating", np.random.default_rng(0))
    d = 0
    assert docs.prompt(d)[-1] == scale.prefix[0] and len(docs.main(d)) == 1


def test_rating_documents_are_the_training_ratings(ml100k, tok):
    b = builder(ml100k, tok)
    docs = b.epoch("rating", np.random.default_rng(0))
    train = np.flatnonzero(ml100k.split == TRAIN)
    assert len(docs) == len(train) and (docs.kind == KIND_CODE["rating"]).all()
    t = IDTokenizer(tok, b.vocab, ml100k.user_ids, ml100k.item_ids)
    for d in np.random.default_rng(1).choice(len(docs), 30, replace=False):
        r = train[d]
        u, j, rating = int(ml100k.user[r]), int(ml100k.item[r]), int(ml100k.rating[r])
        text = f"<user_{u}> rated <item_{j}>: {rating}"
        assert docs[d].tolist() == t.encode(text), text
        assert (docs.user[d], docs.item[d]) == (u, j)
        assert len(docs.main(d)) == 1


def test_rating_weight_samples_a_fraction(ml100k, tok):
    b = builder(ml100k, tok, rating_weight=0.25)
    docs = b.mixture("rating", np.random.default_rng(0))
    n_train = int((ml100k.split == TRAIN).sum())
    assert len(docs) == round(0.25 * n_train)


def test_rating_prompts_cover_the_test_part_without_label(ml100k, tok):
    b = builder(ml100k, tok)
    docs, truth = b.rating_prompts("test")
    test = np.flatnonzero(ml100k.split == TEST)
    assert len(docs) == len(test) and np.array_equal(truth, ml100k.rating[test])
    assert (docs.lengths == docs.prompt_len).all()          # no main text: nothing to peek at
    assert np.array_equal(docs.user, ml100k.user[test]) and np.array_equal(docs.item, ml100k.item[test])


def test_no_ratings_is_a_clear_error(ml100k, tok):
    ds = copy.copy(ml100k)
    ds.rating = None
    with pytest.raises(ValueError, match="corpus.rating=false"):
        builder(ds, tok).rating_scale


# ---------------------------------------------------------------------- the head
@pytest.fixture(scope="module", params=["tiny_gpt2", "tiny_llama"])
def tiny(request, ml100k):
    bb, tok = load_backbone(request.param, seed=0)
    b = CorpusBuilder(ml100k, tok, Vocab(bb.get_input_embeddings().num_embeddings, ml100k.n_users, ml100k.n_items),
                      CorpusConfig(rating=True))
    torch.manual_seed(0)
    return CLLM4Rec(bb, b.vocab), b


def test_rating_logits_are_the_vocabulary_head_at_the_last_prompt_token(tiny):
    m, b = tiny
    docs, _ = b.rating_prompts("test")
    batch = collate(docs, np.arange(8))
    tokens = torch.as_tensor(b.rating_scale.tokens)
    with torch.no_grad():
        ours = m.rating_logits(batch["input_ids"], batch["attention_mask"], batch["last_prompt_index"], tokens)
        full = m.word_logits(m.hidden(batch["input_ids"], batch["attention_mask"], "collaborative"))  # [B, T, N]
    ref = full[torch.arange(8), batch["last_prompt_index"]][:, tokens]
    torch.testing.assert_close(ours, ref.float())


def test_expected_rating_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 100.0], [1.0, 2.0, 0.0, 0.0, 0.0]])
    values = torch.arange(1.0, 6.0)
    p = torch.tensor([np.e, np.e ** 2, 1, 1, 1]) / (np.e + np.e ** 2 + 3)
    torch.testing.assert_close(CLLM4Rec.expected_rating(logits, values),
                               torch.tensor([3.0, 5.0, float((p * values).sum())]))


def test_a_rating_step_lowers_the_rating_loss(tiny):
    m, b = tiny
    m = copy.deepcopy(m)
    module = CLLM4RecModule(m, b, Schedule(stage="finetune", finetune_rating=True), lr=1e-2, lambda_mr=0.0)
    docs = b.epoch("rating", np.random.default_rng(0))
    batch = {**collate(docs, np.arange(32)), "step": "rating"}
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = module.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------------- metrics and baselines
def test_rating_errors_by_hand():
    out = rating_errors([3.0, 4.0, 5.0], [4.0, 4.0, 2.0])
    assert out == {"rmse": pytest.approx(np.sqrt(10 / 3)), "mae": pytest.approx(4 / 3), "n_ratings": 3}
    with pytest.raises(ValueError):
        rating_errors([1.0], [1.0, 2.0])


def test_bias_rating_matches_least_squares():
    """Alternating exact updates converge to the ridge solution of r - mu = b_u + b_i."""
    rng = np.random.default_rng(0)
    nu, ni, n = 7, 5, 30
    u, i = rng.integers(0, nu, n), rng.integers(0, ni, n)
    r = rng.integers(1, 6, n).astype(float)
    l2 = 2.0
    model = BiasRating(l2=l2, iterations=500).fit(u, i, r)
    a = np.zeros((n, nu + ni))
    a[np.arange(n), u] = 1
    a[np.arange(n), nu + i] = 1
    x = np.linalg.solve(a.T @ a + l2 * np.eye(nu + ni), a.T @ (r - r.mean()))
    np.testing.assert_allclose(model.predict(u, i), r.mean() + a @ x, atol=1e-4)
    assert MeanRating().fit(u, i, r).predict(u[:3], i[:3]).tolist() == pytest.approx([r.mean()] * 3)


def test_bias_beats_mean_on_ml100k(ml100k):
    train, test = ml100k.split == TRAIN, ml100k.split == TEST
    args = (ml100k.user[train], ml100k.item[train], ml100k.rating[train])
    mean = rating_errors(MeanRating().fit(*args).predict(ml100k.user[test], ml100k.item[test]), ml100k.rating[test])
    bias = rating_errors(BiasRating().fit(*args).predict(ml100k.user[test], ml100k.item[test]), ml100k.rating[test])
    assert 1.0 < mean["rmse"] < 1.2                  # ML-100K ratings have std ~1.13
    assert bias["rmse"] < mean["rmse"] - 0.1         # the classical baseline predictor: ~0.94

"""The prompt corpus on real data: every document kind decoded and checked against the dataset,
stochastic reordering, masking, truncation, no leakage, eval prompts, batching."""
import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from cllm4rec.corpus import (HEAD, KIND_CODE, KINDS, CorpusBuilder, CorpusConfig, Documents,
                             LengthBucketSampler, collate)
from cllm4rec.data import TEST, TRAIN, VALID, BadLines, split_random
from cllm4rec.vocab import IDTokenizer, Vocab

ROOT = Path(__file__).resolve().parents[1]
N_GPT2 = 50257


# ---------------------------------------------------------------------- fixtures (real data)
@pytest.fixture(scope="module")
def tok():
    from cllm4rec.backbone import gpt2_tokenizer
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def ml100k(shared_data):
    from cllm4rec.data.readers import RecBoleAtomic
    return split_random(RecBoleAtomic(path=shared_data / "movielens_100k").read(BadLines()), seed=0)


@pytest.fixture(scope="module")
def beauty(shared_data):
    from cllm4rec.data.readers import S3RecSequences
    d = shared_data
    src = S3RecSequences(path=d / "amazon_s3rec_splits" / "Beauty.txt",
                         attributes=d / "amazon_s3rec_splits" / "Beauty_item2attributes.json",
                         datamaps=d / "amazon_p5_datamaps" / "beauty_datamaps.json")
    return split_random(src.read(BadLines()), seed=0)


@pytest.fixture(scope="module")
def all_beauty(shared_data):
    from cllm4rec.data.readers import AmazonReviews
    src = AmazonReviews(reviews=shared_data / "amazon2018_all_beauty_5" / "All_Beauty_5.json.gz")
    return split_random(src.read(BadLines()), seed=0)


def make(ds, tok, **cfg):
    return CorpusBuilder(ds, tok, Vocab(N_GPT2, ds.n_users, ds.n_items), CorpusConfig(**cfg))


@pytest.fixture(scope="module")
def ml(ml100k, tok):
    return make(ml100k, tok, mim=True, bpr=True, history=True)


def idt(b):
    return IDTokenizer(b.tokenizer, b.vocab, b.ds.user_ids, b.ds.item_ids)


def words(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def items_of(b, ids):
    ids = np.asarray(ids)
    return ids[b.vocab.is_item(ids)] - b.vocab.item_offset


def users_of(b, ids):
    ids = np.asarray(ids)
    return ids[b.vocab.is_user(ids)] - b.vocab.user_offset


def parts(ds, u):
    """A user's item sets per split part."""
    rows = ds.user == u
    return {p: set(ds.item[rows & (ds.split == p)].tolist()) for p in (TRAIN, VALID, TEST)}


def short(b, u, limit=300):
    """A user whose documents are not truncated under the default lengths."""
    return b.train_count[u] <= limit


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------- templates and tokens
@pytest.mark.parametrize("kind", ["collaborative", "item_text", "user_text", "mim", "bpr", "history", "finetune"])
def test_documents_match_idtokenizer_encoding(ml, kind):
    """A prompt built by arithmetic equals IDTokenizer.encode of its own text (the GPT-2
    leading-space rule: ' has interacted with' after a user token), and so does the document."""
    docs = ml.epoch(kind, rng())
    t = idt(ml)
    for d in rng(1).choice(len(docs), 25, replace=False):
        text = t.decode(docs.prompt(d))
        assert t.encode(text) == docs.prompt(d).tolist(), text
        assert t.encode(t.decode(docs[d])) == docs[d].tolist()


def test_template_pieces_follow_the_leading_space_rule(ml, tok):
    u = 7
    docs = ml.epoch("collaborative", rng())
    d = int(np.flatnonzero(docs.user == u)[0])
    assert docs.prompt(d).tolist() == [ml.vocab.user(u)] + words(tok, " has interacted with")
    ft = ml.epoch("finetune", rng())
    p = ft.prompt(int(np.flatnonzero(ft.user == u)[0])).tolist()
    tail = [ml.vocab.user(u)] + words(tok, " will interact with")
    assert p[:1 + len(words(tok, " has interacted with"))] == [ml.vocab.user(u)] + words(tok, " has interacted with")
    assert p[-len(tail):] == tail and p[-len(tail) - len(words(tok, ",")):-len(tail)] == words(tok, ",")


# ---------------------------------------------------------------------- collaborative
def test_collaborative_is_each_users_training_items(ml, ml100k):
    docs = ml.epoch("collaborative", rng())
    hist = ml100k.histories("train")
    assert len(docs) == sum(len(h) > 0 for h in hist)
    assert (docs.kind == KIND_CODE["collaborative"]).all()
    for d in range(len(docs)):
        u = docs.user[d]
        main = items_of(ml, docs.main(d))
        assert ml.vocab.is_item(docs.main(d)).all()
        if len(hist[u]) <= ml.cfg.max_main_tokens:
            assert sorted(main) == sorted(hist[u].tolist())
        else:   # a random subset of the limit's size
            assert len(main) == ml.cfg.max_main_tokens and set(main) < set(hist[u].tolist())


def test_stochastic_reordering(ml):
    a = ml.epoch("collaborative", rng(1))
    b = ml.epoch("collaborative", rng(2))
    again = ml.epoch("collaborative", rng(1))
    np.testing.assert_array_equal(a.tokens, again.tokens)            # same seed, same epoch
    differ = 0
    for d in range(len(a)):
        if short(ml, a.user[d], ml.cfg.max_main_tokens):
            assert sorted(a.main(d)) == sorted(b.main(d))             # same multiset
        differ += not np.array_equal(a.main(d), b.main(d))
    assert differ >= 0.95 * len(a)                                    # ML-100K users have >= 16 training items


def test_collaborative_long_main_keeps_random_subset(ml100k, tok):
    b = make(ml100k, tok, max_main_tokens=10)
    x, y = b.epoch("collaborative", rng(1)), b.epoch("collaborative", rng(2))
    hist = ml100k.histories("train")
    assert (x.lengths - x.prompt_len <= 10).all()
    changed = 0
    for d in range(len(x)):
        got = items_of(b, x.main(d))
        assert len(got) == min(10, len(hist[x.user[d]])) and set(got) <= set(hist[x.user[d]].tolist())
        changed += set(got) != set(items_of(b, y.main(d)))
    assert changed > 0.9 * len(x)


# ---------------------------------------------------------------------- content
def _check_text_docs(b, docs, table, key):
    """Every document's main text decodes to the dataset's text (stripped, after a space)."""
    t = idt(b)
    assert len(docs) == sum(1 for s in table if s.strip())
    for d in range(len(docs)):
        text = table[key(docs, d)].strip()
        assert b.vocab.is_item(docs.main(d)).sum() == 0 and (docs.main(d) < N_GPT2).all()
        assert t.decode(docs.main(d)) == " " + text


def test_item_text_documents_ml100k(ml, ml100k):
    assert ml100k.item_text, "ML-100K items have titles, years, genres"
    docs = ml.epoch("item_text", rng())
    t = idt(ml)
    seen_fields = set()
    for f, texts in ml100k.item_text.items():
        prompt = "The title of" if f == "title" else f"The {f.replace('_', ' ')} of"
        sel = [d for d in range(len(docs)) if t.decode(docs.prompt(d)).startswith(prompt + " <item_")]
        sub = docs.select(sel)
        _check_text_docs(ml, sub, texts, lambda D, d: D.item[d])
        seen_fields.add(f)
        assert all(t.decode(sub.prompt(d)) == f"{prompt} <item_{sub.item[d]}> is:" for d in range(len(sub)))
    assert seen_fields == set(ml100k.item_text)


def test_user_profile_documents_ml100k(ml, ml100k):
    docs = ml.epoch("user_text", rng())
    t = idt(ml)
    fields = sorted(ml100k.user_text)
    assert len(docs) == ml100k.n_users
    for d in range(0, len(docs), 37):
        u = docs.user[d]
        assert t.decode(docs.prompt(d)) == f"The profile of <user_{u}> is:"
        want = ", ".join(f"{f.replace('_', ' ')}: {ml100k.user_text[f][u]}" for f in fields if ml100k.user_text[f][u])
        assert t.decode(docs.main(d)) == " " + want


def test_user_text_per_field(ml100k, tok):
    b = make(ml100k, tok, user_text_mode="per_field")
    docs = b.epoch("user_text", rng())
    assert len(docs) == sum(sum(1 for s in v if s.strip()) for v in ml100k.user_text.values())


def test_beauty_item_attributes(beauty, tok):
    b = make(beauty, tok)
    docs = b.epoch("content", rng())     # Beauty has no reviews and no user texts
    assert set(docs.kind.tolist()) == {KIND_CODE["item_text"]}
    t = idt(b)
    for f, texts in beauty.item_text.items():
        head = f"The {f.replace('_', ' ')} of <item_" if f != "title" else "The title of <item_"
        sel = [d for d in range(0, len(docs)) if t.decode(docs.prompt(d)).startswith(head)]
        assert len(sel) == sum(1 for s in texts if s.strip())
        for d in sel[::50]:
            assert t.decode(docs.main(d)) == " " + texts[docs.item[d]].strip()


def test_review_documents_come_from_training_rows_only(all_beauty, tok):
    ds = all_beauty
    assert ds.interaction_text, "All_Beauty_5 has review texts"
    b = make(ds, tok, max_main_tokens=4096)
    docs = b.epoch("interaction_text", rng())
    t = idt(b)
    train_text = {}
    other_text = set()
    for f, col in ds.interaction_text.items():
        for r, s in enumerate(col):
            if not s.strip():
                continue
            if ds.split[r] == TRAIN:
                train_text.setdefault((int(ds.user[r]), int(ds.item[r])), set()).add(" " + s.strip())
            else:
                other_text.add(" " + s.strip())
    n_train_texts = sum(1 for col in ds.interaction_text.values() for r, s in enumerate(col)
                        if s.strip() and ds.split[r] == TRAIN)
    assert len(docs) == n_train_texts
    leaked_only_elsewhere = other_text - {x for v in train_text.values() for x in v}
    for d in range(len(docs)):
        u, j = int(docs.user[d]), int(docs.item[d])
        p = t.decode(docs.prompt(d))
        assert p.startswith(f"<user_{u}> ") and f"<item_{j}>" in p and p.endswith(":")
        main = t.decode(docs.main(d))
        assert main in train_text[(u, j)]              # the text of a TRAINING row of this pair
        assert main not in leaked_only_elsewhere
    review = [d for d in range(len(docs)) if "wrote the following review for" in t.decode(docs.prompt(d))]
    assert review, "the review template is used"


def test_word_main_cut_at_end(all_beauty, tok):
    b = make(all_beauty, tok, max_main_tokens=8)
    docs = b.epoch("interaction_text", rng())
    full = make(all_beauty, tok, max_main_tokens=4096).epoch("interaction_text", rng())
    assert len(docs) == len(full)
    for d in range(len(docs)):
        assert docs.main(d).tolist() == full.main(d)[:8].tolist()
        np.testing.assert_array_equal(docs.prompt(d), full.prompt(d))


# ---------------------------------------------------------------------- masking
def _mask_rule_ok(m, n, p):
    lo = np.maximum(np.minimum(np.maximum(np.floor(p * n), 1), np.maximum(n - 1, 1)), 1)
    hi = np.maximum(np.minimum(np.maximum(np.floor(p * n) + 1, 1), np.maximum(n - 1, 1)), 1)
    return ((m >= lo) & (m <= hi)).all()


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_finetune_mask_ratio_and_partition(ml100k, tok, p):
    b = make(ml100k, tok, finetune_mask_ratio=p, finetune_target="masked")
    docs = b.epoch("finetune", rng())
    hist = ml100k.histories("train")
    n = np.array([len(hist[u]) for u in docs.user])
    m = np.diff(docs.target_offsets)
    assert (m >= 1).all() and _mask_rule_ok(m, n, p)
    assert abs(m.sum() / n.sum() - p) < 0.01
    for d in range(len(docs)):
        shown = items_of(b, docs.prompt(d)).tolist()
        target = docs.targets(d).tolist()
        assert sorted(shown + target) == sorted(hist[docs.user[d]].tolist())   # a partition
        assert (docs.lengths[d] == docs.prompt_len[d])                            # no main text


def test_finetune_masks_redrawn_and_reproducible(ml):
    a, b, a2 = ml.epoch("finetune", rng(5)), ml.epoch("finetune", rng(6)), ml.epoch("finetune", rng(5))
    np.testing.assert_array_equal(a.target_items, a2.target_items)
    np.testing.assert_array_equal(a.tokens, a2.tokens)
    # the default target is every training item; the mask shows in which items the prompt keeps
    same = sum(set(items_of(ml, a.prompt(d))) == set(items_of(ml, b.prompt(d))) for d in range(len(a)))
    assert same < 0.05 * len(a)


def test_finetune_target_all(ml100k, tok):
    b = make(ml100k, tok, finetune_target="all")
    docs = b.epoch("finetune", rng())
    hist = ml100k.histories("train")
    for d in range(len(docs)):
        assert sorted(docs.targets(d).tolist()) == sorted(hist[docs.user[d]].tolist())
        assert len(items_of(b, docs.prompt(d))) < len(hist[docs.user[d]])    # still masked in the prompt


def test_finetune_small_histories_beauty(beauty, tok):
    """Beauty users have 3+ training items: exactly the rule's count, one visible at least."""
    b = make(beauty, tok, finetune_target="masked")
    docs = b.epoch("finetune", rng())
    n = b.train_count[docs.user]
    m = np.diff(docs.target_offsets)
    assert _mask_rule_ok(m, n, b.cfg.finetune_mask_ratio)
    assert (n - m >= 1).all()
    shown = np.array([len(items_of(b, docs.prompt(d))) for d in range(0, len(docs), 97)])
    np.testing.assert_array_equal(shown, (n - m)[::97])


def test_mim_documents(ml, ml100k, tok):
    docs = ml.epoch("mim", rng())
    mask = words(tok, " [mask]")
    tail = words(tok, " where [mask] hides an item; the hidden items are")
    hist = ml100k.histories("train")
    ratios = []
    for d in range(len(docs)):
        if not short(ml, docs.user[d]):
            continue
        p = docs.prompt(d).tolist()
        main = items_of(ml, docs.main(d)).tolist()
        assert ml.vocab.is_item(docs.main(d)).all() and len(main) >= 1
        assert p[-len(tail):] == tail
        p = p[:-len(tail)]
        n_masks = sum(p[k:k + len(mask)] == mask for k in range(len(p)))
        assert n_masks == len(main)
        visible = items_of(ml, p).tolist()
        assert sorted(visible + main) == sorted(hist[docs.user[d]].tolist())
        assert users_of(ml, p).tolist() == [docs.user[d]]
        ratios.append((len(main), len(hist[docs.user[d]])))
    m, n = np.array(ratios).T
    assert abs(m.sum() / n.sum() - 0.2) < 0.01


def test_bpr_documents(ml, ml100k):
    docs = ml.epoch("bpr", rng())
    pos_first = 0
    for d in range(len(docs)):
        u = docs.user[d]
        pr = parts(ml100k, u)
        shown = items_of(ml, docs.prompt(d)).tolist()
        (target,) = items_of(ml, docs.main(d)).tolist()
        assert len(shown) == 2 and target in shown and target in pr[TRAIN]
        other = shown[1 - shown.index(target)]
        assert other not in pr[TRAIN] | pr[VALID] | pr[TEST]             # never interacted, any split
        pos_first += shown[0] == target
    assert 0.4 < pos_first / len(docs) < 0.6                             # random order


def test_history_documents(ml, ml100k):
    docs = ml.epoch("history", rng())
    title = next(f for f in ("title", "movie_title", "name") if f in ml100k.item_text)
    titles = ml100k.item_text[title]
    t = idt(ml)
    hist = ml100k.histories("train")
    head, tail = "A user has interacted with", " and will interact with"
    checked = 0
    for d in range(len(docs)):
        u = docs.user[d]
        p = docs.prompt(d)
        assert not ml.vocab.is_user(p).any() and not ml.vocab.is_item(p).any()    # no ID tokens
        text = t.decode(p)
        assert text.startswith(head + ' "') and text.endswith('",' + tail)
        main = items_of(ml, docs.main(d)).tolist()
        assert set(main) < set(hist[u].tolist()) and len(main) >= 1
        if not short(ml, u, 20):
            continue
        # the prompt lists exactly the unmasked items' titles, each as ' "Title",'
        pieces = Counter(f' "{titles[j].strip()}",' for j in set(hist[u].tolist()) - set(main))
        shown = text[len(head):-len(tail)]
        assert len(shown) == sum(len(k) * v for k, v in pieces.items())
        assert all(shown.count(k) >= v for k, v in pieces.items())
        checked += 1
    assert checked > 50


# ---------------------------------------------------------------------- truncation keeps the cue
def test_truncation_keeps_the_cue(ml100k, tok):
    b = make(ml100k, tok, max_prompt_tokens=40, mim=True, history=True, history_title_tokens=8)
    u = int(np.argmax(b.train_count))
    assert b.train_count[u] > 300
    cue = [b.vocab.user(u)] + words(tok, " will interact with")
    for docs in (b.epoch("finetune", rng()), b.eval_prompts("valid"), b.eval_prompts("test")):
        d = int(np.flatnonzero(docs.user == u)[0])
        p = docs.prompt(d).tolist()
        assert len(p) <= 40 and p[-len(cue):] == cue
        assert p[:1 + len(words(tok, " has interacted with"))] == [b.vocab.user(u)] + words(tok, " has interacted with")
        assert len(items_of(b, p)) == 40 - b.t_finetune.fixed_len
    mim = b.epoch("mim", rng())
    p = mim.prompt(int(np.flatnonzero(mim.user == u)[0])).tolist()
    end = words(tok, " where [mask] hides an item; the hidden items are")
    assert len(p) <= 40 and p[-len(end):] == end
    hist = b.epoch("history", rng())
    assert (hist.prompt_len <= 40).all()
    for d in np.flatnonzero(hist.prompt_len > 30)[:20]:
        assert idt(b).decode(hist.prompt(d)).endswith("\", and will interact with")
    assert (b.epoch("finetune", rng()).prompt_len <= 40).all()


def test_prompt_too_small_for_template_is_a_clear_error(ml100k, tok):
    b = make(ml100k, tok, max_prompt_tokens=5)
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        b.epoch("finetune", rng())


# ---------------------------------------------------------------------- no leakage
@pytest.mark.parametrize("kind", ["collaborative", "mim", "bpr", "history", "finetune", "interaction_text"])
def test_no_heldout_item_in_training_documents(ml100k, all_beauty, tok, kind):
    for ds in (ml100k, all_beauty):
        if kind == "history" and not ds.item_text:
            continue                                                   # All_Beauty_5 has no titles
        b = make(ds, tok)
        docs = b.epoch(kind, rng())
        held = ds.matrix("valid", "test").tolil().rows
        train = ds.matrix("train").tolil().rows
        for d in range(len(docs)):
            u = int(docs.user[d])
            found = set(items_of(b, docs[d]).tolist()) | set(docs.targets(d).tolist())
            if docs.item[d] >= 0:
                found.add(int(docs.item[d]))
            assert not found & (set(held[u]) - set(train[u])), (kind, u)
            if kind != "bpr":
                assert found <= set(train[u])


# ---------------------------------------------------------------------- evaluation prompts
def test_eval_prompts_deterministic_and_complete(ml, ml100k):
    a, b = ml.eval_prompts("valid"), ml.eval_prompts("valid")
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.target_items, b.target_items)
    ml.epoch("finetune", rng(3))                                     # a training draw in between
    np.testing.assert_array_equal(ml.eval_prompts("valid").tokens, a.tokens)
    assert len(a) == ml100k.n_users and (a.user == np.arange(ml100k.n_users)).all()
    for u in range(0, ml100k.n_users, 13):
        if not short(ml, u, 400):
            continue
        pr = parts(ml100k, u)
        assert sorted(items_of(ml, a.prompt(u)).tolist()) == sorted(pr[TRAIN])
        assert set(a.targets(u).tolist()) == pr[VALID]
        assert a.lengths[u] == a.prompt_len[u]


def test_eval_prompts_test_part_and_switch(ml100k, tok):
    plain = make(ml100k, tok).eval_prompts("test")
    plus = make(ml100k, tok, eval_test_includes_valid=True).eval_prompts("test")
    b = make(ml100k, tok)
    for u in range(0, ml100k.n_users, 17):
        if not short(b, u, 400):
            continue
        pr = parts(ml100k, u)
        assert set(plain.targets(u).tolist()) == pr[TEST] == set(plus.targets(u).tolist())
        assert sorted(items_of(b, plain.prompt(u)).tolist()) == sorted(pr[TRAIN])
        assert sorted(items_of(b, plus.prompt(u)).tolist()) == sorted(pr[TRAIN] | pr[VALID])


def test_eval_time_order(ml100k, tok):
    b = make(ml100k, tok, eval_order="time")
    docs = b.eval_prompts("valid")
    hist = ml100k.histories("train")
    room = b.cfg.max_prompt_tokens - b.t_finetune.fixed_len
    for u in range(ml100k.n_users):
        assert items_of(b, docs.prompt(u)).tolist() == hist[u][-room:].tolist()   # the most recent


def test_sequential_mode_masks_most_recent(beauty, tok):
    b = make(beauty, tok, item_order="time", finetune_target="masked")
    docs = b.epoch("finetune", rng())
    hist = beauty.histories("train")
    for d in range(0, len(docs), 101):
        h = hist[docs.user[d]].tolist()
        m = len(docs.targets(d))
        assert items_of(b, docs.prompt(d)).tolist() == h[:len(h) - m]
        assert docs.targets(d).tolist() == h[len(h) - m:]


def test_next_item_target_is_a_prefix_and_the_item_after_it(beauty, tok):
    b = make(beauty, tok, item_order="time", finetune_target="next")
    hist = beauty.histories("train")
    cuts = Counter()
    for seed in (0, 1):
        docs = b.epoch("finetune", rng(seed))
        assert len(docs) == int((b.train_count >= 2).sum())
        for d in range(0, len(docs), 53):
            h = hist[docs.user[d]].tolist()
            prefix = items_of(b, docs.prompt(d)).tolist()
            assert 1 <= len(prefix) <= len(h) - 1 and prefix == h[:len(prefix)]
            assert docs.targets(d).tolist() == [h[len(prefix)]]
            cuts[(int(docs.user[d]), len(prefix))] += 1
    assert len({c for (_, c) in cuts}) > 3                 # prefixes of many lengths are drawn
    with pytest.raises(ValueError, match="item_order=time"):
        CorpusConfig(finetune_target="next")


# ---------------------------------------------------------------------- mixture weights
def test_mixture_heads_and_weights(ml100k, tok):
    b = make(ml100k, tok, mim=True, bpr=True, collaborative_weight=2.0, mim_weight=0.5, bpr_weight=0.0)
    docs = b.mixture("item", rng())
    count = Counter(KINDS[k] for k in docs.kind)
    users = int((b.train_count > 0).sum())
    assert count == {"collaborative": 2 * users, "mim": round(0.5 * users)}
    words_ = b.mixture("word", rng())
    assert {HEAD[KINDS[k]] for k in words_.kind} == {"word"}
    assert {HEAD[KINDS[k]] for k in docs.kind} == {"item"}


# ---------------------------------------------------------------------- collate and sampler
def test_collate_shapes_padding_and_label_positions(ml):
    docs = Documents.concat([ml.epoch("collaborative", rng()).select(range(5)),
                             ml.epoch("item_text", rng()).select(range(5))])
    idx = [9, 0, 3, 7]
    batch = collate(docs, idx, pad_id=50256)
    L = docs.lengths[idx]
    B, T = batch["input_ids"].shape
    assert (B, T) == (4, L.max())
    for r, d in enumerate(idx):
        n, p = L[r], docs.prompt_len[d]
        assert batch["input_ids"][r, :n].tolist() == docs[d].tolist()
        assert (batch["input_ids"][r, n:] == 50256).all()
        assert batch["attention_mask"][r].tolist() == [1] * n + [0] * (T - n)
        assert batch["main_mask"][r].tolist() == [False] * p + [True] * (n - p) + [False] * (T - n)
        assert batch["last_prompt_index"][r] == p - 1
    # the model's label rule: labels at main_mask[:, 1:] are exactly the main texts, the first included
    labels = batch["input_ids"][:, 1:][batch["main_mask"][:, 1:]]
    assert labels.tolist() == np.concatenate([docs.main(d) for d in idx]).tolist()
    assert batch["input_ids"].dtype == torch.int64 and batch["main_mask"].dtype == torch.bool


def test_collate_targets(ml):
    docs = ml.epoch("finetune", rng())
    idx = [4, 1, 8]
    batch = collate(docs, idx, n_items=ml.ds.n_items)
    assert batch["targets"].shape == (3, ml.ds.n_items)
    for r, d in enumerate(idx):
        assert set(torch.nonzero(batch["targets"][r]).flatten().tolist()) == set(docs.targets(d).tolist())
        assert not batch["main_mask"][r].any()
    off = batch["target_offsets"]
    assert batch["target_items"][off[1]:off[2]].tolist() == docs.targets(1).tolist()


@pytest.mark.parametrize("batch_size,max_tokens", [(32, None), (None, 4096), (16, 2048)])
def test_bucket_sampler_covers_every_document_once(ml, batch_size, max_tokens):
    docs = ml.mixture("item", rng())
    s = LengthBucketSampler(docs.lengths, batch_size=batch_size, max_tokens=max_tokens, seed=3)
    for epoch in (0, 1):
        s.set_epoch(epoch)
        batches = list(s)
        flat = np.concatenate(batches)
        assert len(flat) == len(docs) and len(np.unique(flat)) == len(docs)
        for bt in batches:
            if batch_size:
                assert len(bt) <= batch_size
            if max_tokens:
                assert len(bt) * docs.lengths[bt].max() <= max_tokens
        assert len(s) == len(batches)
    s.set_epoch(0)
    again = list(LengthBucketSampler(docs.lengths, batch_size=batch_size, max_tokens=max_tokens, seed=3))
    assert again == list(s)
    s.set_epoch(1)
    assert list(s) != again
    # bucketing pads less than random batches of the same sizes
    pad = sum(len(bt) * docs.lengths[bt].max() for bt in again)
    perm = rng(0).permutation(len(docs))
    sizes = np.cumsum([len(bt) for bt in again])[:-1]
    pad_random = sum(len(bt) * docs.lengths[bt].max() for bt in np.split(perm, sizes))
    assert pad < 0.8 * pad_random


def test_sampler_rejects_documents_over_budget():
    with pytest.raises(ValueError, match="max_tokens"):
        LengthBucketSampler([10, 500], batch_size=None, max_tokens=100)


# ---------------------------------------------------------------------- config and caching
def corpus_group(name: str) -> dict:
    """The `corpus` group as a training run composes it (corpus=<name>)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="finetune", overrides=[f"corpus={name}"]).corpus)


def test_every_corpus_field_has_help():
    assert all(f.metadata.get("help") for f in dataclasses.fields(CorpusConfig))


@pytest.mark.parametrize("name,order", [("default", "shuffle"), ("sequential", "time")])
def test_hydra_group_composes(name, order):
    cfg = CorpusConfig.from_mapping(corpus_group(name))
    assert cfg.item_order == cfg.eval_order == order
    seq = dict(item_order="shuffle", eval_order="shuffle", eval_test_includes_valid=False,
               finetune_template=CorpusConfig().finetune_template)
    assert dataclasses.replace(cfg, **seq) == CorpusConfig()


@pytest.mark.parametrize("override,key", [("corpus.max_prompt_tokens=many", "max_prompt_tokens"),
                                          ("corpus.max_prompt_token=3", "max_prompt_token"),
                                          ("corpus.item_text=maybe", "item_text")])
def test_corpus_group_rejects_a_wrong_type_or_key_at_compose(override, key):
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        with pytest.raises(ConfigCompositionException) as err:
            compose(config_name="finetune", overrides=[override])
    assert key in str(err.value) + str(err.value.__cause__)


def test_sequential_readout_at_the_most_recent_item(beauty, tok):
    """corpus=sequential ends the prompt with the history: the item head reads the hidden state at
    the most recent item (validation item included for the test part), a user without items at 'with'."""
    b = make(beauty, tok, **corpus_group("sequential"))
    for part, parts in (("valid", ("train",)), ("test", ("train", "valid"))):
        docs = b.eval_prompts(part)
        hist = beauty.histories(*parts)
        for u in range(0, beauty.n_users, 211):
            assert docs.prompt(u)[-1] == b.vocab.item(hist[u][-1])
    ft = b.epoch("finetune", rng())
    last = np.array([ft.prompt(d)[-1] for d in range(len(ft))])
    assert (last >= b.vocab.item_offset).all()     # every fine-tuning prompt ends at an item


@pytest.mark.parametrize("bad,match", [
    ({"finetune_target": "some"}, "finetune_target"),
    ({"finetune_mask_ratio": 0.0}, "finetune_mask_ratio"),
    ({"mim_weight": -1}, "mim_weight"),
    ({"max_prompt_tokens": 0}, "max_prompt_tokens"),
    ({"no_such_option": 1}, "unknown corpus option"),
])
def test_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        CorpusConfig.from_mapping(bad)


@pytest.mark.parametrize("template,match", [("{user} has interacted with", "missing slot"),
                                            ("{user} likes {items} {foo}", "unknown slot")])
def test_template_errors(ml100k, tok, template, match):
    with pytest.raises(ValueError, match=match):
        make(ml100k, tok, finetune_template=template)


def test_history_needs_a_title_field(beauty, tok):
    if any(f in beauty.item_text for f in ("title", "movie_title", "name")):
        pytest.skip("this Beauty reader gives titles")
    with pytest.raises(ValueError, match="history_field"):
        make(beauty, tok, history=True).epoch("history", rng())


def test_tokenized_texts_cached_on_disk(all_beauty, tok, tmp_path):
    first = make(all_beauty, tok)
    first.cache_dir = tmp_path
    a = first.epoch("content", rng())
    files = sorted(tmp_path.glob("tokens-*.npz"))
    assert files

    class Refuse:                                                    # words only: no free text
        def __init__(self, inner):
            self.inner, self.backend_tokenizer = inner, inner.backend_tokenizer

        def __call__(self, text, **kw):
            if isinstance(text, list):
                raise AssertionError("free text tokenized again despite the cache")
            return self.inner(text, **kw)

    second = CorpusBuilder(all_beauty, Refuse(tok), first.vocab, first.cfg, cache_dir=tmp_path)
    b = second.epoch("content", rng())
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert sorted(tmp_path.glob("tokens-*.npz")) == files


def test_builder_rejects_unsplit_or_mismatched(ml100k, tok):
    with pytest.raises(ValueError, match="split"):
        CorpusBuilder(dataclasses.replace(ml100k, split=None), tok, Vocab(N_GPT2, ml100k.n_users, ml100k.n_items))
    with pytest.raises(ValueError, match="users"):
        CorpusBuilder(ml100k, tok, Vocab(N_GPT2, 5, ml100k.n_items))
    with pytest.raises(ValueError, match="unknown document kind"):
        make(ml100k, tok).epoch("reviews", rng())


# ---------------------------------------------------------------------- tiny histories (synthetic)
def test_users_with_one_or_two_training_items(tok):
    """n = 1: the only item is masked (empty history, the prompt keeps its cue); n = 2: one
    masked, one shown; users without training items get no training documents."""
    from cllm4rec.data import Dataset
    users = ["a", "b", "b", "c", "c", "c", "d"]
    items = ["x", "x", "y", "x", "y", "z", "w"]
    ds = Dataset.from_raw("tiny", users, items, item_text={k: {"title": k.upper()} for k in "wxyz"})
    split = np.array([TRAIN, TRAIN, TRAIN, TRAIN, TRAIN, TEST, TEST], np.int8)    # d: test only
    ds = dataclasses.replace(ds, split=split)
    b = make(ds, tok, mim=True, bpr=True, history=True, finetune_target="masked")
    v = b.vocab
    ft = b.epoch("finetune", rng())
    assert ft.user.tolist() == [0, 1, 2]
    assert ft.prompt(0).tolist() == ([v.user(0)] + words(tok, " has interacted with") + words(tok, ",")
                                     + [v.user(0)] + words(tok, " will interact with"))
    assert ft.targets(0).tolist() == [ds.item_ids.index("x")]
    assert [len(ft.targets(d)) for d in range(3)] == [1, 1, 1]
    assert [len(items_of(b, ft.prompt(d))) for d in range(3)] == [0, 1, 1]
    assert b.epoch("history", rng()).user.tolist() == [1, 2]
    mim = b.epoch("mim", rng())
    assert [len(mim.main(d)) for d in range(3)] == [1, 1, 1]
    bpr = b.epoch("bpr", rng())
    for d in range(len(bpr)):
        u = bpr.user[d]
        other = set(items_of(b, bpr.prompt(d)).tolist()) - set(items_of(b, bpr.main(d)).tolist())
        assert not other & set(ds.item[ds.user == u].tolist())
    ev = b.eval_prompts("test")
    assert len(ev) == 4 and ev.targets(3).tolist() == [ds.item_ids.index("w")]
    assert items_of(b, ev.prompt(3)).tolist() == []

"""Items nobody interacted with: the cold_items split, the rows placed from text, evaluation's
cold views, the text baselines, and adding items at serving time (API and CLI)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cllm4rec.backbone import load_backbone
from cllm4rec.baselines import TextKNN
from cllm4rec.cold_items import ItemRows, describe, item_descriptions, place_cold_items, write_rows
from cllm4rec.corpus import CorpusBuilder, CorpusConfig
from cllm4rec.data import Dataset, split_dataset, split_random
from cllm4rec.data.dataset import TEST, TRAIN, VALID
from cllm4rec.data.embedded import ml100k
from cllm4rec.evaluate import evaluate_run
from cllm4rec.model import CLLM4Rec
from cllm4rec.recommend import Recommender
from cllm4rec.recommend import main as recommend_main
from cllm4rec.train import train
from cllm4rec.vocab import Vocab
from test_evaluate import ROOT, compose_cfg

COLD = ["data.split.protocol=cold_items"]


@pytest.fixture(scope="module")
def ml():
    from cllm4rec.data import BadLines
    return ml100k().read(BadLines())


@pytest.fixture(scope="module")
def cold_ds(ml):
    return split_dataset(ml, "cold_items", seed=0)


def test_cold_split_holds_items_out_of_training(ml, cold_ds):
    ds = cold_ds
    assert ds.cold_items.dtype == bool and ds.cold_items.sum() == round(0.2 * ml.n_items)
    on_cold = ds.cold_items[ds.item]
    assert not (on_cold & (ds.split == TRAIN)).any()                     # never in training
    assert (on_cold & (ds.split == VALID)).any() and (on_cold & (ds.split == TEST)).any()
    # one part per user for their cold interactions
    parts = {(u, p) for u, p in zip(ds.user[on_cold], ds.split[on_cold])}
    assert len(parts) == len(set(ds.user[on_cold]))
    # the warm interactions are split exactly as split_random splits the warm-only dataset
    warm = split_random(ml.select(~on_cold), seed=0)
    assert np.array_equal(ds.split[~on_cold], warm.split)
    # seeded: the same items for the same seed, others for another
    assert np.array_equal(split_dataset(ml, "cold_items", seed=0).cold_items, ds.cold_items)
    assert not np.array_equal(split_dataset(ml, "cold_items", seed=1).cold_items, ds.cold_items)
    assert split_dataset(ml, "cold_items", cold_fraction=0.5).cold_items.sum() == ml.n_items // 2


def test_cold_split_options_are_checked(ml):
    with pytest.raises(ValueError, match="cold_fraction is for protocol=cold_items"):
        split_dataset(ml, "random", cold_fraction=0.2)
    with pytest.raises(ValueError, match="cold_fraction must be in"):
        split_dataset(ml, "cold_items", cold_fraction=1.5)


def test_cold_items_survive_the_cache_and_the_manifest_names_them(tmp_path, ml):
    from cllm4rec.data import prepare_dataset
    ds, manifest = prepare_dataset(ml100k(), split_args={"protocol": "cold_items", "seed": 0}, cache_dir=tmp_path)
    again, m2 = prepare_dataset(ml100k(), split_args={"protocol": "cold_items", "seed": 0}, cache_dir=tmp_path)
    assert m2["cache"]["reused"] and np.array_equal(again.cold_items, ds.cold_items)
    assert sorted(manifest["cold_items"]) == sorted(ds.item_ids[j] for j in np.flatnonzero(ds.cold_items))
    assert manifest["split"]["counts"]["valid_cold"] + manifest["split"]["counts"]["test_cold"] == \
        int(ds.cold_items[ds.item].sum())
    # the plain split has no cold items, on disk or in the manifest
    plain, m3 = prepare_dataset(ml100k(), cache_dir=tmp_path)
    assert plain.cold_items is None and "cold_items" not in m3


@pytest.fixture(scope="module")
def builder(cold_ds):
    _, tok = load_backbone("tiny_gpt2", seed=0)
    users = np.flatnonzero(np.bincount(cold_ds.user) > 0)[:150]          # a slice: every kind stays fast
    ds = cold_ds.select(np.isin(cold_ds.user, users))
    assert ds.cold_items.sum() > 0
    cfg = CorpusConfig(**{k: True for k in ("mim", "bpr", "history", "item_text", "user_text")},
                       history_field="title")
    return CorpusBuilder(ds, tok, Vocab(len(tok), ds.n_users, ds.n_items), cfg)


def test_no_cold_item_reaches_any_training_document(builder):
    ds, v = builder.ds, builder.vocab
    cold_tokens = v.item(np.flatnonzero(ds.cold_items))
    for kind in ("collaborative", "item_text", "user_text", "mim", "bpr", "history", "finetune", "rating"):
        for seed in range(3):
            docs = builder.epoch(kind, np.random.default_rng(seed))
            assert len(docs), kind
            assert not np.isin(docs.tokens, cold_tokens).any(), kind
            if len(docs.target_items):
                assert not ds.cold_items[docs.target_items].any(), kind
    # the cold items' own texts are not in the content documents either
    titles = {ds.item_text["title"][j] for j in np.flatnonzero(ds.cold_items)} - \
        {ds.item_text["title"][j] for j in np.flatnonzero(~ds.cold_items)}   # ML-100K repeats a few titles
    text_docs = builder.epoch("item_text", np.random.default_rng(0))
    shown = {builder.tokenizer.decode(text_docs.main(d)).strip() for d in range(len(text_docs))}
    assert not (titles - {""}) & shown


def test_projection_recovers_rows_that_are_a_linear_function_of_text(builder):
    """Trained rows = text vectors @ W: the ridge fitted on warm items predicts the cold ones."""
    backbone, _ = load_backbone("tiny_gpt2", seed=0)
    model = CLLM4Rec(backbone, builder.vocab, item_prior=torch.ones(builder.ds.n_items))
    placer = ItemRows("projection")
    ds = builder.ds
    x = placer.vectors(model, builder, item_descriptions(ds.item_text, range(ds.n_items))).double()
    g = torch.Generator().manual_seed(0)
    w = torch.randn(x.shape[1], x.shape[1], generator=g, dtype=torch.float64) * 0.01
    with torch.no_grad():
        for s in ("collaborative", "content"):
            model.item[s].weight.copy_((x @ w).float())
        model.item_bias.copy_((x @ w[:, 0]).float() + 3.0)
    truth = {s: model.item[s].weight.detach().clone() for s in ("collaborative", "content")}
    cold = np.flatnonzero(ds.cold_items)
    with torch.no_grad():                   # scramble the cold rows: they must come back from text
        for s in truth:
            model.item[s].weight[cold] = torch.randn(len(cold), x.shape[1], generator=g)
    done = place_cold_items(model, builder, "projection")
    assert done["cold_items"] == len(cold) and done["fitted_on"] > len(cold)
    for s, t in truth.items():
        err = (model.item[s].weight[cold] - t[cold]).norm() / t[cold].norm()
        assert err < 0.05, (s, float(err))
    bias = (x[cold] @ w[:, 0]).float()
    assert (model.item_bias[cold] - 3.0 - bias).norm() / bias.norm() < 0.05


def test_neighbours_of_a_text_equal_to_a_warm_items_are_its_rows(builder):
    backbone, _ = load_backbone("tiny_gpt2", seed=0)
    model = CLLM4Rec(backbone, builder.vocab, item_prior=torch.arange(builder.ds.n_items).float())
    ds = builder.ds
    placer = ItemRows("neighbours", k=1).fit(model, builder)
    j = int(np.flatnonzero(~ds.cold_items & (np.bincount(builder.train_item, minlength=ds.n_items) > 0))[7])
    rows = placer.rows(model, builder, item_descriptions(ds.item_text, [j]) + ["zzzq xxyq"])   # + no shared word
    assert torch.equal(rows["collaborative.item"][0], model.item["collaborative"].weight[j].detach())
    assert torch.equal(rows["content.item"][0], model.item["content"].weight[j].detach())
    assert rows["collaborative.item_bias"][0] == model.item_bias[j]
    assert torch.allclose(rows["collaborative.item_bias"][1], torch.as_tensor(placer.targets["collaborative.item_bias"].mean(), dtype=torch.float32))


@pytest.mark.parametrize("mode", ["projection", "neighbours"])
def test_a_blend_fit_read_in_another_mode_is_that_modes_own_fit(builder, mode):
    backbone, _ = load_backbone("tiny_gpt2", seed=0)
    model = CLLM4Rec(backbone, builder.vocab, item_prior=torch.arange(builder.ds.n_items).float())
    texts = item_descriptions(builder.ds.item_text, np.flatnonzero(builder.ds.cold_items)[:5])
    blend = ItemRows("blend").fit(model, builder)
    shared, own = blend.as_mode(mode).rows(model, builder, texts), ItemRows(mode).fit(model, builder).rows(model, builder, texts)
    for k, v in own.items():
        assert torch.allclose(shared[k], v, atol=1e-6), k
    assert blend.mode == "blend"
    with pytest.raises(ValueError, match="cannot be read as 'text'"):
        blend.as_mode("text")


def test_write_rows_touches_only_the_given_items(builder):
    backbone, _ = load_backbone("tiny_gpt2", seed=0)
    model = CLLM4Rec(backbone, builder.vocab, item_prior=torch.ones(builder.ds.n_items))
    before = {k: v.clone() for k, v in model.id_embeddings().items()}
    d = before["collaborative.item"].shape[1]
    write_rows(model, np.array([3, 5]), {"collaborative.item": torch.ones(2, d), "content.item": torch.ones(2, d),
                                         "collaborative.item_bias": torch.zeros(2)})
    after = model.id_embeddings()
    keep = np.setdiff1d(np.arange(builder.ds.n_items), [3, 5])
    for k in ("collaborative.item", "content.item", "collaborative.item_bias"):
        assert torch.equal(after[k][keep], before[k][keep])
    assert torch.equal(after["collaborative.item"][[3, 5]], torch.ones(2, d))


def test_describe_puts_the_title_first():
    assert describe({"year": "1995", "title": "Toy Story", "genres": "Animation", "brand": ""}) == \
        "Toy Story; genres: Animation; year: 1995"


def test_text_knn_ranks_by_shared_words():
    ds = Dataset.from_raw("t", ["u", "u", "v"], ["a", "b", "c"],
                          item_text={"a": {"title": "red apple pie"}, "b": {"title": "red cherry pie"},
                                     "c": {"title": "blue whale song"}, "d": {"title": "green apple pie"}})
    ds = Dataset(**{**ds.__dict__, "split": np.array([TRAIN, TEST, TRAIN], np.int8)})
    knn = TextKNN(stop_words=None).fit_dataset(ds)
    s = knn.scorer("test")(torch.tensor([0, 1]))                       # u saw "red apple pie"
    assert s.shape == (2, 3) and s[0, 1] > s[0, 2] and s[1, 2] > s[1, 1]


# ---------------------------------------------------------------------------- a trained cold run
@pytest.fixture(scope="module")
def cold_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cold") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLLM4REC_DATA_CACHE", str(tmp_path_factory.getbasetemp() / "cllm4rec-cache"))
        train(compose_cfg("finetune", run, *COLD, "model.finetune.from_pretrained=false", "model.item_init=text"))
    return run


def test_evaluation_reports_the_cold_views(cold_run):
    res = evaluate_run(compose_cfg("evaluate", cold_run, *COLD, "~baselines.multivae", "plot=false"))
    c = res["cold_items"]
    assert c["n_cold"] == 336
    text_rows = {"CLLM4Rec", "CLLM4Rec (text rows)", "CLLM4Rec (projection)", "CLLM4Rec (neighbours)", "random",
                 "tfidf_knn", "backbone_knn"}
    assert set(c["cold"]) == set(c["cold_in_catalogue"]) == text_rows        # ID-only rows cannot rank them
    assert set(c["warm"]) == text_rows | {"pop", "ease"}
    for view in ("cold", "cold_in_catalogue", "warm"):
        for row in c[view].values():
            assert 0 <= row["recall@20"] <= 1 and row["n_users_evaluated"] > 0
    # the random floor is beaten by TF-IDF on cold items
    assert c["cold"]["tfidf_knn"]["recall@20"] > c["cold"]["random"]["recall@20"]
    # the warm view does not depend on how cold rows were placed
    assert c["warm"]["CLLM4Rec"] == c["warm"]["CLLM4Rec (text rows)"] == c["warm"]["CLLM4Rec (neighbours)"]
    assert (cold_run / "evaluation.md").read_text().count("Cold items,") == 3


def test_add_items_ranks_new_items_and_leaves_existing_scores(cold_run):
    rec = Recommender.from_run(cold_run)
    # the run's held-out items are served with rows from their text, not their untrained ones
    trained = load_file(str(cold_run / "finetune" / "embeddings.safetensors"))["collaborative.item"]
    cold = np.flatnonzero(rec.ds.cold_items)
    served = rec.model.item["collaborative"].weight.detach()
    assert not torch.allclose(served[cold], trained[cold]) and torch.equal(served[~rec.ds.cold_items], trained[~rec.ds.cold_items])
    n = rec.n_items
    before = rec.scores([0], [np.array([1, 2, 3])])[0]
    ids = rec.add_items({"new1": {"title": "Toy Story 3", "genres": "Animation, Children's, Comedy", "year": "2010"},
                         "new2": "The Dark Knight; genres: Action, Crime, Drama; year: 2008"})
    assert ids == ["new1", "new2"] and rec.n_items == n + 2
    after = rec.scores([0], [np.array([1, 2, 3])])[0]
    assert after.shape == (n + 2,) and torch.isfinite(after[n:]).all()
    torch.testing.assert_close(after[:n], before, rtol=1e-6, atol=1e-6)
    # recommendable at once: the full list of a user contains them, with their titles
    with pytest.warns(UserWarning, match="left to recommend"):      # all of them: the seen ones are out
        top = rec.recommend(user=rec.ds.user_ids[0], k=n + 2)
    got = {r["item"]: r["title"] for r in top}
    assert got["new1"] == "Toy Story 3" and "new2" in got
    # a new user whose history holds a new item
    assert rec.recommend(history=["new1", rec.ds.item_ids[0]], k=5)
    # nothing was written without save
    assert not (cold_run / "finetune" / "added_items.safetensors").exists()
    with pytest.raises(ValueError, match="already exist"):
        rec.add_items({"new1": "again"})
    with pytest.raises(ValueError, match="no text"):
        rec.add_items({"new3": "  "})


def test_saved_items_load_with_the_run_and_the_cli_adds_from_a_file(cold_run, tmp_path, capsys):
    rec = Recommender.from_run(cold_run)
    rec.add_items({"s1": "Heat; genres: Action, Crime; year: 1995"}, save=True)
    again = Recommender.from_run(cold_run)
    assert again.item_ids[-1] == "s1" and again.added == {"s1": "Heat; genres: Action, Crime; year: 1995"}
    h = np.array([1, 2])
    torch.testing.assert_close(again.scores([0], [h])[0], rec.scores([0], [h])[0])
    # the CLI: a CSV of new items, listed for a new user who has seen one of them
    csv = tmp_path / "new.csv"
    csv.write_text("item,title,genres\nc1,Ran,\"Drama, War\"\n")
    recommend_main([str(cold_run), "--history", "c1", "s1", "--add-items", str(csv), "-k", "3", "--json"])
    out = capsys.readouterr()
    assert len(json.loads(out.out)) == 3 and "added 1 item" in out.err
    (cold_run / "finetune" / "added_items.safetensors").unlink()


@pytest.mark.parametrize("content, message", [
    ("{not json", "line 1: not valid JSON"),
    ('{"x": 3}', "a value must be a text"),
    ("item,title\nx\n", "line 2: 1 fields"),
    ("title\nx\n", "line 1: the header needs an `item` column"),
])
def test_bad_item_files_are_named(tmp_path, cold_run, content, message):
    path = tmp_path / ("items.csv" if content.count("\n") else "items.json")
    path.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "cllm4rec.recommend", str(cold_run), "--user", "1",
                           "--add-items", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and str(path) in proc.stderr and message in proc.stderr

"""Evaluation entry point, the recommender API and CLI, on a tiny run trained once per module."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from cllm4rec import metrics
from cllm4rec.baselines import Popularity
from cllm4rec.evaluate import evaluate_run, one_heldout_per_user
from cllm4rec.recommend import Recommender
from cllm4rec.train import train
from cllm4rec.vocab import IDTokenizer

ROOT = Path(__file__).resolve().parents[1]
TINY = ["experiment=tiny", "trainer=cpu", "logger=none", "trainer.enable_progress_bar=false"]


def compose_cfg(name, run_dir, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name=name, overrides=[*TINY, *overrides])
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    return cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLLM4REC_DATA_CACHE", str(tmp_path_factory.getbasetemp() / "cllm4rec-cache"))
        train(compose_cfg("pretrain", run, "model.pretrain.epochs=1", "model.pretrain.evaluate=false"))
        # with rating documents (a small sample per epoch): the rating task is evaluated too
        train(compose_cfg("finetune", run, "corpus.rating=true", "corpus.rating_weight=0.02"))
    return run


@pytest.fixture(scope="module")
def recommender(run_dir):
    return Recommender.from_run(run_dir)


def test_evaluate_table_matches_training_metrics_and_baselines(run_dir, tmp_path):
    cfg = compose_cfg("evaluate", run_dir, "~baselines.multivae", "~baselines.ease")
    res = evaluate_run(cfg)
    trained = json.loads((run_dir / "finetune" / "metrics.json").read_text())["test"]
    # the same prompts and scoring path as fine-tuning's final test evaluation
    for k in ("recall@20", "recall@40", "ndcg@100"):
        assert res["retrieval"]["CLLM4Rec"][k] == pytest.approx(trained[k], abs=1e-6)
    # the popularity row equals Popularity scored directly with the metric module
    saved = json.loads((run_dir / "evaluation.json").read_text())
    assert set(saved["retrieval"]) == {"CLLM4Rec", "pop"}
    rec = Recommender.from_run(run_dir)
    ds = rec.ds
    direct = metrics.evaluate(Popularity().fit(ds.matrix("train")), ds.matrix("train", "valid"), ds.matrix("test"),
                              (20,), ("recall",))
    assert saved["retrieval"]["pop"]["recall@20"] == pytest.approx(direct["recall@20"])
    assert "SAMPLED" in (run_dir / "evaluation.md").read_text()
    assert 0 < saved["ranking_sampled"]["pop"]["sampled_hr@10"] <= 1
    assert (run_dir / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # rating prediction: the same number as fine-tuning's final test, next to its baselines
    assert set(saved["rating"]) == {"CLLM4Rec", "mean rating", "user+item bias"}
    assert saved["rating"]["CLLM4Rec"]["rmse"] == pytest.approx(trained["rating_rmse"], abs=1e-6)
    assert saved["rating"]["CLLM4Rec"]["n_ratings"] == int((ds.split == 2).sum())
    assert "Rating prediction" in (run_dir / "evaluation.md").read_text()


def test_evaluate_with_a_sequence_baseline(run_dir):
    """SASRec is fitted on time-ordered histories and scores the test part from train + valid
    items: its row equals the same model scored directly by the metric module."""
    from cllm4rec.sasrec import SASRec
    cfg = compose_cfg("evaluate", run_dir, "~baselines.multivae", "~baselines.ease", "~baselines.pop",
                      "+baseline@baselines.sasrec=sasrec", "baselines.sasrec.max_epochs=2", "plot=false")
    res = evaluate_run(cfg)
    ds = Recommender.from_run(run_dir).ds
    direct = SASRec(max_epochs=2).fit_dataset(ds)
    ref = metrics.evaluate(direct.scorer("test"), ds.matrix("train", "valid"), ds.matrix("test"), (20,), ("recall",))
    assert res["retrieval"]["sasrec"]["recall@20"] == pytest.approx(ref["recall@20"], abs=1e-6)


def test_baseline_group_takes_overrides_and_the_run_wiring_and_refuses_unknown_keys():
    """The `baseline` group (config.py, from the classes' constructors): a default is overridable
    from the command line, the run's backbone and seed reach the backbone k-NN, every registered
    baseline instantiates, and a misspelt key stops at compose with its name."""
    from hydra.errors import ConfigCompositionException
    from hydra.utils import instantiate

    from cllm4rec.config import BASELINES
    added = [f"+baseline@baselines.{n}={n}" for n in BASELINES if n not in ("pop", "ease", "multivae")]
    cfg = compose_cfg("evaluate", "unused", "baselines.ease.l2=250", "seed=7", *added)
    built = {n: instantiate(cfg.baselines[n]) for n in BASELINES}
    assert built["ease"].l2 == 250.0 and built["sasrec"].max_len == 50
    assert (built["backbone_knn"].backbone, built["backbone_knn"].seed) == (cfg.backbone.name, 7)
    with pytest.raises(ConfigCompositionException, match="l3"):
        compose_cfg("evaluate", "unused", "baselines.ease.l3=1")


def test_one_heldout_per_user_is_one_target_and_seeded():
    rng = np.random.default_rng(0)
    target = sp.random(30, 50, density=0.1, format="csr", random_state=1)
    a, b = one_heldout_per_user(target, 3), one_heldout_per_user(target, 3)
    assert (a != b).nnz == 0
    has = np.diff(target.indptr) > 0
    assert (np.diff(a.indptr) == has.astype(int)).all()
    assert (a.multiply(target != 0) != 0).sum() == has.sum()      # each kept item is one of the user's targets
    assert (one_heldout_per_user(target, 4) != a).nnz > 0          # another seed, another draw
    del rng


def test_known_user_scores_equal_hand_built_prompt(recommender):
    rec, b = recommender, recommender.builder
    u = 5
    hist = b.train_item[b.train_ptr[u]:b.train_ptr[u + 1]][:7]
    got = rec.scores([u], [hist])[0]
    # the same prompt spelled as text and encoded by the ID tokenizer, scored by a model with
    # the trained vocabulary layout (no cold-start row)
    text = (f"<user_{u}> has interacted with " + " ".join(f"<item_{j}>" for j in hist)
            + f", <user_{u}> will interact with")
    ids = torch.tensor([IDTokenizer(b.tokenizer, b.vocab).encode(text)])
    from cllm4rec.model import CLLM4Rec
    plain = CLLM4Rec(rec.model.backbone, b.vocab)
    tables = rec.model.id_embeddings()
    plain.load_id_embeddings({k: v[:-1] if k.endswith(".user") else v for k, v in tables.items()})
    with torch.no_grad():
        want = plain.recommend_logits(ids, torch.ones_like(ids), torch.tensor([ids.shape[1] - 1]))[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_recommend_known_user_excludes_every_seen_item(recommender):
    rec = recommender
    user = rec.ds.user_ids[3]
    out = rec.recommend(user=user, k=15)
    assert [r["rank"] for r in out] == list(range(1, 16))
    assert all(out[i]["score"] >= out[i + 1]["score"] for i in range(14))
    seen = {rec.ds.item_ids[j] for j in rec.ds.item[rec.ds.user == 3]}
    assert not seen & {r["item"] for r in out}
    assert all(isinstance(r["title"], str) and r["title"] for r in out)     # ML-100K has titles


def test_cold_start_user_uses_mean_embedding_and_excludes_history(recommender):
    rec = recommender
    users = rec.model.user["collaborative"].weight
    torch.testing.assert_close(users[-1], users[:-1].mean(0))
    history = rec.ds.item_ids[:5]
    out = rec.recommend(history=history, k=10)
    assert len(out) == 10 and not set(history) & {r["item"] for r in out}
    # a different history gives a different list: the prompt is read, not ignored
    other = rec.recommend(history=rec.ds.item_ids[100:110], k=10)
    assert [r["item"] for r in out] != [r["item"] for r in other]


@pytest.mark.parametrize("kwargs, message", [
    ({"user": "no-such-user"}, "no-such-user"),
    ({"history": ["1", "no-such-item"]}, "no-such-item"),
    ({}, "exactly one"),
])
def test_unknown_ids_fail_clearly(recommender, kwargs, message):
    with pytest.raises((KeyError, ValueError), match=message):
        recommender.recommend(**kwargs)


def test_recommend_cli(run_dir, recommender):
    user = recommender.ds.user_ids[0]
    out = subprocess.run([sys.executable, "-m", "cllm4rec.recommend", str(run_dir), "--user", user, "-k", "4",
                          "--json"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [r["item"] for r in json.loads(out.stdout)] == [r["item"] for r in recommender.recommend(user=user, k=4)]
    bad = subprocess.run([sys.executable, "-m", "cllm4rec.recommend", str(run_dir), "--user", "nobody"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "unknown user id 'nobody'" in bad.stderr


@pytest.mark.parametrize("k", [-3, 0, 1.5, True, "5"])
def test_k_below_one_or_not_a_count_is_refused(recommender, k):
    with pytest.raises(ValueError, match="k must be a whole number >= 1"):
        recommender.recommend(user=recommender.ds.user_ids[0], k=k)


def test_k_above_the_recommendable_items_says_so(recommender):
    rec = recommender
    user = rec.ds.user_ids[0]
    seen = len(rec._seen.indices[rec._seen.indptr[0]:rec._seen.indptr[1]])
    with pytest.warns(UserWarning, match=f"only {rec.ds.n_items - seen} of the {rec.ds.n_items} items"):
        out = rec.recommend(user=user, k=rec.ds.n_items + 5)
    assert len(out) == rec.ds.n_items - seen and len({r["item"] for r in out}) == len(out)


@pytest.mark.parametrize("k, code, message", [("-3", 2, "must be a whole number >= 1, got '-3'"),
                                              ("0", 2, "must be a whole number >= 1, got '0'"),
                                              ("100000", 0, "note: k=100000 but only")])
def test_recommend_cli_checks_k(run_dir, recommender, k, code, message):
    out = subprocess.run([sys.executable, "-m", "cllm4rec.recommend", str(run_dir), "--user",
                          recommender.ds.user_ids[0], "-k", k], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == code and message in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


def test_a_damaged_embeddings_file_is_named_not_a_traceback(run_dir, tmp_path):
    import shutil
    from cllm4rec.errors import RunError
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    emb = copy / "finetune" / "embeddings.safetensors"
    emb.write_bytes(emb.read_bytes()[: emb.stat().st_size // 2])
    with pytest.raises(RunError, match=r"embeddings\.safetensors is damaged"):
        Recommender.from_run(copy)
    out = subprocess.run([sys.executable, "-m", "cllm4rec.recommend", str(copy), "--user", "1"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and str(emb) in out.stderr and "Traceback" not in out.stderr


def test_a_copied_run_folder_serves_without_the_data(run_dir, recommender, tmp_path, monkeypatch):
    import shutil
    import cllm4rec.prepare
    from cllm4rec.errors import RunError
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(run_dir, copy)
    monkeypatch.setenv("CLLM4REC_DATA_CACHE", str(tmp_path / "no-cache"))     # no prepared data here...

    def no_raw_data(*args, **kwargs):
        raise AssertionError("serving a copied run folder must not read the raw data")
    monkeypatch.setattr(cllm4rec.prepare, "prepared_dataset", no_raw_data)    # ...and no raw files read
    moved = Recommender.from_run(copy)
    user = recommender.ds.user_ids[3]
    assert moved.recommend(user=user, k=10) == recommender.recommend(user=user, k=10)
    (copy / "data" / "id_maps.json").write_text("{}")
    with pytest.raises(RunError, match=r"data is damaged \(id_maps.json differs"):
        Recommender.from_run(copy)

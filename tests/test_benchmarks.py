"""benchmarks/quality.py reuses a finished seed only when it was trained with the config that
the committed defaults and the given overrides compose now (a changed default retrains)."""
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from cllm4rec.train import train
from test_train import cfg_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality  # noqa: E402

OVERRIDES = ["experiment=tiny", "model.finetune.from_pretrained=false", "+baseline@baselines.sasrec=sasrec"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality")
    train(cfg_for("finetune", tmp, *quality.training_overrides(OVERRIDES), "trainer.fast_dev_run=true", "seed=3"))
    run = tmp / "run"
    (run / "evaluation.json").write_text("{}")
    return run


def test_a_run_folder_carries_the_config_the_overrides_compose(finished_run, shared_data):
    stored = quality.folder_config(finished_run)
    assert stored == quality.expected_config(OVERRIDES, 3)
    assert stored["model"]["finetune"]["batch_size"] == 4 and stored["seed"] == 3
    assert quality.finished(finished_run, OVERRIDES, 3)
    assert not quality.finished(finished_run, OVERRIDES, 4)
    assert not quality.finished(finished_run, [*OVERRIDES, "model.finetune.batch_size=64"], 3)
    assert not quality.finished(finished_run.parent / "elsewhere", OVERRIDES, 3)


def test_a_stage_cut_off_mid_run_resumes_under_its_own_config_only(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "finetune" / "metrics.json").unlink()
    ckpt = run / "finetune" / "checkpoints" / "last.ckpt"
    ckpt.unlink(missing_ok=True)
    assert not quality.interrupted(run, "finetune", OVERRIDES, 3)       # no checkpoint: a fresh run
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"")
    assert quality.interrupted(run, "finetune", OVERRIDES, 3) and not quality.interrupted(run, "pretrain", OVERRIDES, 3)
    # a checkpoint of another config (or seed) starts over instead of mixing two runs
    assert not quality.interrupted(run, "finetune", [*OVERRIDES, "model.finetune.lr=0.5"], 3)
    assert not quality.interrupted(run, "finetune", OVERRIDES, 4)
    (run / "finetune" / "metrics.json").write_text("{}")
    assert not quality.interrupted(run, "finetune", OVERRIDES, 3)       # it finished: nothing to resume


def test_results_file_entries_are_reused_only_with_the_same_config(finished_run, shared_data, tmp_path):
    config = quality.folder_config(finished_run)

    def entry(seed, **finetune):
        c = json.loads(json.dumps(config))
        c["seed"] = seed
        c["model"]["finetune"].update(finetune)
        return {"seed": seed, "config": c}

    path = tmp_path / "quality_x.json"
    path.write_text(json.dumps({"overrides": OVERRIDES, "runs": [
        entry(3), entry(4), entry(5, batch_size=64), {"seed": 6}]}))
    assert sorted(quality.earlier_runs(path, OVERRIDES)) == [3, 4]
    assert quality.earlier_runs(path, [*OVERRIDES, "model.lambda_mr=0.5"]) == {}


def test_pretraining_runs_only_where_fine_tuning_reads_it():
    assert quality.stages_for(["experiment=tiny"]) == ("pretrain", "finetune", "evaluate")
    assert quality.stages_for(quality.training_overrides(OVERRIDES)) == ("finetune", "evaluate")
    assert quality.stages_for(["experiment=sequential_tuned"]) == ("finetune", "evaluate")


@pytest.mark.parametrize("search_name, extra, run_name", [
    ("beauty_loo_optuna", ["data=ml100k"], "search_beauty_loo"),
    # its trials fine-tune one pretraining run (pretrained=...); here from random rows instead
    ("ml100k_tiny_lora_optuna", ["model.finetune.from_pretrained=false"], "search_ml100k_tiny_lora"),
])
def test_search_collects_a_real_optuna_sweep(tmp_path, shared_data, search_name, extra, run_name):
    """The shipped Optuna searches, run as a user runs them (2 fast_dev_run trials on ML-100K), then
    benchmarks/search.py: every trial, the space and the choice, validation only."""
    import subprocess
    import yaml
    import search
    sweep = tmp_path / "sweep"
    subprocess.run([sys.executable, "-m", "cllm4rec.finetune", "--multirun", f"hparams_search={search_name}",
                    *extra, "trainer=cpu", "trainer.fast_dev_run=2", "trainer.enable_progress_bar=false",
                    "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"],
                   cwd=quality.ROOT, check=True, capture_output=True)
    res = search.collect(sweep)
    space = yaml.safe_load((quality.ROOT / f"conf/hparams_search/{search_name}.yaml").read_text())
    params = space["hydra"]["sweeper"]["params"]
    assert set(res["search_space"]) == set(params) and res["name"] == run_name
    assert [t["number"] for t in res["trials"]] == [0, 1] and all(t["state"] == "complete" for t in res["trials"])

    def inside(value: str, spec: str) -> bool:    # Hydra's sweep grammar: choice(a, b) / interval(lo, hi)
        if spec.startswith("choice("):
            return value in [v.strip() for v in spec[len("choice("):-1].split(",")]
        low, high = map(float, re.search(r"interval\(([^,]+),([^)]+)\)", spec).groups())
        return low <= float(value) <= high

    for t in res["trials"]:
        assert t["val_sum"] == pytest.approx(sum(t["valid"][k] for k in ("recall@20", "recall@40", "ndcg@100")))
        drawn = dict(o.split("=", 1) for o in t["overrides"])
        assert all(inside(drawn[k], spec) for k, spec in params.items()), (drawn, params)
    assert res["trials"][0]["overrides"] != res["trials"][1]["overrides"]    # the sampler moved
    assert res["chosen_value"] == pytest.approx(max(t["val_sum"] for t in res["trials"]))
    best = dict(o.split("=", 1) for o in res["trials"][res["best_trial"]]["overrides"])
    assert {k: str(v) for k, v in res["chosen"].items()} == {k: best[k] for k in res["chosen"]}
    assert "test" not in json.dumps(res["trials"])


def test_a_trained_stage_is_not_trained_again_when_only_the_evaluation_is_missing(finished_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "evaluation.json").unlink()
    calls, real = [], quality.subprocess.run

    def fake(cmd, **kw):
        if cmd[1:2] != ["-m"]:
            return real(cmd, **kw)                           # git, for the commit
        calls.append(cmd[2])                                 # -m cllm4rec.<stage>
        (run / "evaluation.json").write_text(json.dumps({"retrieval": {}, "ranking_sampled": {}, "split": {},
                                                         "data": "ml100k", "backbone": "tiny_gpt2"}))
    monkeypatch.setattr(quality.subprocess, "run", fake)
    args = quality.argparse.Namespace(name="x", overrides=OVERRIDES, rerun=False)
    quality.one_seed(args, 3, run)
    assert calls == ["cllm4rec.evaluate"]                    # the fine-tuning of this config is reused
    calls.clear()
    (run / "evaluation.json").unlink()
    quality.one_seed(quality.argparse.Namespace(name="x", overrides=[*OVERRIDES, "model.finetune.lr=0.5"],
                                                rerun=False), 3, run)
    assert calls == ["cllm4rec.finetune", "cllm4rec.evaluate"]   # another config trains again


def test_sasrec_search_starts_from_the_defaults_and_continues_from_its_file(tmp_path, monkeypatch):
    import sasrec_search
    from test_sasrec import successor_dataset
    ds = successor_dataset(n_users=60, n_items=20)
    monkeypatch.setattr(sasrec_search, "load_beauty_loo", lambda data: (ds, {"key": "successor"}))
    out = tmp_path / "search.json"
    common = ["--trial-minutes", "0.0001", "--out", str(out)]         # one epoch per trial
    sasrec_search.main(["--trials", "2", *common])
    first = json.loads(out.read_text())
    assert [t["number"] for t in first["trials"]] == [0, 1]
    assert first["trials"][0]["params"] == sasrec_search.DEFAULTS
    assert set(first["search_space"]) == set(first["trials"][1]["params"]) == set(sasrec_search.SPACE)
    sasrec_search.main(["--trials", "3", *common])                     # replays two, runs one more
    again = json.loads(out.read_text())
    assert again["trials"][:2] == first["trials"] and len(again["trials"]) == 3
    best = max(again["trials"], key=lambda t: t["valid_ndcg@10"])
    assert again["chosen"] == best["params"] and again["best_trial"] == best["number"]
    assert f"--dim {best['params']['dim']}" in again["command"] and "test" not in json.dumps(again["trials"])
    with pytest.raises(SystemExit, match="other fixed settings"):
        sasrec_search.main(["--trials", "4", "--patience", "9", *common])


def test_padding_packs_first_fit_decreasing_and_counts_padding_exactly():
    """benchmarks/padding.py against hand counts: FFD puts [4, 3, 2, 1] in rows of 4 as 4 | 3+1 | 2
    (3 rows, 10 of 12 slots); a cut pads each batch to its longest document."""
    import padding
    lengths = np.array([4, 3, 2, 1])
    packed = padding.pack(lengths)
    assert (packed["rows"], packed["row_length"], packed["padded_tokens"]) == (3, 4, 12)
    assert packed["efficiency"] == pytest.approx(10 / 12, abs=1e-4) and packed["attention_scores"] == 3 * 16
    batches = padding.cut(lengths, [np.array([0, 3]), np.array([1, 2])])
    assert (batches["padded_tokens"], batches["attention_scores"]) == (2 * 4 + 2 * 3, 2 * 16 + 2 * 9)
    rng = np.random.default_rng(0)
    for _ in range(20):      # never fewer rows than the tokens need, never more than one per document
        n = rng.integers(1, 60, size=int(rng.integers(1, 200)))
        rows = padding.pack(n)["rows"]
        assert -(-n.sum() // n.max()) <= rows <= len(n)


def test_batch_scaling_reads_the_time_to_the_target_from_history(tmp_path):
    """batch_scaling.curve: the first epoch whose validation reaches the target, its wall seconds;
    none when it never does; without a target, its own best."""
    import batch_scaling
    (tmp_path / "finetune").mkdir()
    hist = [{"epoch": e, "val_recall@20": v, "seconds": s} for e, v, s in [(0, .20, 10.), (1, .26, 21.), (2, .25, 33.)]]
    (tmp_path / "finetune" / "history.json").write_text(json.dumps(hist))
    c = batch_scaling.curve(tmp_path, .255)
    assert (c["best_epoch"], c["epoch_at_target"], c["seconds_to_target"], c["epochs_run"]) == (1, 1, 21., 3)
    assert c["seconds_per_epoch"] == pytest.approx(11.) and batch_scaling.curve(tmp_path, .3)["seconds_to_target"] is None
    assert batch_scaling.curve(tmp_path, None)["seconds_to_target"] == 21.


def test_profile_steps_splits_the_wall_time_by_operator_category():
    """profile_steps.categories: operator self times by category plus the unexplained rest, as shares of the wall."""
    import profile_steps
    ops = {("aten::mm", ""): (2.0, 3), ("aten::addmm", ""): (0.5, 1), ("aten::_to_copy", ""): (1.0, 9)}
    share = profile_steps.categories(ops, wall=5.0)
    assert share == {"matmul": 0.5, "python / autograd / profiler (wall - op self time)": 0.3,
                     "dtype casts / copies": 0.2}


def test_bf16_weights_stepper_keeps_the_id_tables_and_adam_in_fp32(shared_data):
    """tuning_throughput.Stepper(bf16_weights=True), profile_steps' bf16w: the frozen backbone held in
    bf16 and run without autocast; the ID tables stay fp32 and one step moves them."""
    import torch
    import tuning_throughput as tt
    from cllm4rec.backbone import load_backbone
    _, tok = load_backbone("tiny_gpt2", seed=0)
    builder, batches = tt.sample_batches("L", tok, 1)
    s = tt.Stepper("tiny_gpt2", "frozen", builder, False, bf16_weights=True)
    assert not s.autocast
    assert {p.dtype for p in s.model.backbone.parameters()} == {torch.bfloat16}
    before = {k: t.weight.detach().clone() for k, t in s.model.item.items()}
    assert all(t.dtype == torch.float32 for t in before.values())
    s.step(batches[0])
    assert not torch.equal(s.model.item["collaborative"].weight, before["collaborative"])

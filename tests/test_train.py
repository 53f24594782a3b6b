"""The real Hydra config, composed and run on tiny backbones (lightning-hydra-template habit):
fast_dev_run of both stages, config errors, a sweep's command line, resume after SIGKILL, DDP."""
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from cllm4rec.errors import RunError
from cllm4rec.train import train

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
TINY = ["experiment=tiny", "trainer=cpu", "logger=none", "trainer.enable_progress_bar=false"]


def cfg_for(stage, tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name=stage, overrides=[*TINY, *overrides])
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "run")
    return cfg


@pytest.mark.parametrize("data", ["ml100k", "beauty", "yelp", "scientific", "all_beauty", "ml_latest_small"])
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_every_data_and_stage_composes(tmp_path, data, stage):
    """Each data group's reader accepts its keys, and the stage's module, data module and callbacks
    (conf/stage.yaml) build from the composed config: every interpolation resolves, and the
    stage's own section of the model group is the one read (pretraining and fine-tuning batch
    differently by default)."""
    from hydra.utils import instantiate

    from cllm4rec.config import ModelConfig
    cfg = cfg_for(stage, tmp_path, f"data={data}")
    assert callable(instantiate(cfg.data.source).read)
    built = {name: instantiate(c, **({"dirpath": str(tmp_path)} if "dirpath" in c else {}))
             for name, c in cfg.callbacks.items()}
    assert ("early_stopping" in built) == (stage == "finetune")
    batch = instantiate(cfg.datamodule, _partial_=True).keywords["batch_size"]
    assert batch == {"pretrain": ModelConfig().pretrain.batch_size, "finetune": ModelConfig().finetune.batch_size}[stage]


def test_fast_dev_run_both_stages(tmp_path, shared_data):
    pre = train(cfg_for("pretrain", tmp_path, "trainer.fast_dev_run=true"))
    assert set(pre["test"]) >= {"recall@20", "recall@40", "ndcg@100"}
    run = tmp_path / "run"
    assert (run / "pretrain" / "embeddings.safetensors").exists() and (run / "id_maps.json").exists()
    fin = train(cfg_for("finetune", tmp_path, "trainer.fast_dev_run=true"))
    assert 0.0 <= fin["test"]["recall@20"] <= 1.0
    saved = json.loads((run / "finetune" / "metrics.json").read_text())
    assert saved["test"]["recall@20"] == pytest.approx(fin["test"]["recall@20"])
    manifest = json.loads((run / "manifest-finetune.json").read_text())
    assert manifest["inputs"][0]["sha256"] and manifest["versions_run"]["torch"]


@pytest.mark.slow
@pytest.mark.parametrize("tuning", ["frozen", "lora"])
def test_compiled_backbone_trains_the_same_embeddings(tmp_path, shared_data, tuning):
    """`compile=true`: the same trained tables and metrics as eager (fp32), checkpoints unchanged.
    Through trained adapters the gradients round differently, and Adam's first step moves an element
    by lr x sign(g): where g is about 0 the two runs may step apart, by at most 2 lr."""
    from safetensors.torch import load_file
    runs = {}
    for flag in ("false", "true"):
        res = train(cfg_for("pretrain", tmp_path / flag, "trainer.fast_dev_run=true", "trainer.precision=32",
                            f"compile={flag}", f"model.backbone_tuning={tuning}", "model.pretrain.lr=1e-4"))
        runs[flag] = (res, load_file(tmp_path / flag / "run" / "pretrain" / "embeddings.safetensors"))
    (eager, t_eager), (compiled, t_compiled) = runs["false"], runs["true"]
    assert t_eager.keys() == t_compiled.keys()
    for k in t_eager:
        if tuning == "frozen":
            torch.testing.assert_close(t_compiled[k], t_eager[k], rtol=1e-4, atol=1e-6)
        else:
            apart = (t_compiled[k] - t_eager[k]).abs()
            assert apart.max() <= 2e-4 + 1e-6 and (apart > 1e-6).float().mean() < 0.05, k
    assert compiled["test"]["recall@20"] == pytest.approx(eager["test"]["recall@20"], abs=1e-3)
    ckpt = torch.load(tmp_path / "true" / "run" / "pretrain" / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any("compiled" in k or "_orig_mod" in k for k in ckpt["state_dict"])


def test_finetune_history_has_the_popularity_reference(tmp_path, shared_data):
    # zero ID rows: the item head is its bias, the smoothed log popularity, so the first step's
    # NLL through the model (logits, softmax, multi-hot) must equal the reference (a gather)
    train(cfg_for("finetune", tmp_path, "trainer.fast_dev_run=true", "model.init_std=0",
                  "model.finetune.from_pretrained=false", "trainer.precision=32"))
    (row,) = json.loads((tmp_path / "run" / "finetune" / "history.json").read_text())
    assert row["loss_rec_pop"] > 0
    assert row["loss_rec"] == pytest.approx(row["loss_rec_pop"], rel=1e-5)


def test_finetune_reports_the_best_epochs_validation_without_running_it_again(tmp_path, shared_data, monkeypatch):
    """The validation metrics that fit measured at the best epoch (kept in its checkpoint) are the
    ones a fresh validation of the best checkpoint gives, and the users are not ranked again."""
    import lightning.pytorch as pl
    from cllm4rec.modules import CLLM4RecModule
    over = ["model.finetune.from_pretrained=false", "model.finetune.epochs=3", "+trainer.limit_train_batches=3",
            "trainer.precision=32", "model.finetune.lr=3e-3", "model.finetune.validate_every_epoch=true"]
    calls = []
    validate = pl.Trainer.validate
    monkeypatch.setattr(pl.Trainer, "validate", lambda self, *a, **k: calls.append(1) or validate(self, *a, **k))
    kept = train(cfg_for("finetune", tmp_path / "kept", *over))
    assert calls == []
    history = json.loads((tmp_path / "kept" / "run" / "finetune" / "history.json").read_text())
    best = max(history, key=lambda r: sum(r[f"val_{k}"] for k in ("recall@20", "recall@40", "ndcg@100")))
    assert kept["valid"]["recall@20"] == pytest.approx(best["val_recall@20"], rel=1e-6)
    # a checkpoint without the kept metrics (saved by an older version): validated again, same numbers
    save = CLLM4RecModule.on_save_checkpoint
    monkeypatch.setattr(CLLM4RecModule, "on_save_checkpoint",
                        lambda self, ckpt: (save(self, ckpt), ckpt.pop("valid_results", None)))
    again = train(cfg_for("finetune", tmp_path / "again", *over))
    assert calls == [1]
    assert again["valid"] == kept["valid"] and again["test"] == kept["test"]


def test_finetune_validates_once_after_the_last_epoch_by_default(tmp_path, shared_data):
    """validate_every_epoch=false: only the last epoch is validated, and its weights are the ones tested."""
    over = ["model.finetune.from_pretrained=false", "model.finetune.epochs=3", "+trainer.limit_train_batches=2",
            "trainer.precision=32"]
    res = train(cfg_for("finetune", tmp_path, *over))
    history = json.loads((tmp_path / "run" / "finetune" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1, 2]
    assert ["val_recall@20" in r for r in history] == [False, False, True]
    assert res["valid"]["recall@20"] == pytest.approx(history[-1]["val_recall@20"], rel=1e-6)
    best = torch.load(res["best_checkpoint"], weights_only=True)
    assert best["epoch"] == 2


@pytest.mark.parametrize("sparse", [True, False])
def test_user_rows_train_through_lightning_with_clipping(tmp_path, shared_data, monkeypatch, sparse):
    """model.sparse_user_rows=true: the user tables' gradients reach the optimizer sparse (its lazy
    row update runs); sparse or dense, gradient clipping works with the fused optimizer (Lightning's
    own clipping refuses it); both stages finish."""
    from cllm4rec import modules, optim
    calls = {"rows": 0, "clip": 0}
    lazy, clip = optim.AdamWSparseRows._lazy_rows, modules.clip_grad_norm
    monkeypatch.setattr(optim.AdamWSparseRows, "_lazy_rows",
                        lambda self, *a: (calls.__setitem__("rows", calls["rows"] + 1), lazy(self, *a)))
    monkeypatch.setattr(modules, "clip_grad_norm", lambda *a: (calls.__setitem__("clip", calls["clip"] + 1), clip(*a)))
    over = [f"model.sparse_user_rows={str(sparse).lower()}", "trainer.gradient_clip_val=1.0", "+trainer.limit_train_batches=2",
            "model.pretrain.epochs=2", "model.finetune.epochs=1"]
    train(cfg_for("pretrain", tmp_path, *over, "model.pretrain.evaluate=false"))
    res = train(cfg_for("finetune", tmp_path, *over))
    assert (calls["rows"] > 0) == sparse and calls["clip"] > 0
    assert 0 < res["test"]["recall@20"] <= 1


def test_pretrain_without_evaluation_prints_no_empty_table_nor_known_noise(tmp_path, shared_data, capsys, caplog):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        res = train(cfg_for("pretrain", tmp_path, "trainer.fast_dev_run=true", "model.pretrain.evaluate=false"))
    assert "test" not in res
    err = capsys.readouterr().err
    assert "no ranking metrics after pretraining" in err and "| model |" not in err
    assert (tmp_path / "run" / "pretrain" / "metrics.md").read_text().strip() == ""
    messages = [str(w.message) for w in seen] + [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "in eval mode" in m or "Tip:" in m or "LeafSpec" in m], messages


def test_finetune_without_pretraining_says_what_to_do(tmp_path):
    with pytest.raises(RunError, match="cllm4rec.pretrain"):
        train(cfg_for("finetune", tmp_path, "trainer.fast_dev_run=true"))


@pytest.mark.parametrize("override, key", [("model.lambda_mr=abc", "model.lambda_mr"),
                                           ("model.finetune.epochs=1.5", "model.finetune.epochs"),
                                           ("model.lamda_mr=1", "model.lamda_mr")])
def test_wrong_type_or_unknown_key_fails_at_compose(tmp_path, override, key):
    from hydra.errors import ConfigCompositionException
    with pytest.raises(ConfigCompositionException) as err:
        cfg_for("pretrain", tmp_path, override)
    assert key in str(err.value) + str(err.value.__cause__)


@pytest.mark.parametrize("override, message", [
    ("model.mr_reduction=median", "mr_reduction"),
    ("model.finetune.lr=-1", r"model.finetune.lr must be > 0, got -1"),
    ("model.pretrain.batch_size=0", r"model.pretrain.batch_size must be >= 1, got 0"),
    ("model.finetune.patience=-2", r"model.finetune.patience must be >= 0"),
])
def test_out_of_range_fails_clearly(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        train(cfg_for("pretrain", tmp_path, override))


def _cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_wandb_sweep_trials_write_their_own_folders(tmp_path, shared_data):
    """The W&B agent's command line for two trials (the ids it sets in the environment): each
    fine-tunes from the shared pretraining in run_root and writes a complete folder of its own."""
    sweep = yaml.safe_load((ROOT / "conf" / "sweep" / "lambda_mr.yaml").read_text())
    assert sweep["command"][2:4] == ["-m", "cllm4rec.finetune"] and sweep["metric"]["name"] == "val/sum_best"
    root = tmp_path / "single"
    pre = _cli("-m", "cllm4rec.pretrain", *TINY, "trainer.fast_dev_run=true", f"run_root={root}",
               "model.pretrain.evaluate=false")
    assert pre.returncode == 0, pre.stderr[-3000:]
    # W&B offline, with a short real epoch (fast_dev_run would switch the logger off)
    common = [*(o for o in TINY if not o.startswith("logger=")), "logger=wandb", "+trainer.limit_train_batches=2", "model.finetune.epochs=1", f"run_root={root}"]
    for trial, value in (("t1", 0.1), ("t2", 10.0)):
        env = {"WANDB_SWEEP_ID": "s7", "WANDB_RUN_ID": trial, "WANDB_MODE": "offline"}
        fin = _cli("-m", "cllm4rec.finetune", *common, f"model.lambda_mr={value}", env=env)
        assert fin.returncode == 0, fin.stderr[-3000:]
        assert f"fine-tuning from the pretraining in {root}" in fin.stderr
    for trial, value in (("t1", 0.1), ("t2", 10.0)):
        folder = root / "sweep-s7" / trial
        assert yaml.safe_load((folder / "config-finetune.yaml").read_text())["model"]["lambda_mr"] == value
        assert (folder / "finetune" / "metrics.json").exists() and (folder / "finetune" / "embeddings.safetensors").exists()
        (record,) = folder.glob(f"wandb/offline-run-*-{trial}/run-{trial}.wandb")     # W&B's own offline record
        raw = record.read_bytes()
        assert os.path.relpath(folder, ROOT).encode() in raw and b"val/sum_best" in raw   # its name, its summary
    assert not (root / "finetune").exists()      # the shared run keeps only its pretraining


@pytest.mark.slow
def test_a_two_trial_multirun_of_both_stages(tmp_path, shared_data):
    sweep = ["--multirun", *TINY, "trainer.fast_dev_run=true", "model.lambda_mr=0.5,2",
             f"hydra.sweep.dir={tmp_path / 'mr'}"]
    pre = _cli("-m", "cllm4rec.pretrain", *sweep, "model.pretrain.evaluate=false")
    assert pre.returncode == 0, pre.stderr[-3000:]
    fin = _cli("-m", "cllm4rec.finetune", *sweep)
    assert fin.returncode == 0, fin.stderr[-3000:]
    for job, value in ((0, 0.5), (1, 2.0)):     # the same job number: the same lambda in both stages
        folder = tmp_path / "mr" / str(job)
        for stage in ("pretrain", "finetune"):
            assert yaml.safe_load((folder / f"config-{stage}.yaml").read_text())["model"]["lambda_mr"] == value
            assert (folder / stage / "embeddings.safetensors").exists()


def test_wandb_runs_are_named_after_their_folder(tmp_path):
    from cllm4rec.train import make_logger
    cfg = cfg_for("finetune", tmp_path, "logger=wandb")
    logger = make_logger(cfg)
    assert logger._wandb_init["name"] == os.path.relpath(tmp_path / "run")


@pytest.mark.slow
def test_hydra_multirun(tmp_path, shared_data):
    out = _cli("-m", "cllm4rec.pretrain", "--multirun", *TINY, "trainer.fast_dev_run=true",
               "model.lambda_mr=0.1,1.0", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    for job in ("0", "1"):
        assert (tmp_path / job / "pretrain" / "embeddings.safetensors").exists()


KILLER = textwrap.dedent("""
    import os, signal, sys
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict
    from cllm4rec import modules
    from cllm4rec.train import train
    overrides, run_dir, kill_at = sys.argv[1].split(), sys.argv[2], int(sys.argv[3])
    with initialize_config_dir(config_dir=%r, version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=overrides)
    with open_dict(cfg):
        cfg.run_dir = run_dir
    if kill_at > 0:
        step = modules.CLLM4RecModule.training_step
        def dying(self, batch, i):
            if self.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)     # a real crash: no cleanup, no hooks
            return step(self, batch, i)
        modules.CLLM4RecModule.training_step = dying
    train(cfg)
""") % CONF


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_after_sigkill_matches_uninterrupted(tmp_path, shared_data, schedule):
    """A crash mid-epoch, then resume=true: the same test metrics and history as a run never
    interrupted. With a decaying schedule, configure_optimizers reads estimated_stepping_batches,
    which builds the training dataloader before the checkpoint's data position is known
    (Lightning issue 20550): the resumed epoch must still start at the next batch."""
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    ov = " ".join([*TINY, "model.pretrain.epochs=2", "model.pretrain.content_warmup_epochs=1",
                   "model.checkpoint_every_n_steps=7", "trainer.precision=32",
                   f"model.pretrain.lr_schedule={schedule}"])
    ref = _cli(str(script), ov, str(tmp_path / "ref"), "0")
    assert ref.returncode == 0, ref.stderr[-3000:]
    killed = _cli(str(script), ov, str(tmp_path / "res"), "100")     # inside the second epoch
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "res" / "pretrain" / "checkpoints" / "last.ckpt").exists()
    resumed = _cli(str(script), ov + " resume=true", str(tmp_path / "res"), "0")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((tmp_path / "ref" / "pretrain" / "metrics.json").read_text())
    b = json.loads((tmp_path / "res" / "pretrain" / "metrics.json").read_text())
    for k in ("recall@20", "recall@40", "ndcg@100"):
        assert b["test"][k] == pytest.approx(a["test"][k], abs=1e-6), (k, a["test"], b["test"])
    assert b["epochs_run"] == a["epochs_run"]
    ha, hb = (json.loads((tmp_path / r / "pretrain" / "history.json").read_text()) for r in ("ref", "res"))
    assert [r["epoch"] for r in hb] == [r["epoch"] for r in ha] == [0, 1]
    drop = lambda row: {k: v for k, v in row.items() if k != "seconds"}  # noqa: E731  (wall time differs)
    assert drop(hb[0]) == pytest.approx(drop(ha[0]))      # the epoch finished before the crash, as it was
    assert hb[1]["seconds"] > hb[0]["seconds"] > 0           # the resumed clock starts from the kept epoch's


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, shared_data):
    tiny = [o for o in TINY if not o.startswith("trainer=")]
    out = _cli("-m", "cllm4rec.pretrain", *tiny, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
               "trainer.precision=32", "+trainer.max_steps=4",
               f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr[-4000:]
    assert (tmp_path / "run" / "pretrain" / "embeddings.safetensors").exists()


@pytest.mark.slow
def test_ddp_validation_is_sharded_and_adds_up_to_the_single_process_metrics(tmp_path, shared_data):
    """Fine-tuning's validation and test under DDP (2 CPU processes, gloo): each rank ranks its share
    of the user batches and the sums are added across ranks, so the metrics of the untrained model
    (no training step: both runs hold the same seeded rows) equal one process's, over the same users."""
    tiny = [o for o in TINY if not o.startswith("trainer=")]
    common = [*tiny, "model.finetune.from_pretrained=false", "trainer.precision=32", "+trainer.limit_train_batches=0"]
    runs = {}
    for name, trainer in (("single", ["trainer=cpu"]),
                          ("ddp", ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"])):
        out = _cli("-m", "cllm4rec.finetune", *common, *trainer, f"hydra.run.dir={tmp_path / name}")
        assert out.returncode == 0, out.stderr[-4000:]
        runs[name] = json.loads((tmp_path / name / "finetune" / "metrics.json").read_text())
    for part in ("valid", "test"):
        single, ddp = runs["single"][part], runs["ddp"][part]
        assert ddp["n_users_evaluated"] == single["n_users_evaluated"] > 100     # each user once, not once per rank
        for k in ("recall@20", "recall@40", "ndcg@100"):
            assert ddp[k] == pytest.approx(single[k], abs=1e-9), (part, k)

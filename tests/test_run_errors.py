"""No stage succeeds on nothing: text-free data trains the collaborative side, zero batches, an
unusable split, an incompatible pretraining and damaged run files each stop with a message."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from cllm4rec.data import DataError
from cllm4rec.errors import RunError
from cllm4rec.train import train

from test_train import CONF, ROOT, TINY, cfg_for    # cfg_for(stage, folder, ...): the run is <folder>/run


def sequences(path: Path, lines: list[str]) -> list[str]:
    """Overrides for a Beauty-format sequence file without attributes: interactions, no texts."""
    path.write_text("".join(f"{line}\n" for line in lines))
    return ["data=beauty", f"data.source.path={path}", "data.source.attributes=null", "data.source.datamaps=null",
            "data.preprocess.user_core=0", "data.preprocess.item_core=0"]


@pytest.fixture(scope="module")
def text_free(tmp_path_factory, shared_data):
    """The first 150 users of the real Beauty.txt, without its attributes; pretrained 2 epochs."""
    tmp = tmp_path_factory.mktemp("textfree")
    real = (shared_data / "amazon_s3rec_splits" / "Beauty.txt").read_text().splitlines()[:150]
    data = sequences(tmp / "Beauty.txt", real)
    results = train(cfg_for("pretrain", tmp, *data, "model.pretrain.epochs=2",
                            "model.pretrain.evaluate=false"))
    return tmp / "run", data, results


def test_data_without_texts_trains_the_collaborative_side(text_free, capsys):
    run, _, results = text_free
    assert results["epochs_run"] == 2
    history = json.loads((run / "pretrain" / "history.json").read_text())
    assert len(history) == 2 and all(e.get("loss_L", 0) > 0 and "loss_C" not in e and "loss_warmup" not in e
                                     for e in history), history


def test_a_stage_with_no_documents_is_an_error(text_free, tmp_path):
    _, data, _ = text_free
    with pytest.raises(RunError, match=r"pretrain epoch 0 \(steps \['L'\]\) has no training documents"):
        train(cfg_for("pretrain", tmp_path, *data, "corpus.collaborative=false"))
    assert not (tmp_path / "run" / "pretrain" / "embeddings.safetensors").exists()


def test_finetune_from_another_datasets_pretraining_is_refused(text_free, tmp_path, shared_data):
    run, _, _ = text_free
    with pytest.raises(RunError, match=r"was pretrained for \{'data': 'beauty'.*this fine-tuning is for \{'data': 'ml100k'"):
        train(cfg_for("finetune", tmp_path, f"pretrained={run}", "trainer.fast_dev_run=true"))


@pytest.mark.parametrize("stage, name, message", [
    ("pretrain", "checkpoints/last.ckpt", r"last\.ckpt is damaged"),
    ("finetune", "embeddings.safetensors", r"embeddings\.safetensors is damaged"),
])
def test_a_cut_run_file_is_named_and_nothing_starts_over(text_free, tmp_path, stage, name, message):
    run, data, _ = text_free
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    damaged = copy / "pretrain" / name
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    before = sorted(p.name for p in (copy / "pretrain").iterdir())
    with pytest.raises(RunError, match=message):
        train(cfg_for(stage, tmp_path, *data, "resume=true", "model.pretrain.epochs=3", "trainer.fast_dev_run=true"))
    assert sorted(p.name for p in (copy / "pretrain").iterdir()) == before


def test_resuming_a_checkpoint_of_another_config_is_refused(text_free, tmp_path):
    run, data, _ = text_free
    shutil.copytree(run, tmp_path / "run")
    with pytest.raises(RunError, match=r"written by a run with another config \(model\.pretrain\.epochs: 2 -> 3\)"):
        train(cfg_for("pretrain", tmp_path, *data, "resume=true", "model.pretrain.epochs=3",
                      "model.pretrain.evaluate=false"))


def test_a_split_without_validation_prepares_with_a_warning_and_finetuning_stops(tmp_path, shared_data):
    data = sequences(tmp_path / "one.txt", [f"{u} {u % 7 + 1}" for u in range(1, 31)])   # one item per user
    prep = subprocess.run([sys.executable, "-m", "cllm4rec.prepare", *data, f"cache_dir={tmp_path / 'c'}",
                           f"hydra.run.dir={tmp_path / 'h'}"], capture_output=True, text=True, cwd=ROOT)
    assert prep.returncode == 0, prep.stderr[-2000:]
    assert "warning: the split has no user with both training and valid interactions" in prep.stderr
    with pytest.raises(DataError, match="no user with both training and valid.*user_core"):
        train(cfg_for("finetune", tmp_path, *data, "model.finetune.from_pretrained=false"))
    fin = subprocess.run([sys.executable, "-m", "cllm4rec.finetune", *TINY, *data, "model.finetune.from_pretrained=false",
                          f"hydra.run.dir={tmp_path / 'run2'}"], capture_output=True, text=True, cwd=ROOT)
    assert fin.returncode == 2 and fin.stderr.startswith("error: ") and "Traceback" not in fin.stderr, fin.stderr[-2000:]


def test_an_evaluation_with_no_test_users_is_refused(tmp_path, shared_data):
    from cllm4rec.prepare import prepared_dataset
    data = sequences(tmp_path / "one.txt", [f"{u} {u % 7 + 1}" for u in range(1, 31)])
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=data)
    prepared_dataset(cfg.data)                              # preparing alone is allowed (it warns in the CLI)
    with pytest.raises(DataError, match="no user with both training and test interactions.*evaluation"):
        prepared_dataset(cfg.data, needs=("test",))

"""benchmarks/quality.py reuses a finished seed only when it was trained with the config that
the committed defaults and the given overrides compose now (a changed default retrains)."""
import json
import sys
from pathlib import Path

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

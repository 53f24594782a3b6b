"""Long work shows progress: a plain line at least every CLLM4REC_PROGRESS_EVERY seconds in a log
file (stderr is not a terminal under pytest), for ranking, the baselines' fitting and training."""
import re

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cllm4rec.baselines import MultiVAE, select_ease_l2
from cllm4rec.metrics import evaluate
from cllm4rec.progress import Progress
from cllm4rec.train import train
from test_train import cfg_for


@pytest.fixture
def every_step(monkeypatch):
    monkeypatch.setenv("CLLM4REC_PROGRESS_EVERY", "0")


def interactions(n_users=60, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))


def test_a_log_file_gets_plain_lines_and_short_work_none(capsys, monkeypatch):
    with Progress(10, "work", unit="steps") as p:
        for _ in range(10):
            p.update(1)
    assert capsys.readouterr().err == ""                       # under a minute: silent
    monkeypatch.setenv("CLLM4REC_PROGRESS_EVERY", "0")
    with Progress(4, "work", unit="steps") as p:
        for _ in range(4):
            p.update(1, loss=0.5)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and re.fullmatch(r"work: 4/4 steps \(100%\), loss 0\.5, \d+ s, ~0 s left", lines[-1])
    assert "\r" not in "".join(lines)


def test_ranking_and_baselines_report_progress(capsys, every_step):
    x, other = interactions(), interactions(seed=1)
    target = sp.csr_matrix(other - other.multiply(x))           # disjoint from the training part
    target.eliminate_zeros()
    evaluate(lambda u: torch.ones(len(u), 40), x, target, batch_size=16, label="ranking the test users")
    select_ease_l2(x, target, grid=(10.0, 100.0))
    MultiVAE(max_epochs=2, batch_size=16, hidden=8, latent=4).fit(x, target)
    err = capsys.readouterr().err
    assert re.search(r"ranking the test users: \d+/\d+ users \(100%\)", err)
    assert "EASE (l2 on validation): 2/2 fits" in err
    assert re.search(r"Multi-VAE epoch 1: (\d+)/\1 batches \(100%\)", err)    # Lightning's loop, per epoch


def test_training_in_a_log_file_prints_batch_lines(tmp_path, shared_data, capsys, every_step):
    train(cfg_for("pretrain", tmp_path, "trainer.fast_dev_run=2", "model.pretrain.evaluate=false"))
    err = capsys.readouterr().err
    assert re.search(r"pretrain epoch 0: 1/\d+ batches \(\d+%\), loss [\d.]+", err), err[-2000:]

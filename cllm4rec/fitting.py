"""The training loop of the baselines that learn (Multi-VAE, SASRec), on Lightning's machinery.

The Trainer runs the epochs; validation is Lightning's loop over batches of users
(`metrics.RankingSums`, the same batches `metrics.evaluate` cuts); `EarlyStopping` stops after
`patience` validations without a better value of the monitored metric; `Timer` stops at the end
of the epoch that passes `max_seconds`; and the best validation's weights come back from memory
(these networks are small, so no checkpoint files). A baseline (`Trainable`) gives its network,
its optimizer, each epoch's batches, a batch's loss and its validation scores; it keeps its own
randomness, so Lightning changes none of its numbers.
"""
from __future__ import annotations

import copy
import logging
import time
import warnings
from contextlib import contextmanager
from datetime import timedelta
from typing import Protocol, Sequence

import lightning.pytorch as pl
import scipy.sparse as sp
import torch

from .metrics import DEFAULT_MAX_BATCH_BYTES, RankingSums, batch_users
from .progress import Progress


class Batches:
    """Ready batches as one sized iterable (a plain list would read to Lightning as several dataloaders)."""

    def __init__(self, batches: Sequence):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class Trainable(Protocol):
    net: torch.nn.Module

    def configure_optimizer(self) -> torch.optim.Optimizer: ...

    def epoch_batches(self) -> Sequence:
        """One epoch's training batches, in order (drawn from the baseline's own generator)."""

    def batch_loss(self, batch) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, int]]]:
        """(the loss to minimise, {name: (value, weight)} for the epoch's weighted means)."""

    def valid_scores(self, users: torch.Tensor) -> torch.Tensor:
        """[B] user indices -> [B, n_items] validation scores."""


class _KeepBest(pl.Callback):
    """The weights of the best validation so far, in memory."""

    def __init__(self, monitor: str):
        self.monitor, self.best, self.epoch, self.state = monitor, -float("inf"), -1, None

    def on_validation_end(self, trainer, module) -> None:
        value = float(trainer.callback_metrics[self.monitor])
        if value > self.best:    # strictly better, as EarlyStopping counts it
            self.best, self.epoch = value, trainer.current_epoch
            self.state = copy.deepcopy(module.net.state_dict())


class _EpochFit(pl.LightningModule):
    def __init__(self, owner: Trainable, name: str, valid: RankingSums | None, verbose: bool):
        super().__init__()
        self.owner, self.net, self.label, self.verbose = owner, owner.net, name, verbose
        self.valid = valid
        self.history: list[dict] = []
        self._entry: dict = {}

    def configure_optimizers(self):
        return self.owner.configure_optimizer()

    def train_dataloader(self):
        return Batches(self.owner.epoch_batches())

    def val_dataloader(self):
        users, _ = self.valid.users()
        bs = batch_users(self.valid.n_items, DEFAULT_MAX_BATCH_BYTES)
        return Batches([torch.as_tensor(users[i:i + bs]) for i in range(0, len(users), bs)])

    def on_train_epoch_start(self) -> None:
        self._t0 = time.perf_counter()
        self._entry = {"epoch": self.current_epoch}
        self._progress = Progress(self.trainer.num_training_batches, f"{self.label} epoch {self.current_epoch}",
                                  unit="batches")

    def training_step(self, batch, batch_idx):
        loss, parts = self.owner.batch_loss(batch)
        for key, (value, weight) in parts.items():
            self.log(key, value, on_step=False, on_epoch=True, batch_size=weight)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self._progress.update(1)

    def on_validation_epoch_start(self) -> None:
        self._progress.close()
        self._entry["train_seconds"] = time.perf_counter() - self._t0
        self._t_valid = time.perf_counter()
        self.valid.totals.zero_()

    def validation_step(self, users, batch_idx):
        self.valid.add(users.cpu().numpy(), self.owner.valid_scores(users))

    def on_validation_epoch_end(self) -> None:
        means = self.valid.means()
        for key in self.valid.keys:
            self._entry[f"valid_{key}"] = means[key]
            self.log(f"valid_{key}", means[key])
        self._entry["eval_seconds"] = time.perf_counter() - self._t_valid

    def on_train_epoch_end(self) -> None:
        self._progress.close()
        logged = self.trainer.callback_metrics
        self._entry.setdefault("train_seconds", time.perf_counter() - self._t0)
        entry = {**self._entry, **{k: float(v) for k, v in logged.items() if not k.startswith("valid_")},
                 **getattr(self.owner, "epoch_info", dict)(), "seconds": time.perf_counter() - self._t0}
        self.history.append(dict(sorted(entry.items(), key=lambda kv: kv[0] != "epoch")))
        if self.verbose:
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()),
                  flush=True)


@contextmanager
def _quiet():
    """Lightning's start-up lines and its advice on workers mean nothing for an in-memory baseline."""
    logs = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in (r".*does not have many workers", r".*the number of the training batches \(\d+\) is smaller",
                            r"`isinstance\(treespec, LeafSpec\)` is deprecated"):
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


def fit_epochs(owner: Trainable, *, name: str, max_epochs: int, patience: int, device: torch.device,
               valid: tuple[sp.spmatrix, sp.spmatrix] | None = None, ks=(20,), metrics=("recall",),
               monitor: str = "recall@20", eval_every: int = 1, max_seconds: float | None = None,
               verbose: bool = False) -> dict:
    """Train `owner.net` for up to `max_epochs`; with `valid` = (seen, target) matrices, validate
    every `eval_every` epochs, stop after `patience` validations without a better `monitor`, and
    restore the best validation's weights. Returns {"history": one entry per epoch (the epoch's
    weighted loss means, valid_<metric>, train/eval seconds), "best_epoch", "stopped":
    max_epochs | patience | max_seconds}."""
    sums = RankingSums(*valid, ks=ks, metrics=metrics) if valid is not None else None
    module = _EpochFit(owner, name, sums, verbose)
    callbacks: list[pl.Callback] = []
    if sums is not None:
        callbacks += [pl.callbacks.EarlyStopping(monitor=f"valid_{monitor}", mode="max", patience=patience,
                                                 check_on_train_epoch_end=False),
                      best := _KeepBest(f"valid_{monitor}")]
    if max_seconds is not None:
        callbacks.append(timer := pl.callbacks.Timer(timedelta(seconds=max_seconds), interval="epoch"))
    with _quiet():
        trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_epochs=max_epochs,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, inference_mode=False,
                             check_val_every_n_epoch=eval_every, limit_val_batches=1.0 if sums is not None else 0,
                             reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False, callbacks=callbacks)
        trainer.fit(module)
    epochs = len(module.history)
    if sums is not None and best.state is not None:
        owner.net.load_state_dict(best.state)
        best_epoch = best.epoch
    else:
        best_epoch = epochs - 1
    if epochs >= max_epochs:
        stopped = "max_epochs"
    elif max_seconds is not None and timer.time_remaining() <= 0:
        stopped = "max_seconds"
    else:
        stopped = "patience"
    return {"history": module.history, "best_epoch": best_epoch, "stopped": stopped}

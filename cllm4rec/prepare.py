"""Prepare a dataset (read, preprocess, split, cache) and print its manifest.

    python -m cllm4rec.prepare data=beauty data.split.protocol=loo
"""
from __future__ import annotations

import sys

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .data import DataError, manifest_table, prepare_dataset
from .data.splits import split_problems
from .errors import reported


def prepared_dataset(data_cfg: DictConfig, *, strict: bool = True, force: bool = False, cache_dir=None,
                     needs: tuple[str, ...] = ()):
    """Compose-time data config -> (Dataset, manifest). Shared by every entry point. `needs`: the
    split parts ("valid", "test") the caller scores; one without a scorable user is a DataError."""
    source = instantiate(data_cfg.source)
    ds, manifest = prepare_dataset(
        source,
        preprocess_args=OmegaConf.to_container(data_cfg.preprocess, resolve=True),
        split_args=OmegaConf.to_container(data_cfg.split, resolve=True),
        strict=strict, force=force, cache_dir=cache_dir,
    )
    problems = split_problems(manifest["split"], needs)
    if problems:
        raise DataError(manifest["cache"]["folder"], "; ".join(problems))
    return ds, manifest


@hydra.main(config_path="conf", config_name="prepare", version_base="1.3")
@reported
def _main(cfg: DictConfig) -> None:
    _, manifest = prepared_dataset(cfg.data, strict=cfg.strict, force=cfg.force, cache_dir=cfg.cache_dir)
    print(manifest_table(manifest))
    for problem in split_problems(manifest["split"]):   # it can be trained, not validated or tested
        print(f"warning: {problem}", file=sys.stderr)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()

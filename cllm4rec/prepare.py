"""Prepare a dataset (read, preprocess, split, cache) and print its manifest.

    python -m cllm4rec.prepare data=beauty data.split.protocol=loo
"""
from __future__ import annotations

import sys

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .data import DataError, manifest_table, prepare_dataset


def prepared_dataset(data_cfg: DictConfig, *, strict: bool = True, force: bool = False, cache_dir=None):
    """Compose-time data config -> (Dataset, manifest). Shared by every entry point."""
    source = instantiate(data_cfg.source)
    return prepare_dataset(
        source,
        preprocess_args=OmegaConf.to_container(data_cfg.preprocess, resolve=True),
        split_args=OmegaConf.to_container(data_cfg.split, resolve=True),
        strict=strict, force=force, cache_dir=cache_dir,
    )


@hydra.main(config_path="../conf", config_name="prepare", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    try:
        _, manifest = prepared_dataset(cfg.data, strict=cfg.strict, force=cfg.force, cache_dir=cfg.cache_dir)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(manifest_table(manifest))


def main() -> None:
    _main()


if __name__ == "__main__":
    main()

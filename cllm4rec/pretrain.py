"""Pretrain the collaborative and content LMs with mutual regularization.

    python -m cllm4rec.pretrain data=beauty backbone=gpt2 model.lambda_mr=0.5
"""
import hydra
from omegaconf import DictConfig

from .errors import reported
from .train import train


@hydra.main(config_path="conf", config_name="pretrain", version_base="1.3")
@reported
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()

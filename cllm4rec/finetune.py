"""Recommendation-oriented fine-tuning of the multinomial item head (after pretrain).

    python -m cllm4rec.finetune data=beauty backbone=gpt2 [pretrained=runs/beauty/gpt2/default]
"""
import hydra
from omegaconf import DictConfig

from .train import train


@hydra.main(config_path="../conf", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()

"""Recommendation-oriented fine-tuning of the multinomial item head (after pretrain).

    python -m cllm4rec.finetune data=beauty backbone=gpt2 [pretrained=runs/beauty/gpt2/default]
    python -m cllm4rec.finetune --multirun hparams_search=beauty_loo_optuna    # Optuna search on validation
"""
import hydra
from omegaconf import DictConfig

from .errors import reported
from .train import train


@hydra.main(config_path="conf", config_name="finetune", version_base="1.3")
@reported
def main(cfg: DictConfig) -> float | None:
    """Returns the best validation val/sum, the objective of a Hydra sweeper (hparams_search=...)."""
    return train(cfg).get("val_sum")


if __name__ == "__main__":
    main()

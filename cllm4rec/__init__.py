"""cllm4rec: a pretrained causal LM turned into a recommender (CLLM4Rec, WWW 2024)."""
__version__ = "0.1.0"

from omegaconf import OmegaConf as _OmegaConf

from .paths import sweep_trial as _sweep_trial

_OmegaConf.register_new_resolver("cllm4rec.sweep_trial", _sweep_trial, replace=True)

"""cllm4rec: a pretrained causal LM turned into a recommender (CLLM4Rec, WWW 2024)."""
__version__ = "0.1.0"

from omegaconf import OmegaConf as _OmegaConf

from .paths import sweep_trial as _sweep_trial

_OmegaConf.register_new_resolver("cllm4rec.sweep_trial", _sweep_trial, replace=True)

from .config import register_configs as _register_configs

_register_configs()      # the model and corpus groups' defaults (config.py), before any compose

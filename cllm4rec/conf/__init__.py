"""The Hydra configs (a package so that `pkg://cllm4rec.conf` resolves from an installed wheel)."""

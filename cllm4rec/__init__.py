"""cllm4rec: a pretrained causal LM turned into a recommender (CLLM4Rec, WWW 2024)."""
__version__ = "0.1.0"

"""Corpus configuration: the document kinds and their heads, CorpusConfig."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


from ..files import help_field


KINDS = ("collaborative", "interaction_text", "item_text", "user_text", "mim", "bpr", "history",
         "finetune", "eval", "rating")
KIND_CODE = {k: c for c, k in enumerate(KINDS)}
HEAD = {"collaborative": "item", "mim": "item", "bpr": "item", "history": "item",
        "interaction_text": "word", "item_text": "word", "user_text": "word",
        "finetune": None, "eval": None, "rating": "rating"}
CONTENT_KINDS = ("interaction_text", "item_text", "user_text")


@dataclass
class CorpusConfig:
    """Templates, document kinds and lengths: the `corpus` group's defaults (ConfigStore `corpus/default`).

    Templates are plain text with slots in braces ({user}, {item}, {items}, ...). A user/item
    token absorbs the one space before it, as in vocab.py, so a template renders and
    tokenizes exactly like `IDTokenizer.encode` of the filled-in text.
    """
    # ---- lengths and order
    max_prompt_tokens: int = help_field(512, "Longest prompt; longer prompts drop history items, keeping their cue")
    max_main_tokens: int = help_field(512, "Longest main text; words are cut at the end, items keep a random subset")
    item_order: str = help_field("shuffle", "shuffle: a fresh random order of history items on every draw (the "
                            "paper's stochastic reordering); time: keep time order, mask and keep the most recent")
    # ---- collaborative (item head)
    collaborative: bool = help_field(True, "Use collaborative documents in the item-head mixture")
    collaborative_weight: float = help_field(1.0, "Documents per user per epoch in the mixture (fractions sample)")
    collaborative_template: str = help_field("{user} has interacted with", "Prompt; main = the user's training items")
    # ---- content (vocabulary head)
    interaction_text: bool = help_field(True, "Use interaction texts (reviews, tags) of training rows")
    interaction_text_weight: float = help_field(1.0, "Copies per text per epoch in the word-head mixture")
    interaction_text_fields: list | None = help_field(None, "Fields of Dataset.interaction_text to use; null = all")
    interaction_text_templates: dict = help_field(
        {"review": "{user} wrote the following review for {item}:",
         "summary": "{user} summarized the review of {item} as:",
         "tags": "{user} tagged {item} with:"}, "Per-field prompt; slots {user} {item}")
    interaction_text_fallback: str = help_field("{user} wrote the following {field} for {item}:",
                                           "Prompt for fields without a template ({field} = field name)")
    item_text: bool = help_field(True, "Use item texts (title, description, brand, attributes, genres, ...)")
    item_text_weight: float = help_field(1.0, "Copies per text per epoch in the word-head mixture")
    item_text_fields: list | None = help_field(None, "Fields of Dataset.item_text to use; null = all")
    item_text_templates: dict = help_field({"title": "The title of {item} is:"}, "Per-field prompt; slot {item}")
    item_text_fallback: str = help_field("The {field} of {item} is:", "Prompt for other fields ({field} = name)")
    user_text: bool = help_field(True, "Use user texts (profiles)")
    user_text_weight: float = help_field(1.0, "Copies per text per epoch in the word-head mixture")
    user_text_fields: list | None = help_field(None, "Fields of Dataset.user_text to use; null = all")
    user_text_mode: str = help_field("profile", "profile: one document per user, 'field: value, ...'; "
                                "per_field: one document per field")
    user_text_profile_template: str = help_field("The profile of {user} is:", "Prompt of the combined profile")
    user_text_fallback: str = help_field("The {field} of {user} is:", "Prompt per field in per_field mode")
    # ---- second paper's auxiliary tasks (item head), off by default
    mim: bool = help_field(False, "Masked item modeling documents in the item-head mixture")
    mim_weight: float = help_field(1.0, "Documents per user per epoch")
    mim_mask_ratio: float = help_field(0.2, "Fraction of the history masked (rule in the module docstring)")
    mim_mask_word: str = help_field("[mask]", "Word shown in place of a masked item (a space is put before it)")
    mim_template: str = help_field("{user} has interacted with {history} where {mask} hides an item; the hidden items are",
                              "Prompt; {history} = the history with masked items as the mask word; {mask} = "
                              "the mask word as text")
    bpr: bool = help_field(False, "Pairwise preference documents in the item-head mixture")
    bpr_weight: float = help_field(1.0, "Documents per user per epoch (each with a fresh pair)")
    bpr_template: str = help_field("Between {a} and {b}, {user} prefers", "Prompt; main = the consumed item")
    history: bool = help_field(False, "Recommendation documents describing the user by item titles")
    history_weight: float = help_field(1.0, "Documents per user (with >= 2 training items) per epoch")
    history_mask_ratio: float = help_field(0.2, "Fraction of the history held out as the main text")
    history_field: str | None = help_field(None, "Item text field naming an item; null = first of title, "
                                      "movie_title, name present")
    history_title_tokens: int = help_field(32, "Longest title kept per item")
    history_template: str = help_field("A user has interacted with {titles} and will interact with",
                                  "Prompt; {titles} = the quoted titles, each followed by a comma")
    # ---- recommendation-oriented fine-tuning and evaluation
    finetune_mask_ratio: float = help_field(0.5, "p_m: fraction of training items masked from the prompt (rule in "
                                       "the docstring); the paper: 0.2")
    finetune_target: str = help_field("all", "all: every training item, visible or masked (the authors' code; a "
                                 "denoising autoencoder's target, as in Multi-DAE/VAE); masked: the held-out "
                                 "items only (the paper); next: a random time-ordered prefix -> the item "
                                 "right after it; sequence: the whole time-ordered history as the main text, "
                                 "the item head scores every next item in one pass (SASRec's shape; next and "
                                 "sequence need item_order=time, sequence a template ending in {items})")
    finetune_template: str = help_field("{user} has interacted with {items}, {user} will interact with",
                                   "Fine-tuning and evaluation prompt; slot {items} required")
    eval_order: str = help_field("shuffle", "shuffle: one fixed seeded permutation per user; time: time order")
    eval_seed: int = help_field(0, "Seed of the fixed evaluation permutation")
    eval_test_includes_valid: bool = help_field(False, "Test prompts list training + validation items")
    # ---- rating prediction (the third task of Cao et al. 2024), trained in fine-tuning
    rating: bool = help_field(False, "Rating documents (needs ratings in the data), trained alongside fine-tuning")
    rating_weight: float = help_field(1.0, "Documents per training rating per epoch (fractions sample)")
    rating_template: str = help_field("{user} rated {item}:", "Prompt; main = the rating as a word, e.g. ' 4'")

    def __post_init__(self):
        for name in ("mim_mask_ratio", "history_mask_ratio", "finetune_mask_ratio"):
            p = getattr(self, name)
            if not 0.0 < p < 1.0:
                raise ValueError(f"corpus.{name} must be in (0, 1), got {p}")
        if self.finetune_target in ("next", "sequence") and self.item_order != "time":
            raise ValueError(f"corpus.finetune_target={self.finetune_target} predicts the item after a time-ordered "
                             "prefix: set corpus.item_order=time (corpus=sequential)")
        if self.finetune_target == "sequence" and not self.finetune_template.rstrip().endswith("{items}"):
            raise ValueError(f"corpus.finetune_target=sequence scores the items as the main text, so "
                             f"corpus.finetune_template must end with {{items}}, got {self.finetune_template!r} "
                             "(corpus=sequential has one)")
        choices = {"finetune_target": ("masked", "all", "next", "sequence"), "item_order": ("shuffle", "time"),
                   "eval_order": ("shuffle", "time"), "user_text_mode": ("profile", "per_field")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"corpus.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("max_prompt_tokens", "max_main_tokens", "history_title_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"corpus.{name} must be >= 1, got {getattr(self, name)}")
        for f in dataclasses.fields(self):
            if f.name.endswith("_weight") and getattr(self, f.name) < 0:
                raise ValueError(f"corpus.{f.name} must be >= 0, got {getattr(self, f.name)}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> "CorpusConfig":
        """From a dict or an OmegaConf node (pass `OmegaConf.to_container(cfg.corpus)`)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ValueError(f"unknown corpus option(s) {unknown}; valid options: {sorted(names)}")
        return cls(**{k: (dict(v) if isinstance(v, Mapping) else list(v) if isinstance(v, (list, tuple)) else v)
                      for k, v in cfg.items()})


# ====================================================================== documents

"""`model.item_init=text`: item rows start from what the backbone makes of each item's text.

    item text (title; else the first text field: attributes, genres, ...) -> tokens
      -> backbone body -> last hidden states, mean over the text's tokens      [J, d]
      -> minus the mean over items (an LLM's states share one large direction)
      -> scaled to std init_std, the scale random rows would have had
    user rows: the mean of the user's training items' rows, scaled the same way

Items with similar text then start close, so the item head and the backbone see the LLM's
knowledge of an item from the first step, and an item nobody interacted with has a row that
means something. Items without text keep their random rows.
"""
from __future__ import annotations

import numpy as np
import torch

from .model import SIDES, CLLM4Rec

TITLE_FIELDS = ("title", "movie_title", "name")


def text_field(item_text: dict, wanted: str | None) -> str:
    """The item text field to read: `wanted`, else a title, else the first field there is."""
    if wanted is not None:
        if wanted not in item_text:
            raise ValueError(f"model.item_init_field={wanted!r}, but the items have texts {sorted(item_text)}")
        return wanted
    for name in (*TITLE_FIELDS, *sorted(item_text)):
        if name in item_text:
            return name
    raise ValueError("model.item_init=text needs item texts, and this dataset has none: use model.item_init=random")


@torch.no_grad()
def text_vectors(backbone, tokens: np.ndarray, offsets: np.ndarray, max_tokens: int = 64,
                 batch_size: int = 128) -> torch.Tensor:
    """Ragged token lists -> [D, d] mean last hidden state over each list's first max_tokens
    tokens (zeros for an empty list)."""
    lens = np.minimum(np.diff(offsets), max_tokens)
    device = next(backbone.parameters()).device
    d = backbone.get_input_embeddings().embedding_dim
    out = torch.zeros(len(lens), d)
    was_training = backbone.training
    backbone.eval()
    order = np.argsort(lens, kind="stable")          # similar lengths share a batch
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        idx = idx[lens[idx] > 0]
        if not len(idx):
            continue
        T = int(lens[idx].max())
        real = np.arange(T)[None, :] < lens[idx, None]                          # [B, T]
        ids = np.where(real, tokens[np.minimum(offsets[idx, None] + np.arange(T)[None, :], len(tokens) - 1)], 0)
        mask = torch.from_numpy(real.astype(np.int64)).to(device)
        h = backbone.base_model(input_ids=torch.from_numpy(ids).to(device), attention_mask=mask,
                                use_cache=False).last_hidden_state.float()     # [B, T, d]
        out[torch.from_numpy(idx)] = ((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).cpu()
    backbone.train(was_training)
    return out


def _scaled(x: torch.Tensor, std: float, ref: torch.Tensor | None = None) -> torch.Tensor:
    """x centred and scaled to entries of std `std`, by the statistics of the rows `ref` (all)."""
    r = x if ref is None else x[ref]
    mean = r.mean(0, keepdim=True)
    return (x - mean) * (std / (r - mean).std().clamp_min(1e-12))


def init_from_text(model: CLLM4Rec, builder, field: str | None, init_std: float) -> dict:
    """Overwrite both sides' item rows (items with text) and user rows (users with training
    items) from the backbone's reading of the item texts; returns what it did."""
    ds = builder.ds
    name = text_field(ds.item_text, field)
    tokens, offsets = builder._tokenize([str(t) if t is not None else "" for t in ds.item_text[name]])
    vec = text_vectors(model.backbone, tokens, offsets)                        # [J, d]
    has = torch.from_numpy(np.diff(offsets) > 0)
    warm = torch.ones_like(has) if ds.cold_items is None else torch.from_numpy(~ds.cold_items)
    items = torch.zeros_like(vec)
    items[has] = _scaled(vec[has], init_std, warm[has])     # statistics of the items training may see
    # users: mean of their training items' rows
    u = torch.from_numpy(builder.train_user)
    sums = torch.zeros(ds.n_users, vec.shape[1]).index_add_(0, u, items[torch.from_numpy(builder.train_item)])
    count = torch.from_numpy(builder.train_count).float()
    active = count > 0
    users = _scaled(sums[active] / count[active, None], init_std)
    with torch.no_grad():
        for s in SIDES:
            w = model.item[s].weight
            w[has.to(w.device)] = items[has].to(w)
            w = model.user[s].weight
            w[active.to(w.device)] = users.to(w)
    return {"field": name, "items": int(has.sum()), "users": int(active.sum())}

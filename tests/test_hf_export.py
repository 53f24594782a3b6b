"""cllm4rec-export: a trained run loads in plain transformers (AutoModelForCausalLM,
AutoTokenizer) and its exported item head scores a user's prompt as the run does (fp32, 1e-5)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cllm4rec.corpus import collate
from cllm4rec.errors import RunError
from cllm4rec.hf_export import export_run
from cllm4rec.recommend import load_trained
from cllm4rec.runs import Run
from cllm4rec.train import train
from cllm4rec.vocab import IDTokenizer
from test_train import cfg_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("tuning", ["frozen", "lora"])
def test_an_exported_run_scores_like_the_run(tmp_path, shared_data, tuning):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    train(cfg_for("finetune", tmp_path, "trainer.fast_dev_run=2", "model.finetune.from_pretrained=false",
                  "trainer.precision=32", f"model.backbone_tuning={tuning}", "model.finetune.lr=1e-2"))
    run = tmp_path / "run"
    out = export_run(run, tmp_path / "hf")
    _, ds, builder, model = load_trained(Run(run))
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    head = load_file(out / "item_head.safetensors")
    meta = json.loads((out / "cllm4rec.json").read_text())
    assert (meta["n_users"], meta["n_items"]) == (ds.n_users, ds.n_items)
    assert len(tok) == hf.get_input_embeddings().num_embeddings == model.vocab.size
    assert not any("lora" in k for k in hf.state_dict())
    from cllm4rec.backbone import load_backbone
    plain = load_backbone("tiny_gpt2", seed=0)[0].state_dict()
    changed = [k for k, w in hf.state_dict().items() if k in plain and "wte" not in k and "lm_head" not in k
               and not torch.equal(w, plain[k])]
    assert bool(changed) == (tuning == "lora"), changed     # the merged adapter changed the weights it targets
    spell = IDTokenizer(builder.tokenizer, model.vocab)
    users = np.array([0, 7, 42])
    docs = builder.prompts(users, [builder.train_item[builder.train_ptr[u]:builder.train_ptr[u + 1]] for u in users])
    for r in range(len(users)):
        b = collate(docs, np.array([r]))
        ids = b["input_ids"][0, : b["last_prompt_index"][0] + 1]
        text = spell.decode(ids.tolist())
        assert tok(text, add_special_tokens=False)["input_ids"] == ids.tolist(), text   # the same tokens
        with torch.no_grad():
            want = model.recommend_logits(ids[None], torch.ones_like(ids)[None], torch.tensor([len(ids) - 1]))[0]
            h = hf(torch.tensor([tok(text, add_special_tokens=False)["input_ids"]]),
                   output_hidden_states=True).hidden_states[-1][0, -1]
        torch.testing.assert_close(h @ head["weight"].T + head["bias"], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(RunError, match="not empty"):
        export_run(run, out)


def test_export_cli(tmp_path, shared_data):
    train(cfg_for("finetune", tmp_path, "trainer.fast_dev_run=true", "model.finetune.from_pretrained=false"))
    res = subprocess.run([sys.executable, "-m", "cllm4rec.hf_export", str(tmp_path / "run"), str(tmp_path / "hf")],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0 and (tmp_path / "hf" / "model.safetensors").exists(), res.stderr[-2000:]
    again = subprocess.run([sys.executable, "-m", "cllm4rec.hf_export", str(tmp_path / "run"), str(tmp_path / "hf")],
                           capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "not empty" in again.stderr

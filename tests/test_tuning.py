"""Backbone tuning (frozen / lora / full), the sequence fine-tuning loss and the optimiser's
schedule: against the untouched backbone, a brute-force loss, and a real run folder reloaded."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cllm4rec.backbone import load_backbone
from cllm4rec.model import CLLM4Rec
from cllm4rec.tuning import load_trained_state, prepare_backbone, trained_state
from cllm4rec.vocab import Vocab

from test_train import cfg_for


def tiny(name="tiny_gpt2", seed=0):
    return load_backbone(name, seed=seed)[0]


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
@pytest.mark.parametrize("mode", ["frozen", "lora", "full"])
def test_modes_train_what_they_say_and_start_as_the_untouched_backbone(name, mode):
    ref, b = tiny(name), tiny(name)
    ids = torch.randint(0, 1000, (2, 7))
    prepare_backbone(b, mode)
    names = [n for n, p in b.named_parameters() if p.requires_grad]
    if mode == "frozen":
        assert names == []
    elif mode == "lora":
        assert names and all("lora_" in n for n in names)
    else:
        assert len(names) == len(list(b.named_parameters())) and not any("lora_" in n for n in names)
    b.eval()
    with torch.no_grad():   # LoRA's B starts at zero: the same function as before
        torch.testing.assert_close(b(input_ids=ids).logits, ref(input_ids=ids).logits)


def test_backbone_dropout_sets_every_rate_but_the_adapters():
    b = prepare_backbone(tiny(), "lora", dropout=0.3)
    rates = {n: m.p for n, m in b.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert {p for n, p in rates.items() if "lora_" not in n} == {0.3}
    assert {p for n, p in rates.items() if "lora_" in n} == {0.05}
    llama = prepare_backbone(tiny("tiny_llama"), "full", dropout=0.25)
    assert {m.attention_dropout for m in llama.modules() if hasattr(m, "attention_dropout")} == {0.25}


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_trained_state_round_trip(mode):
    a = prepare_backbone(tiny(seed=0), mode)
    with torch.no_grad():
        for p in a.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)
    b = prepare_backbone(tiny(seed=0), mode)
    load_trained_state(b, trained_state(a), "saved")
    ids = torch.randint(0, 1000, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(b.eval()(input_ids=ids).logits, a.eval()(input_ids=ids).logits)
    other = prepare_backbone(tiny(seed=0), "lora" if mode == "full" else "full")
    with pytest.raises(ValueError, match="model.backbone_tuning"):
        load_trained_state(other, trained_state(a), "saved")


def test_tuned_model_trains_the_backbone_in_train_mode():
    b = tiny()
    v = Vocab(b.get_input_embeddings().num_embeddings, 3, 4)
    frozen = CLLM4Rec(b, v)
    assert not frozen.train().backbone.training
    full = CLLM4Rec(tiny(), v, backbone_tuning="full")
    assert full.backbone.training and full.train().backbone.training and not full.eval().backbone.training


def test_exclude_seen_matches_brute_force():
    torch.manual_seed(0)
    b = tiny()
    v = Vocab(b.get_input_embeddings().num_embeddings, 2, 6)
    m = CLLM4Rec(b, v, init_std=0.5)
    # two documents: 2 prompt words, then items (one repeats: the target stays in its softmax)
    items = [[0, 3, 0, 5], [2, 4, 1]]
    T = 2 + max(len(x) for x in items)
    ids = torch.full((2, T), 7)
    main = torch.zeros(2, T, dtype=torch.bool)
    for d, seq in enumerate(items):
        ids[d, 2:2 + len(seq)] = torch.tensor(seq) + v.item_offset
        main[d, 2:2 + len(seq)] = True
    att = (ids != 7) | (torch.arange(T) < 2)
    got = m.lm_loss(ids, att.long(), main, "collaborative", exclude_seen=True)
    h = m.hidden(ids, att.long(), "collaborative")
    losses = []
    for d, seq in enumerate(items):
        for k, target in enumerate(seq):
            logits = m.item_logits(h[d, 1 + k]).clone()     # the position before item k
            for earlier in seq[:k]:
                if earlier != target:
                    logits[earlier] = float("-inf")
            losses.append(F.cross_entropy(logits[None], torch.tensor([target])))
    torch.testing.assert_close(got, torch.stack(losses).mean())
    assert torch.isfinite(got) and got < m.lm_loss(ids, att.long(), main, "collaborative")   # fewer rivals


def test_sequence_documents_are_the_time_ordered_history(shared_data):
    from cllm4rec.backbone import gpt2_tokenizer
    from cllm4rec.corpus import CorpusBuilder, CorpusConfig
    from cllm4rec.data import BadLines, split_leave_one_out
    from cllm4rec.data.readers import RecBoleAtomic
    ds = split_leave_one_out(RecBoleAtomic(path=shared_data / "movielens_100k").read(BadLines()))
    tok = gpt2_tokenizer()
    v = Vocab(len(tok), ds.n_users, ds.n_items)
    cfg = CorpusConfig(item_order="time", finetune_target="sequence", max_main_tokens=20,
                       finetune_template="{user} has interacted with {items}")
    docs = CorpusBuilder(ds, tok, v, cfg).epoch("finetune", np.random.default_rng(0))
    train = ds.split == 0
    for d in (0, 5, 100):
        u = int(docs.user[d])
        hist = ds.item[train & (ds.user == u)][-20:]
        assert (docs.main(d) - v.item_offset).tolist() == hist.tolist()
        assert docs.prompt(d)[0] == v.user(u) and len(docs.targets(d)) == 0
    with pytest.raises(ValueError, match="must end with"):
        CorpusConfig(item_order="time", finetune_target="sequence")
    with pytest.raises(ValueError, match="item_order=time"):
        CorpusConfig(finetune_target="sequence", finetune_template="{user} has interacted with {items}")


def test_optimizer_groups_and_schedule(tmp_path, shared_data):
    from cllm4rec.train import train
    train(cfg_for("finetune", tmp_path, "trainer.fast_dev_run=true", "model.backbone_tuning=lora",
                  "model.finetune.from_pretrained=false", "model.finetune.lr_schedule=cosine",
                  "model.finetune.warmup_ratio=0.5", "model.finetune.backbone_lr=3e-4"))
    ckpt = torch.load(tmp_path / "run" / "finetune" / "checkpoints" / "last.ckpt", weights_only=True)
    ids_group, body_group = ckpt["optimizer_states"][0]["param_groups"]
    assert ids_group["weight_decay"] == 0 and body_group["weight_decay"] == 0.01
    assert body_group["initial_lr"] == 3e-4 and ids_group["initial_lr"] == 1e-4
    assert ckpt["lr_schedulers"] and ids_group["lr"] < ids_group["initial_lr"]   # still warming up
    assert any(".lora_" in k for k in ckpt["state_dict"])    # the adapter is in the checkpoint ...
    assert not any(k.startswith("model.backbone.") and "lora_" not in k for k in ckpt["state_dict"])   # ... only


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_tuned_run_folder_reloads_the_same_model(tmp_path, shared_data, mode):
    """pretrain -> finetune with a tuned backbone: fine-tuning starts from the pretrained adapter /
    weights, and the run folder alone (load_trained) reproduces the fine-tuned scores."""
    from safetensors.torch import load_file
    from cllm4rec.recommend import load_trained
    from cllm4rec.runs import Run
    from cllm4rec.train import train
    # two steps per epoch (fast_dev_run would evaluate one batch of users only)
    over = ["+trainer.limit_train_batches=2", f"model.backbone_tuning={mode}", "trainer.precision=32"]
    train(cfg_for("pretrain", tmp_path, *over))
    run = tmp_path / "run"
    pre = load_file(run / "pretrain" / "backbone.safetensors")
    assert pre and all(("lora_" in k) == (mode == "lora") for k in pre)
    fin = train(cfg_for("finetune", tmp_path, *over))
    tuned = load_file(run / "finetune" / "backbone.safetensors")
    assert tuned.keys() == pre.keys() and any(not torch.equal(tuned[k], pre[k]) for k in pre)
    _, ds, builder, model = load_trained(Run(run))
    from cllm4rec.modules import CLLM4RecModule, Schedule
    module = CLLM4RecModule(model, builder, Schedule(stage="finetune")).eval()
    assert module.ranking_metrics("test")["recall@20"] == pytest.approx(fin["test"]["recall@20"], abs=1e-6)
    meta = json.loads(json.dumps(Run(run).load_backbone_state("finetune")[1]))
    assert meta["backbone_tuning"] == mode
    # the pretrained adapter / weights fit only the same tuning
    with pytest.raises(ValueError, match="backbone_tuning"):
        train(cfg_for("finetune", tmp_path, "trainer.fast_dev_run=true",
                      "model.backbone_tuning=" + ("full" if mode == "lora" else "lora")))


def test_sequential_tuned_experiment_runs(tmp_path, shared_data):
    """The shipped recipe, composed as a user runs it (tiny backbone, leave-one-out ML-100K):
    'seq' steps only, the frozen backbone not saved, no pretraining read."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict
    from test_train import CONF
    from cllm4rec.train import train
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("finetune", overrides=["experiment=sequential_tuned", "backbone=tiny_gpt2", "trainer=cpu",
                                             "logger=none", "data.split.protocol=loo", "trainer.fast_dev_run=2",
                                             "trainer.enable_progress_bar=false"])
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "run")
    res = train(cfg)
    (row,) = json.loads((tmp_path / "run" / "finetune" / "history.json").read_text())
    assert set(k for k in row if k.startswith("loss_")) == {"loss_seq"}
    assert not (tmp_path / "run" / "finetune" / "backbone.safetensors").exists()
    assert not (tmp_path / "run" / "pretrain").exists() and 0 <= res["test"]["recall@20"] <= 1


@pytest.mark.parametrize("experiment, tuning, sparse, validate_every_epoch, backbone_lr", [
    (None, "lora", True, False, 5e-4),                        # the default job
    ("paper", "frozen", False, True, 5e-4),                   # as published: only the ID rows, dense Adam
    ("sequential", "frozen", False, True, None),              # the recipes measured on Beauty
    ("sequential_searched", "frozen", False, True, None),
])
def test_each_experiment_keeps_the_recipe_it_was_measured_with(experiment, tuning, sparse, validate_every_epoch,
                                                               backbone_lr):
    from hydra import compose, initialize_config_dir
    from test_train import CONF
    from cllm4rec.config import checked_model_config
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("finetune", overrides=[f"experiment={experiment}"] if experiment else [])
    m = checked_model_config(cfg.model)
    assert (m.backbone_tuning, m.sparse_user_rows, m.finetune.validate_every_epoch) == \
        (tuning, sparse, validate_every_epoch)
    assert m.finetune.backbone_lr == backbone_lr and m.pretrain.backbone_lr == backbone_lr

"""model.item_init=text: rows from the backbone's reading of real item texts (Beauty attributes)."""
import numpy as np
import pytest
import torch

from cllm4rec.backbone import gpt2_tokenizer, load_backbone
from cllm4rec.corpus import CorpusBuilder
from cllm4rec.data import BadLines, split_leave_one_out
from cllm4rec.model import CLLM4Rec
from cllm4rec.text_init import init_from_text, text_field, text_vectors
from cllm4rec.vocab import Vocab

from test_train import cfg_for


@pytest.fixture(scope="module")
def beauty(shared_data):
    from cllm4rec.data.readers import S3RecSequences
    d = shared_data / "amazon_s3rec_splits"
    ds = S3RecSequences(path=d / "Beauty.txt", attributes=d / "Beauty_item2attributes.json").read(BadLines())
    return split_leave_one_out(ds)


def test_text_vectors_are_the_mean_hidden_state_of_each_text():
    backbone, _ = load_backbone("tiny_gpt2", seed=0)
    tokens = np.asarray([5, 6, 7, 8, 9, 10], np.int64)
    offsets = np.asarray([0, 3, 3, 6])          # three texts, the middle one empty
    got = text_vectors(backbone, tokens, offsets, batch_size=2)
    with torch.no_grad():
        for d, (a, b) in enumerate([(0, 3), (3, 6)]):
            h = backbone.base_model(input_ids=torch.tensor([tokens[a:b].tolist()])).last_hidden_state[0]
            torch.testing.assert_close(got[[0, 2][d]], h.mean(0))
    assert torch.equal(got[1], torch.zeros(64))


def test_item_rows_follow_the_text(beauty):
    tok = gpt2_tokenizer()
    backbone, _ = load_backbone("tiny_gpt2", seed=0)
    v = Vocab(len(tok), beauty.n_users, beauty.n_items)
    builder = CorpusBuilder(beauty, tok, v)
    model = CLLM4Rec(backbone, v, init_std=0.002)
    done = init_from_text(model, builder, None, 0.002)
    assert done == {"field": "attributes", "items": beauty.n_items, "users": beauty.n_users}
    texts = beauty.item_text["attributes"]
    same = [j for j in range(1, 200) if texts[j] == texts[0]]
    other = [j for j in range(1, 200) if texts[j] != texts[0]]
    w = model.item["collaborative"].weight.detach()
    assert same and other
    for j in same:           # the same text, the same row
        torch.testing.assert_close(w[j], w[0])
    assert not torch.allclose(w[other[0]], w[0])
    assert float(w.std()) == pytest.approx(0.002, rel=1e-3)
    torch.testing.assert_close(model.item["content"].weight.detach(), w)
    # a user's row points where their items do
    u = model.user["collaborative"].weight.detach()
    items = builder.train_item[builder.train_user == 3]
    cos = torch.nn.functional.cosine_similarity(u[3], w[items].mean(0), dim=0)
    assert cos > 0.99
    with pytest.raises(ValueError, match="item_init_field"):
        text_field(beauty.item_text, "title")


def test_fast_dev_run_with_text_init(tmp_path, shared_data):
    from cllm4rec.train import train
    res = train(cfg_for("pretrain", tmp_path, "trainer.fast_dev_run=true", "model.item_init=text"))
    assert 0 <= res["test"]["recall@20"] <= 1

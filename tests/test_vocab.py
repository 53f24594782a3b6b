"""vocab.py: the id layout [vocabulary | users | items] and text <-> ids with atomic ID tokens,
checked with the real GPT-2 BPE and ML-100K's raw ids."""
import numpy as np
import pytest

from cllm4rec.data import BadLines
from cllm4rec.vocab import IDTokenizer, Vocab

N = 50257


@pytest.fixture(scope="module")
def tok():
    from cllm4rec.backbone import gpt2_tokenizer
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def ml100k(shared_data):
    from cllm4rec.data.readers import RecBoleAtomic
    return RecBoleAtomic(path=shared_data / "movielens_100k").read(BadLines())


@pytest.fixture(scope="module")
def idt(tok, ml100k):
    return IDTokenizer(tok, Vocab(N, ml100k.n_users, ml100k.n_items), ml100k.user_ids, ml100k.item_ids)


def words(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------- layout
@pytest.mark.parametrize("n_users,n_items", [(943, 1682), (1, 1), (22363, 12101)])
def test_layout(n_users, n_items):
    v = Vocab(N, n_users, n_items)
    assert v.size == N + n_users + n_items
    assert (v.user_offset, v.item_offset) == (N, N + n_users)
    assert v.user(0) == N and v.user(n_users - 1) == N + n_users - 1
    assert v.item(0) == N + n_users and v.item(n_items - 1) == v.size - 1
    np.testing.assert_array_equal(v.item(np.arange(n_items)), N + n_users + np.arange(n_items))
    ids = np.arange(v.size + 3)
    # every id is exactly one of: word, user, item, outside
    word = ids < N
    assert not (v.is_user(ids) & v.is_item(ids)).any()
    np.testing.assert_array_equal(word | v.is_user(ids) | v.is_item(ids), ids < v.size)
    assert v.is_user(ids).sum() == n_users and v.is_item(ids).sum() == n_items


@pytest.mark.parametrize("call,arg", [("user", 943), ("user", -1), ("item", 1682), ("item", [0, 1682])])
def test_out_of_range_index(call, arg):
    v = Vocab(N, 943, 1682)
    with pytest.raises(IndexError, match=call):
        getattr(v, call)(arg)


# ---------------------------------------------------------------------- encode / decode
def test_leading_space_rule(idt, tok):
    """An ID token absorbs the space before it; the words after it keep theirs (GPT-2 style)."""
    v = idt.vocab
    ids = idt.encode("<user_3> has interacted with <item_5> <item_9>")
    assert ids == [v.user(3)] + words(tok, " has interacted with") + [v.item(5), v.item(9)]
    assert idt.decode(ids) == "<user_3> has interacted with <item_5> <item_9>"


@pytest.mark.parametrize("text", [
    "<user_0> has interacted with <item_0> <item_1681>, <user_0> will interact with",
    "The title of <item_7> is: Toy Story (1995)",
    "<user_942> wrote the following review for <item_12>: Great!! Would buy again.",
    "plain words only, no ids",
    "<item_3>",
    "two  spaces  <item_4>  then words",
    "Between <item_1> and <item_2>, <user_5> prefers <item_2>",
    "unicode café — naïve <user_1> 東京",
])
def test_round_trip(idt, text):
    ids = idt.encode(text)
    assert idt.decode(ids) == text
    assert idt.encode(idt.decode(ids)) == ids
    n_id_tokens = text.count("<user_") + text.count("<item_")
    assert int(idt.vocab.is_user(ids).sum() + idt.vocab.is_item(ids).sum()) == n_id_tokens   # atomic


def test_raw_id_spelling(idt, ml100k):
    u, j = 5, 17
    raw_u, raw_j = ml100k.user_ids[u], ml100k.item_ids[j]
    by_index = idt.encode(f"<user_{u}> has interacted with <item_{j}>")
    by_raw = idt.encode(f"<user:{raw_u}> has interacted with <item:{raw_j}>")
    assert by_index == by_raw
    assert idt.decode(by_raw, raw=True) == f"<user:{raw_u}> has interacted with <item:{raw_j}>"
    assert idt.decode(by_raw) == f"<user_{u}> has interacted with <item_{j}>"


@pytest.mark.parametrize("text,kind", [("<user:no-such-user> likes", "user"), ("see <item:B000NOTHERE>", "item")])
def test_unknown_raw_id_is_a_clear_error(idt, text, kind):
    with pytest.raises(KeyError, match=f"unknown {kind} id"):
        idt.encode(text)


def test_decode_outside_the_vocabulary(idt):
    with pytest.raises(IndexError, match="outside the extended vocabulary"):
        idt.decode([idt.vocab.size])


def test_glued_id_token_decodes_with_a_space(idt):
    ids = idt.encode("x<item_3>")
    assert ids[-1] == idt.vocab.item(3)
    assert idt.decode(ids) == "x <item_3>"

import random

import pytest
import torch

from minivlm.data import SPECIAL_TOKENS, Tokenizer, WorldConfig, caption, questions, sample_scenes, world_vocabulary


@pytest.fixture(scope="module")
def tok():
    return Tokenizer()


def test_special_ids_are_fixed(tok):
    assert tok.vocab[:8] == list(SPECIAL_TOKENS)
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.image_id, tok.video_id, tok.user_id, tok.assistant_id) == tuple(range(7))
    assert len(tok) == tok.vocab_size == len(SPECIAL_TOKENS) + len(world_vocabulary())
    assert Tokenizer().vocab == tok.vocab  # deterministic order


def test_tokenize_splits_punctuation_and_keeps_specials(tok):
    assert tok.tokenize("<image>How many Circles?") == ["<image>", "how", "many", "circles", "?"]
    assert tok.tokenize("red, blue.  yes") == ["red", ",", "blue", ".", "yes"]


def test_round_trip(tok):
    for text in ["How many red shapes are there?", "a small red circle at the top left .", "yes", ""]:
        assert tok.decode(tok.encode(text)) == " ".join(tok.tokenize(text))
    ids = tok.encode("<user> <image> what color is the square ? <assistant> blue", add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and tok.image_id in ids
    assert tok.decode(ids) == "what color is the square ? blue"
    assert tok.decode(torch.tensor(ids), skip_special=False).startswith("<bos> <user> <image> what")


def test_unknown_word_is_named(tok):
    with pytest.raises(ValueError, match="'zebra'"):
        tok.encode("is there a zebra ?")
    with pytest.raises(ValueError):
        tok.decode([len(tok)])


def test_batch_encode_pads_and_masks(tok):
    texts = ["yes", "how many shapes are there ?"]
    ids, mask = tok.batch_encode(texts, add_eos=True)
    assert ids.shape == mask.shape == (2, 7) and ids.dtype == torch.long and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [2, 7]
    assert ids[0, 2:].eq(tok.pad_id).all() and ids[0, 1] == tok.eos_id
    left, left_mask = tok.batch_encode(texts, add_eos=True, padding_side="left")
    assert left_mask[0].tolist() == [False] * 5 + [True] * 2
    assert torch.equal(left[0, -2:], ids[0, :2])
    for row in range(2):
        assert tok.decode(ids[row][mask[row]]) == tok.decode(left[row][left_mask[row]])
    short, short_mask = tok.batch_encode(texts, max_length=3)
    assert short.shape == (2, 3) and short_mask.all(1).tolist() == [False, True]


def test_batch_encode_rejects_bad_input(tok):
    for bad in ([], "a single string"):
        with pytest.raises(ValueError):
            tok.batch_encode(bad)
    with pytest.raises(ValueError, match="padding_side"):
        tok.batch_encode(["yes"], padding_side="middle")


def test_vocabulary_covers_world_text(tok):
    rng = random.Random(0)
    batch = sample_scenes(300, WorldConfig(max_objects=4), generator=torch.Generator().manual_seed(0))
    texts = []
    for i in range(len(batch)):
        texts.append(caption(batch, i, rng=rng))
        texts += [f"{qa.question} {qa.answer}" for qa in questions(batch, i, rng=rng)]
    used = {word for text in texts for word in tok.tokenize(text)}
    assert used <= set(tok.vocab)                                   # every word of the world has an id
    assert all(tok.decode(tok.encode(text)) == " ".join(tok.tokenize(text)) for text in texts)
    assert set(world_vocabulary()) - used <= {"six", "seven", "eight", "nine", "five"}   # only counts > 4 unused


def test_save_and_load(tok, tmp_path):
    tok.save(tmp_path / "tok.json")
    loaded = Tokenizer.load(tmp_path / "tok.json")
    assert loaded.vocab == tok.vocab and loaded.encode("how many circles ?") == tok.encode("how many circles ?")

"""Interleaved documents and few-shot episodes: format, rules, split purity, the labels."""

import pytest
import torch

from minivlm.data import (END_OF_CHUNK, EPISODE_QUESTION, Tokenizer, WorldConfig, encode_interleaved,
                          few_shot_episodes, interleaved_documents, sample_scenes, scene_hash)

TOKENIZER = Tokenizer()
ONE = WorldConfig(max_objects=1)


def scenes(split, n=60, seed=0):
    return sample_scenes(n, ONE, generator=torch.Generator().manual_seed(seed), split=split)


def test_document_format():
    s = scenes("train")
    docs = interleaved_documents(s, 3, seed=0)
    assert len(docs) == 20 and all(len(d.scene_indices) == 3 for d in docs)
    assert len({i for d in docs for i in d.scene_indices}) == 60           # without replacement
    chunks = docs[0].text.split(f" {END_OF_CHUNK}")
    assert docs[0].text.count("<image>") == 3 and docs[0].text.endswith(END_OF_CHUNK)
    assert chunks[0] == f"<image> {docs[0].answers[0]}"


def test_episode_answers_follow_one_hidden_rule():
    s = scenes("train")
    for episode in few_shot_episodes(s, 50, 3, rules=("color", "shape", "size"), seed=1):
        assert len(episode.scene_indices) == 4 == len(set(episode.scene_indices)) == len(episode.answers)
        for i, answer in zip(episode.scene_indices, episode.answers):
            assert s.objects(i)[0][episode.rule] == answer
        assert episode.text.count(EPISODE_QUESTION) == 4 and episode.text.endswith("<assistant>")
        assert episode.answers[-1] not in episode.text.split("<assistant>")[-1]


def test_zero_shot_is_ambiguous_by_construction():
    s = scenes("train")
    episodes = few_shot_episodes(s, 400, 0, seed=2)
    texts = {e.text for e in episodes}
    assert len(texts) == 1                                               # every 0-shot prompt reads the same
    rules = [e.rule for e in episodes]
    assert 0.4 < rules.count("color") / len(rules) < 0.6


def test_seeded_and_split_pure():
    assert few_shot_episodes(scenes("train"), 5, 2, seed=3) == few_shot_episodes(scenes("train"), 5, 2, seed=3)
    train, test = scenes("train", 300), scenes("test", 100, seed=1)
    assert not set(scene_hash(train).tolist()) & set(scene_hash(test).tolist())


def test_labels_cover_answers_and_end_of_chunk():
    s = scenes("train")
    episodes = few_shot_episodes(s, 3, 2, seed=4)
    every = encode_interleaved(TOKENIZER, episodes, label="all")
    query = encode_interleaved(TOKENIZER, episodes, label="query")
    eoc = TOKENIZER.token_to_id[END_OF_CHUNK]
    for row, episode in enumerate(episodes):
        words = [TOKENIZER.vocab[t] for t in every["labels"][row].tolist() if t != -100]
        assert words == [w for a in episode.answers for w in (a, END_OF_CHUNK)]
        assert [t for t in query["labels"][row].tolist() if t != -100] == [TOKENIZER.token_to_id[episode.answers[-1]], eoc]
    assert every["image_index"].tolist() == [list(e.scene_indices) for e in episodes]
    prompts = encode_interleaved(TOKENIZER, episodes, with_answers=False, label="query", padding_side="left")
    assert (prompts["labels"] == -100).all() and prompts["input_ids"][:, -1].eq(TOKENIZER.assistant_id).all()


def test_mixed_items_pad_image_index_with_minus_one():
    s = scenes("train")
    b = encode_interleaved(TOKENIZER, few_shot_episodes(s, 1, 0) + interleaved_documents(s, 3)[:1])
    assert b["image_index"].shape == (2, 3) and b["image_index"][0, 1:].tolist() == [-1, -1]


@pytest.mark.parametrize("call, message", [
    (lambda s: few_shot_episodes(s, 2, 60), "shots must be"),
    (lambda s: few_shot_episodes(s, 0, 1), "num_episodes"),
    (lambda s: few_shot_episodes(s, 2, 1, rules=("position",)), "rules must be"),
    (lambda s: interleaved_documents(s, 0), "images_per_document"),
    (lambda s: encode_interleaved(TOKENIZER, few_shot_episodes(s, 1, 1), label="some"), "label must be"),
    (lambda s: few_shot_episodes(sample_scenes(5, WorldConfig(min_objects=2, max_objects=2),
                                               generator=torch.Generator().manual_seed(0)), 1, 1), "exactly one object"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call(scenes("train"))

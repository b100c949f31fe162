"""LLaVA: image tokens spliced at <image>, answer-only loss, prefix attention, stages, generation.
(Scoring answers is minivlm.evaluate's: tests/test_evaluate.py.)"""

import pytest
import torch
import torch.nn.functional as F

from minivlm.data import ShapesGenerator, Tokenizer, WorldConfig, sample_vqa
from minivlm.evaluate import encode_vqa
from minivlm.lm import IGNORE_INDEX
from minivlm.models.llava import Llava, LlavaConfig, chat_prompt, encode_chat
from minivlm.train import TrainConfig, fit

TOKENIZER = Tokenizer()


def tiny(**overrides):
    torch.manual_seed(0)
    settings = dict(vocab_size=len(TOKENIZER), image_size=16, patch_size=4, vision_dim=32, vision_depth=1,
                    text_dim=32, text_depth=1)
    return Llava(LlavaConfig(**{**settings, **overrides}))


def scenes_and_images(n=6, seed=0, size=16):
    return ShapesGenerator(WorldConfig(), size, "train", seed).batch(n)


def test_config_defaults_match_the_shapes_tokenizer():
    # The defaults are plain numbers so a model never imports the data package; this keeps them honest.
    from minivlm.models.clip import CLIPConfig
    c = LlavaConfig()
    assert c.vocab_size == CLIPConfig().vocab_size == len(TOKENIZER)
    assert (c.image_token_id, c.assistant_token_id, c.eos_token_id) == \
        (TOKENIZER.image_id, TOKENIZER.assistant_id, TOKENIZER.eos_id)


QUESTIONS = ["how many shapes are there ?", "what color is the circle ?", "is there a red square ?"]
ANSWERS = ["two", "red", "no"]


@pytest.mark.parametrize("projector, tokens", [("linear", 16), ("mlp", 16), ("unshuffle", 4)])
def test_shapes_and_visual_token_counts(projector, tokens):
    model = tiny(projector=projector)
    assert model.config.num_visual_tokens == tokens
    batch = encode_chat(TOKENIZER, QUESTIONS, ANSWERS)
    images = scenes_and_images(3)[1]
    logits, loss, labels = model(images, batch["input_ids"], batch["attention_mask"], batch["labels"])
    L = batch["input_ids"].shape[1]
    assert logits.shape == (3, L - 1 + tokens, len(TOKENIZER)) and labels.shape == logits.shape[:2]
    # the labels are aligned with the logits: the answer's words sit after the visual tokens
    torch.testing.assert_close(loss, F.cross_entropy(logits[:, :-1].reshape(-1, len(TOKENIZER)),
                                                     labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX))
    assert sorted(labels[labels != IGNORE_INDEX].tolist()) == sorted(batch["labels"][batch["labels"] != IGNORE_INDEX].tolist())


def test_chat_template_and_answer_only_labels():
    batch = encode_chat(TOKENIZER, QUESTIONS, ANSWERS)
    text = TOKENIZER.decode(batch["input_ids"][0], skip_special=False)
    assert text == "<bos> <user> <image> how many shapes are there ? <assistant> two <eos>"
    labelled = [TOKENIZER.vocab[i] for i in batch["labels"][0].tolist() if i != IGNORE_INDEX]
    assert labelled == ["two", "<eos>"]
    assert (batch["labels"][~batch["attention_mask"]] == IGNORE_INDEX).all()
    assert chat_prompt("how many shapes are there ?").count("<image>") == 1


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_image_tokens_spliced_at_the_placeholder(padding_side):
    model = tiny()
    batch = encode_chat(TOKENIZER, QUESTIONS, padding_side=padding_side)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    image_embeds = torch.randn(3, 4, 32)
    embeds, new_mask, _, prefix = model.merge_image_tokens(ids, image_embeds, mask, image_index=torch.tensor([2, 0, 1]))
    text = model.lm.embed(ids)
    for row, image in enumerate([2, 0, 1]):
        p = int((ids[row] == TOKENIZER.image_id).nonzero())
        assert torch.equal(embeds[row, p:p + 4], image_embeds[image])
        assert torch.equal(embeds[row, :p], text[row, :p])
        assert torch.equal(embeds[row, p + 4:], text[row, p + 1:])
        assert new_mask[row, p:p + 4].all() and new_mask[row].sum() == mask[row].sum() + 3
    assert prefix.all()                      # prompts only: everything is prefix


def test_loss_covers_answer_tokens_only():
    model = tiny()
    batch = encode_chat(TOKENIZER, QUESTIONS, ANSWERS)
    images = scenes_and_images(3)[1]
    logits, loss, labels = model(images, batch["input_ids"], batch["attention_mask"], batch["labels"])
    T = model.config.num_visual_tokens
    labels = torch.cat([batch["labels"][:, :1], torch.full((3, T - 1), IGNORE_INDEX), batch["labels"][:, 1:]], 1)
    targets = labels[:, 1:]
    scored = targets != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][scored], targets[scored])
    assert torch.allclose(loss, manual, atol=1e-6)
    assert scored.sum() == 6                 # one answer word and <eos> per row


@pytest.mark.parametrize("prefix", ["bidirectional", "causal"])
def test_prefix_attention(prefix):
    """Image tokens see the question only with a bidirectional prefix; nothing sees the answer early."""
    model = tiny(prefix=prefix)
    images = scenes_and_images(1)[1]
    a = encode_chat(TOKENIZER, ["how many circles are there ?"], ["two"])
    b = encode_chat(TOKENIZER, ["how many squares are there ?"], ["two"])
    c = encode_chat(TOKENIZER, ["how many circles are there ?"], ["three"])
    logits = {k: model(images, v["input_ids"]).logits for k, v in dict(a=a, b=b, c=c).items()}
    T = model.config.num_visual_tokens
    image_rows = slice(2, 2 + T)
    question_changed = not torch.allclose(logits["a"][0, image_rows], logits["b"][0, image_rows])
    assert question_changed == (prefix == "bidirectional")
    answer_at = a["input_ids"].shape[1] - 3 + T          # position of the answer word
    assert torch.allclose(logits["a"][0, :answer_at], logits["c"][0, :answer_at], atol=1e-6)
    assert not torch.allclose(logits["a"][0, answer_at:], logits["c"][0, answer_at:])


def test_one_image_serves_several_questions():
    model = tiny()
    images = scenes_and_images(2)[1]
    batch = encode_chat(TOKENIZER, QUESTIONS, ANSWERS)
    index = torch.tensor([1, 0, 1])
    shared = model(images, batch["input_ids"], batch["attention_mask"], image_index=index).logits
    repeated = model(images[index], batch["input_ids"], batch["attention_mask"]).logits
    assert torch.allclose(shared, repeated, atol=1e-5)


def test_stages_freeze_the_right_parts():
    model = tiny()
    trainable = lambda module: {p.requires_grad for p in module.parameters()}
    model.set_stage(1)
    assert trainable(model.projector) == {True} and trainable(model.vision) == trainable(model.lm) == {False}
    model.set_stage(2)
    assert trainable(model.projector) == trainable(model.lm) == {True} and trainable(model.vision) == {False}
    model.set_stage("all")
    assert trainable(model) == {True}
    with pytest.raises(ValueError, match="stage"):
        model.set_stage(3)


def test_stage_one_training_changes_only_the_projector():
    model = tiny().set_stage(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scenes, images = scenes_and_images(4)
    batch = encode_vqa(TOKENIZER, sample_vqa(scenes, 2))
    fit(model, lambda step: batch | {"images": images}, lambda m, b: m(
        b["images"], b["input_ids"], b["attention_mask"], b["labels"], b["image_index"]).loss,
        TrainConfig(steps=3, warmup_steps=1, progress=False, device="cpu"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]) != key.startswith("projector."), key


def test_load_vision_tower():
    model, other = tiny(), tiny()
    torch.nn.init.normal_(other.vision.patch_embed.proj.weight)
    model.load_vision_tower(other.vision)
    assert torch.equal(model.vision.patch_embed.proj.weight, other.vision.patch_embed.proj.weight)
    with pytest.raises(ValueError, match="vision tower"):
        model.load_vision_tower(tiny(vision_dim=16).vision)


def test_load_vision_tower_from_clip():
    clip = pytest.importorskip("minivlm.models.clip")
    model = tiny()
    c = model.config
    tower = clip.CLIP(clip.CLIPConfig(vision=c.vision_config(), vocab_size=len(TOKENIZER))).vision
    model.load_vision_tower(tower)
    images = scenes_and_images(2)[1]
    assert torch.equal(model.vision(images).tokens, tower(images).tokens)


def test_bad_inputs():
    model = tiny()
    images = scenes_and_images(1)[1]
    no_image = torch.tensor([TOKENIZER.encode("<bos> <user> how many shapes are there ? <assistant>")])
    with pytest.raises(ValueError, match="exactly one <image>"):
        model(images, no_image)
    two_images = torch.tensor([TOKENIZER.encode("<user> <image> <image> how many shapes ? <assistant>")])
    with pytest.raises(ValueError, match="exactly one <image>"):
        model(images, two_images)
    no_assistant = torch.tensor([TOKENIZER.encode("<user> <image> how many shapes ?")])
    with pytest.raises(ValueError, match="<assistant>"):
        model(images, no_assistant)
    ids = encode_chat(TOKENIZER, QUESTIONS[:1])["input_ids"]
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        model(torch.rand(1, 3, 32, 32), ids)
    with pytest.raises(ValueError, match="image_index"):
        model(images, ids.repeat(2, 1))
    right = encode_chat(TOKENIZER, ["how many shapes are there ?", "is there a red square at the top left ?"])
    with pytest.raises(ValueError, match="left-padded"):
        model.generate(scenes_and_images(2)[1], right["input_ids"], right["attention_mask"])
    with pytest.raises(ValueError, match="unshuffle_factor"):
        LlavaConfig(image_size=24, patch_size=4, unshuffle_factor=4)
    with pytest.raises(ValueError, match="projector"):
        LlavaConfig(projector="qformer")
    with pytest.raises(ValueError, match="vocab_size"):
        model(images, ids.masked_fill(ids == TOKENIZER.bos_id, 10_000))


def test_validate_false_skips_only_the_value_checks():
    """validate=False (the training hot path: no GPU -> CPU sync) computes the same thing."""
    model = tiny()
    batch = encode_chat(TOKENIZER, QUESTIONS, ANSWERS)
    images = scenes_and_images(3)[1]
    args = (images, batch["input_ids"], batch["attention_mask"], batch["labels"])
    checked, unchecked = model(*args), model(*args, validate=False)
    torch.testing.assert_close(checked.logits, unchecked.logits)
    torch.testing.assert_close(checked.loss, unchecked.loss)
    with pytest.raises(ValueError, match="images must be"):      # shape checks still run
        model(torch.rand(3, 3, 8, 8), *args[1:], validate=False)
    with pytest.raises(ValueError, match="integer tensor"):      # and so does the ids' type check
        model(images, batch["input_ids"].float(), validate=False)


def trained_tiny(steps=40):
    """A tiny model trained a little: it answers in the right format, often wrongly."""
    model = tiny()
    scenes, images = scenes_and_images(64, seed=1)
    pairs = sample_vqa(scenes, 4, seed=1)
    data = encode_vqa(TOKENIZER, pairs)

    def get_batch(step):
        return images, data["input_ids"], data["attention_mask"], data["labels"], data["image_index"]

    fit(model, get_batch, lambda m, b: m(*b).loss,
        TrainConfig(steps=steps, lr=1e-2, warmup_steps=5, progress=False, device="cpu"))
    return model.eval()


def test_generation_with_and_without_cache_agree():
    model = trained_tiny(steps=10)
    images = scenes_and_images(3)[1]
    batch = encode_chat(TOKENIZER, QUESTIONS, padding_side="left")
    with_cache = model.generate(images, batch["input_ids"], batch["attention_mask"], max_new_tokens=3)
    embeds, mask, _, prefix = model.merge_image_tokens(batch["input_ids"], model.encode_images(images),
                                                       batch["attention_mask"])
    without = model.lm.generate(inputs_embeds=embeds, attention_mask=mask, attn_mask=model.prefix_attention(prefix),
                                max_new_tokens=3, eos_id=TOKENIZER.eos_id, use_cache=False)
    assert torch.equal(with_cache, without)

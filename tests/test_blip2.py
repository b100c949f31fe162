"""minivlm.models.blip2, stage 1: three losses from one batch, gradients only into the trainable parts."""

import pytest
import torch

from minivlm.data import Tokenizer
from minivlm.models.blip2 import Blip2Config, Blip2Stage1
from minivlm.qformer import QFormerConfig
from minivlm.vit import ViT, ViTConfig


def stage1(num_queries=4):
    torch.manual_seed(0)
    vit = ViT(ViTConfig(image_size=32, patch_size=8, dim=24, depth=1, heads=2))
    tokenizer = Tokenizer()
    config = Blip2Config(QFormerConfig(dim=16, depth=2, heads=2, mlp_hidden=32, image_dim=24,
                                       num_queries=num_queries, vocab_size=tokenizer.vocab_size), embed_dim=8)
    return Blip2Stage1(vit, config), tokenizer


def batch(tokenizer, B=4):
    captions = ["two red circles .", "a blue square .", "one green triangle and a red circle .", "a circle ."][:B]
    ids, mask = tokenizer.batch_encode(captions, add_bos=True, add_eos=True)
    return torch.randn(B, 3, 32, 32), ids, mask


def test_losses_and_where_the_gradient_goes():
    model, tokenizer = stage1()
    before = {k: v.clone() for k, v in model.vision.state_dict().items()}
    losses = model(*batch(tokenizer), generator=torch.Generator().manual_seed(0))
    assert losses.itc_logits.shape == (4, 4)
    for loss in (losses.itc, losses.itm, losses.itg):
        assert loss.dim() == 0 and torch.isfinite(loss)
    (losses.itc + losses.itm + losses.itg).backward()
    assert all(p.grad is None for p in model.vision.parameters())
    for name in ("query_tokens", "layers.0.cross_attn.key.weight", "layers.0.text_ffn.fc1.weight"):
        assert model.qformer.get_parameter(name).grad.abs().sum() > 0, name
    for head in (model.vision_proj, model.text_proj, model.itm_head, model.lm_head):
        assert head.weight.grad.abs().sum() > 0
    assert model.log_logit_scale.grad is not None
    assert all(torch.equal(before[k], v) for k, v in model.vision.state_dict().items())
    assert not model.train().vision.training


def test_the_itg_loss_is_the_next_token_loss_of_the_caption():
    model, tokenizer = stage1()
    images, ids, mask = batch(tokenizer, B=2)
    # at initialisation the LM head is near uniform: the loss is about ln V
    loss = model(images, ids, mask).itg.item()
    assert abs(loss - torch.log(torch.tensor(float(tokenizer.vocab_size))).item()) < 0.5


def test_bad_input():
    model, tokenizer = stage1()
    images, ids, mask = batch(tokenizer)
    with pytest.raises(ValueError, match="text_mask"):
        model(images, ids, mask[:, :-1])
    with pytest.raises(ValueError, match="image_dim"):
        Blip2Stage1(ViT(ViTConfig(image_size=32, patch_size=8, dim=32, depth=1, heads=2)), model.config)
    assert model.query_outputs(images).shape == (4, 4, 16)


def test_stage2_is_a_soft_prompt_in_front_of_the_frozen_lm():
    from minivlm.models.blip2 import Blip2
    from minivlm.models.llava import LlavaConfig, answer_questions, encode_chat
    torch.manual_seed(0)
    tokenizer = Tokenizer()
    llava = LlavaConfig(vocab_size=tokenizer.vocab_size, vision_dim=24, vision_depth=1, vision_heads=2,
                        text_dim=32, text_depth=1, text_heads=2)
    stage1_model, _ = stage1(num_queries=5)
    model = Blip2(llava, stage1_model.config.qformer)          # the stage-1 Q-Former's shape, text side unused
    lm_before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    images = torch.rand(2, 3, 32, 32)
    assert model.encode_images(images).shape == (2, 5, 32)
    chat = encode_chat(tokenizer, ["how many circles are there ?"] * 2, ["two", "one"])
    out = model(images, chat["input_ids"], chat["attention_mask"], chat["labels"])
    out.loss.backward()
    assert all(p.grad is None for p in [*model.lm.parameters(), *model.vision.parameters()])
    assert model.qformer.query_tokens.grad.abs().sum() > 0 and model.projector.weight.grad.abs().sum() > 0
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    assert all(torch.equal(lm_before[k], v) for k, v in model.lm.state_dict().items())
    answers = answer_questions(model, tokenizer, images, ["what color is the circle ?"] * 2)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    with pytest.raises(ValueError, match="stage 2 only"):
        model.set_stage(1)
    assert torch.equal(model.load_qformer(stage1_model).qformer.query_tokens, stage1_model.qformer.query_tokens)


def test_stage2_keeps_the_query_side_of_a_stage1_qformer_and_trains_only_it():
    from dataclasses import replace
    from minivlm.models.blip2 import Blip2
    from minivlm.models.llava import LlavaConfig
    stage1_model, tokenizer = stage1(num_queries=3)
    llava = LlavaConfig(vocab_size=tokenizer.vocab_size, vision_dim=24, vision_depth=1, vision_heads=2,
                        text_dim=32, text_depth=1, text_heads=2)
    model = Blip2(llava, replace(stage1_model.config.qformer, vocab_size=0)).load_qformer(stage1_model)
    features = torch.randn(2, 16, 24)                         # frozen ViT tokens (B, N, Dv)
    assert torch.equal(model.qformer(features), stage1_model.qformer(features))
    assert not any(p.requires_grad for layer in model.qformer.layers for p in layer.text_ffn.parameters())
    with pytest.raises(ValueError, match="does not fit"):
        Blip2(llava, replace(stage1_model.config.qformer, vocab_size=0, num_queries=4)).load_qformer(stage1_model)


def test_retrieval_similarity_is_the_itc_logits_of_the_batch():
    model, tokenizer = stage1()
    images, ids, mask = batch(tokenizer)
    losses = model(images, ids, mask, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model.similarity(images, ids, mask), losses.itc_logits, atol=1e-5)
    assert model.similarity(images[:3], ids, mask).shape == (3, 4)

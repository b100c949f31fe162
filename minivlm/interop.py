"""Real weights in the course's own modules: converters from Hugging Face `transformers` models.

SmolVLM / Idefics3 (Laurençon et al. 2024, "Building and better understanding vision-language
models", arXiv 2408.12637; SmolVLM, Marafioti et al. 2025, arXiv 2504.05299) is the course's
stack: a SigLIP ViT (Zhai et al. 2023, arXiv 2303.15343), a pixel-shuffle connector and a
LLaMA-style LM (SmolLM2). Each converter reads an HF model (or its state dict and config),
checks that the course's module computes the same function, and copies the tensors:

    language_model_from_llama(LlamaForCausalLM)        -> lm.LanguageModel
        embed_tokens (V, D), per layer q (D, D), k/v (H_kv·d, D), o (D, D), gate/up (F, D),
        down (D, F), two RMSNorm weights (D,); final norm (D,); lm_head (V, D) or tied
    vision_tower_from_siglip(SiglipVisionModel)        -> vit.ViT
        patch conv (D, C, p, p) + bias, positions (N, D), per layer LayerNorms, q/k/v/out
        (D, D) + biases, fc1 (F, D), fc2 (D, F); post_layernorm (D,). The attention-pool
        head (`vision_use_head`) is not converted: the course's VLMs read the patch tokens.
    connector_from_idefics3(Idefics3Connector)         -> projector.PixelShuffleLinearProjector
        modality_projection.proj (Dt, Dv·r²), no bias
    llava_from_idefics3(Idefics3ForConditionalGeneration) -> models.llava.Llava
        the three above in one model, for one image of the tower's size (no image splitting):
        images (B, 3, H, W) in [0, 1], one <image> id per prompt -> logits (B, L - 1 + T, V)

What must match, and where the course needed an option (defaults unchanged):
    RoPE        HF's LLaMA rotates halves (`rotate_half`), as rope.py does: q/k copy as they are,
                no permutation. (Meta's original checkpoints pair adjacent channels; HF's
                conversion script already permuted them.)
    GQA         LMConfig.kv_heads (attention.py: H_kv key/value heads, each shared by H/H_kv queries)
    eps         LMConfig.norm_eps (SmolLM2: 1e-5); ViTConfig.norm_eps (SigLIP: 1e-6)
    GELU        ViTConfig.gelu = "tanh" for SigLIP's gelu_pytorch_tanh
    MLP width   ViTConfig.mlp_hidden (SigLIP's 4304 is no round multiple of 1152)
    shuffle     Idefics3's `pixel_shuffle(x, scale_factor=r)` is the same reshapes as InternVL's
                `pixel_shuffle(x, 1/r)`: pixel_unshuffle.py's order="internvl", no new order.
nanoVLM's modality projector (huggingface/nanoVLM, models/modality_projector.py, read in a
fork of it) is the same design in the same order: one reshape (B, H/r, r, W/r, r, C) -> permute
to (B, H/r, W/r, r, r, C), i.e. order="internvl", then a bias-free Linear(Dv·r², Dt).

What is refused with a ValueError naming it: rope scaling (any rope_type but "default"),
an activation other than SiLU (LM) or GELU (ViT), attention or MLP biases in the LM, a
head_dim other than hidden_size / heads, a sliding window. `transformers` is optional: this
file never imports it (it reads the HF config's attributes and the state dict's tensors);
the tests build HF models to compare against (`pip install -e ".[interop]"`).
"""

import torch

from .lm import LanguageModel, LMConfig
from .projector import PixelShuffleLinearProjector
from .vit import ViT, ViTConfig


def _state_and_config(model_or_state_dict, config, what, part=None):
    """(state dict, HF config) from a model, or from a state dict with its config; for a whole Idefics3, the
    config of its `part` ("text_config" or "vision_config")."""
    if isinstance(model_or_state_dict, torch.nn.Module):
        state, config = model_or_state_dict.state_dict(), config or getattr(model_or_state_dict, "config", None)
    elif isinstance(model_or_state_dict, dict):
        state = model_or_state_dict
    else:
        raise ValueError(f"{what}: expected an HF model or a state dict, got {type(model_or_state_dict).__name__}")
    if config is None:
        raise ValueError(f"{what}: these weights come without their HF config, pass config=")
    if part is not None and getattr(config, "model_type", None) == "idefics3":
        config = getattr(config, part)
    return state, config


def _strip_prefix(state, prefixes):
    """The entries under the first prefix that has any (a prefix "" keeps them all)."""
    for prefix in prefixes:
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            return sub
    return {}


def _rope_type_and_theta(config):
    """("default", theta) from a LLaMA config of transformers 4.x (rope_scaling, rope_theta) or 5.x (rope_parameters)."""
    params = getattr(config, "rope_parameters", None) or {}
    scaling = getattr(config, "rope_scaling", None) or {}
    rope_type = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    return rope_type, float(theta)


def lm_config_from_llama(config):
    """The LMConfig computing what this LlamaConfig computes; ValueError naming what the course cannot do."""
    name = "language_model_from_llama"
    rope_type, theta = _rope_type_and_theta(config)
    if rope_type != "default":
        raise ValueError(f"{name}: rope scaling {rope_type!r} is not supported (the course's RoPE is plain)")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ValueError(f"{name}: unsupported activation hidden_act={config.hidden_act!r} (SwiGLU needs 'silu')")
    if getattr(config, "attention_bias", False):
        raise ValueError(f"{name}: attention_bias=True is not supported (the course's LM has no biases)")
    if getattr(config, "mlp_bias", False):
        raise ValueError(f"{name}: mlp_bias=True is not supported (the course's LM has no biases)")
    if getattr(config, "sliding_window", None):
        raise ValueError(f"{name}: sliding_window={config.sliding_window} is not supported (full causal attention)")
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if head_dim * heads != config.hidden_size:
        raise ValueError(f"{name}: head_dim={head_dim} · heads={heads} != hidden_size={config.hidden_size} "
                         f"(the course's heads split hidden_size)")
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return LMConfig(vocab_size=config.vocab_size, dim=config.hidden_size, depth=config.num_hidden_layers,
                    heads=heads, kv_heads=None if kv_heads == heads else kv_heads,
                    mlp_hidden=config.intermediate_size, max_seq_len=config.max_position_embeddings,
                    rope="1d", rope_theta=theta, tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
                    norm_eps=config.rms_norm_eps)


LLAMA_LAYER = {"input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn.q_proj.weight",
               "self_attn.k_proj.weight": "attn.k_proj.weight", "self_attn.v_proj.weight": "attn.v_proj.weight",
               "self_attn.o_proj.weight": "attn.out_proj.weight", "post_attention_layernorm.weight": "mlp_norm.weight",
               "mlp.gate_proj.weight": "mlp.w1.weight", "mlp.up_proj.weight": "mlp.w3.weight",
               "mlp.down_proj.weight": "mlp.w2.weight"}


def _load(module, ours, what):
    """Copy `ours` (the course's names) into module, every tensor's shape checked; ValueError on any mismatch."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(ours))
    if missing:
        raise ValueError(f"{what}: the HF weights lack {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    for key, tensor in ours.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(f"{what}: {key} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}")
    module.load_state_dict(ours, strict=True)
    return module


def language_model_from_llama(hf_model_or_state_dict, config=None):
    """A LanguageModel with the weights of an HF LlamaForCausalLM (SmolLM2 is one), or of its state dict and config."""
    what = "language_model_from_llama"
    state, config = _state_and_config(hf_model_or_state_dict, config, what, part="text_config")
    lm_config = lm_config_from_llama(config)
    body = _strip_prefix(state, ("model.text_model.", "model.", ""))
    ours = {"tok_emb.weight": body.get("embed_tokens.weight"), "norm.weight": body.get("norm.weight")}
    for i in range(lm_config.depth):
        for theirs, mine in LLAMA_LAYER.items():
            ours[f"blocks.{i}.{mine}"] = body.get(f"layers.{i}.{theirs}")
    if lm_config.tie_embeddings:
        ours["lm_head.weight"] = ours["tok_emb.weight"]
    else:
        ours["lm_head.weight"] = state.get("lm_head.weight")
    ours = {k: v for k, v in ours.items() if v is not None}
    model = LanguageModel(lm_config)
    return _load(model, ours, what).eval()


def vit_config_from_siglip(config):
    """The ViTConfig computing what this SiglipVisionConfig (or Idefics3VisionConfig) computes."""
    name = "vision_tower_from_siglip"
    gelus = {"gelu_pytorch_tanh": "tanh", "gelu_new": "tanh", "gelu": "exact"}
    if config.hidden_act not in gelus:
        raise ValueError(f"{name}: unsupported activation hidden_act={config.hidden_act!r} "
                         f"(one of {sorted(gelus)})")
    if config.image_size % config.patch_size:
        raise ValueError(f"{name}: image_size={config.image_size} is not divisible by patch_size={config.patch_size}")
    return ViTConfig(image_size=config.image_size, patch_size=config.patch_size, channels=config.num_channels,
                     dim=config.hidden_size, depth=config.num_hidden_layers, heads=config.num_attention_heads,
                     mlp_hidden=config.intermediate_size, positions="learned", pool="mean",
                     gelu=gelus[config.hidden_act], norm_eps=config.layer_norm_eps)


SIGLIP_LAYER = {"layer_norm1": "attn_norm", "self_attn.q_proj": "attn.q_proj", "self_attn.k_proj": "attn.k_proj",
                "self_attn.v_proj": "attn.v_proj", "self_attn.out_proj": "attn.out_proj", "layer_norm2": "mlp_norm",
                "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def vision_tower_from_siglip(hf_model_or_state_dict, config=None):
    """A ViT with the weights of an HF SiglipVisionModel (or Idefics3's vision model), or its state dict and config.

    The ViT's `tokens` (B, N, D) are HF's last_hidden_state (after post_layernorm)."""
    what = "vision_tower_from_siglip"
    state, config = _state_and_config(hf_model_or_state_dict, config, what, part="vision_config")
    vit_config = vit_config_from_siglip(config)
    body = _strip_prefix(state, ("model.vision_model.", "vision_model.", ""))
    ours = {}
    for kind in ("weight", "bias"):
        ours[f"patch_embed.proj.{kind}"] = body.get(f"embeddings.patch_embedding.{kind}")
        ours[f"norm.{kind}"] = body.get(f"post_layernorm.{kind}")
        for i in range(vit_config.depth):
            for theirs, mine in SIGLIP_LAYER.items():
                ours[f"blocks.{i}.{mine}.{kind}"] = body.get(f"encoder.layers.{i}.{theirs}.{kind}")
    positions = body.get("embeddings.position_embedding.weight")
    ours["pos_embed"] = None if positions is None else positions[None]
    ours = {k: v for k, v in ours.items() if v is not None}
    return _load(ViT(vit_config), ours, what).eval()


def connector_from_idefics3(hf_connector_or_state_dict, config=None):
    """A PixelShuffleLinearProjector with the weights of an HF Idefics3Connector (or a full Idefics3 model's).

    config: the Idefics3Config (scale_factor, vision and text widths); read from the module when given one."""
    what = "connector_from_idefics3"
    state, config = _state_and_config(hf_connector_or_state_dict, config, what)
    body = _strip_prefix(state, ("model.connector.", "connector.", ""))
    weight = body.get("modality_projection.proj.weight")
    if weight is None:
        raise ValueError(f"{what}: no modality_projection.proj.weight in the weights")
    if "modality_projection.proj.bias" in body:
        raise ValueError(f"{what}: a connector with a bias is not Idefics3's (bias-free Linear)")
    r = config.scale_factor
    vision_dim, text_dim = config.vision_config.hidden_size, config.text_config.hidden_size
    projector = PixelShuffleLinearProjector(vision_dim, text_dim, factor=r, order="internvl")
    return _load(projector, {"proj.weight": weight}, what).eval()


def llava_from_idefics3(hf_model, assistant_token_id=None):
    """The course's Llava (models/llava.py) with the weights of an HF Idefics3ForConditionalGeneration
    (SmolVLM), for one image of the vision tower's size (no image splitting).

    The course's prompt holds ONE <image> id (config.image_token_id) that the model replaces by the
    T = (image_size / patch_size)² / r² visual tokens; HF's processor writes T image ids instead (and
    wraps them in <fake_token_around_image> / <global-img> text tokens, which stay ordinary tokens
    of the prompt here). Images are in [0, 1]: `normalize` applies SmolVLM's mean 0.5, std 0.5, so
    HF's pixel_values = (images - 0.5) / 0.5. Attention is plain causal (prefix="causal").
    assistant_token_id: the id check_prompts looks for in every prompt (e.g. the id of "Assistant");
    default: the image token's, so any prompt with its <image> passes."""
    from .models.llava import Llava, LlavaConfig

    what = "llava_from_idefics3"
    config = getattr(hf_model, "config", None)
    if getattr(config, "model_type", None) != "idefics3":
        raise ValueError(f"{what}: expected an Idefics3ForConditionalGeneration, got {type(hf_model).__name__}")
    vision = vision_tower_from_siglip(hf_model.state_dict(), config=config.vision_config)
    projector = connector_from_idefics3(hf_model.state_dict(), config=config)
    lm = language_model_from_llama(hf_model.state_dict(), config=config.text_config)
    vc, lc = vision.config, lm.config
    if vc.grid_size % config.scale_factor:
        raise ValueError(f"{what}: the {vc.grid_size}x{vc.grid_size} patch grid is not divisible by "
                         f"scale_factor={config.scale_factor}")
    eos = config.text_config.eos_token_id
    llava_config = LlavaConfig(
        vocab_size=lc.vocab_size, image_size=vc.image_size, patch_size=vc.patch_size, vision_dim=vc.dim,
        vision_depth=vc.depth, vision_heads=vc.heads, vision_positions="learned", projector="unshuffle",
        unshuffle_factor=config.scale_factor, text_dim=lc.dim, text_depth=lc.depth, text_heads=lc.heads,
        max_seq_len=lc.max_seq_len, tie_embeddings=lc.tie_embeddings, prefix="causal",
        image_token_id=config.image_token_id,
        assistant_token_id=config.image_token_id if assistant_token_id is None else assistant_token_id,
        eos_token_id=eos[0] if isinstance(eos, (list, tuple)) else eos,
        pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.5, 0.5, 0.5))
    model = Llava(llava_config)
    # The converted parts carry options LlavaConfig does not name (GQA, eps, tanh GELU, a bias-free
    # connector): they replace the ones the config built.
    model.vision, model.projector, model.lm = vision, projector, lm
    return model.eval()

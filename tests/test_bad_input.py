"""Bad input at every door: the public API, discovered (not listed), called with typical mistakes.

Every public function, model forward / generate and config dataclass of minivlm (minivlm.course and
the command line aside, tested elsewhere) is found by walking the package. Each is called with the
mistakes its signature invites: None or a list where a tensor goes, uint8 or wrong-rank images,
float token ids; 0, -1, "10", 2.5 and True for an int field, "no" for a bool, nan for a float, an
unknown option for a str. Each call must raise a ValueError / TypeError whose message names the
argument, or be on the short, commented list of documented results below.
"""

import dataclasses
import importlib
import inspect
import math
import pkgutil
import signal
import typing

import pytest
import torch
import torch.nn as nn

import minivlm

# ----------------------------------------------------------------------------- discovery

SKIP_MODULES = ("minivlm.course", "minivlm.cli", "minivlm.checks")   # tested in their own files / the checkers


def public_api():
    """{qualified name: object} of every public function and class defined in a minivlm module."""
    found = {}
    for info in pkgutil.walk_packages(minivlm.__path__, "minivlm."):
        if info.name.startswith(SKIP_MODULES) or any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__ \
                    and (inspect.isfunction(obj) or inspect.isclass(obj)):
                found[f"{module.__name__}.{name}"] = obj
    return found


API = public_api()
CONFIGS = {name: obj for name, obj in API.items() if dataclasses.is_dataclass(obj) and name.endswith("Config")}
FUNCTIONS = {name: obj for name, obj in API.items() if inspect.isfunction(obj)}
MODULES = {name: obj for name, obj in API.items() if inspect.isclass(obj) and issubclass(obj, nn.Module)}

# ----------------------------------------------------------------------------- the mistakes

IMAGES = {"images": 4, "pixel_values": 4, "image": 3}             # (B, 3, H, W) / (3, H, W) floats in [0, 1]
IDS = {"input_ids", "ids", "text_ids", "labels", "token_ids"}     # integer (B, L)
TENSORS = set(IMAGES) | IDS | {"x", "tokens", "media", "logits", "image_features", "text_features", "features",
                          "patches", "embeds", "inputs_embeds", "latents", "kv", "grid", "query", "key", "value"}


SIZES = {"patch_size", "factor", "batch_size", "max_new_tokens", "head_dim", "merge_size", "temporal_patch_size",
         "heads", "dim", "num_heads", "crop_size", "max_tokens", "image_size", "num_latents", "depth"}   # ints >= 1
SIZE_MISTAKES = (("0", 0), ("-1", -1), ('"10"', "10"), ("2.5", 2.5))


def tensor_mistakes(name):
    """(label, bad value) for a tensor parameter `name`."""
    yield "None", None
    yield "a list", [[0.0, 1.0]]
    if name in IMAGES:
        shape = (2, 3, 32, 32)[4 - IMAGES[name]:]
        yield "uint8 images", torch.zeros(shape, dtype=torch.uint8)
        yield "wrong-rank images", torch.rand(shape[1:] if len(shape) == 4 else (2, *shape))
    if name in IDS:
        yield "float ids", torch.rand(2, 8)


def field_mistakes(field):
    """(label, bad value) for a config field, from its annotation."""
    kind = field.type if isinstance(field.type, type) else {"int": int, "bool": bool, "float": float,
                                                             "str": str}.get(str(field.type))
    if kind is int:
        yield from (("0", 0), ("-1", -1), ('"10"', "10"), ("2.5", 2.5), ("True", True))
    elif kind is bool:
        yield from (('"no"', "no"), ("0", 0))
    elif kind is float:
        yield from (("nan", math.nan), ("inf", math.inf), ('"1e-3"', "1e-3"))
    elif kind is str:
        yield "an unknown option", "no-such-option"


# ----------------------------------------------------------------------------- documented results

# (entry point, argument, mistake label): the call runs, by design. Each says why.
DOCUMENTED = {
    # 0 is a documented setting of these fields
    ("minivlm.train.TrainConfig", "warmup_steps", "0"): "0: no warmup",
    ("minivlm.train.TrainConfig", "eval_every", "0"): "0: evaluate once, at the end",
    ("minivlm.train.TrainConfig", "checkpoint_every", "0"): "0: save once, at the end",
    ("minivlm.train.TrainConfig", "seed", "0"): "any int seeds",
    ("minivlm.train.TrainConfig", "seed", "-1"): "any int seeds",
    ("minivlm.qformer.QFormerConfig", "vocab_size", "0"): "0: no text side (queries only)",
    ("minivlm.train.TrainConfig", "grad_clip", "0"): "0 disables clipping",
    # free-form strings: a device name (checked by torch when fit starts), a path
    ("minivlm.train.TrainConfig", "device", "an unknown option"): "checked by torch.device in fit",
    ("minivlm.train.TrainConfig", "checkpoint_path", "an unknown option"): "any path",
    # None is documented: a prompt without images (then grid_thw must be None too, and the error names it)
    ("minivlm.models.qwen2vl.Qwen2VL.forward", "patches", "None"): "None: no images",
    ("minivlm.models.qwen2vl.Qwen2VL.generate", "patches", "None"): "None: no images",
    # an empty batch of scenes is a batch
    ("minivlm.data.world.sample_scenes", "batch_size", "0"): "0 scenes: an empty SceneBatch",
    ("minivlm.data.video.sample_videos", "batch_size", "0"): "0 videos: an empty VideoBatch",
    # image processing before normalising, as the reference's on PIL images: any dtype resizes and pads
    ("minivlm.anyres.resize_and_pad", "image", "uint8 images"): "resizes uint8 pixels as they are",
}
# Building blocks inside the models trust their inputs: the model checks them once, at its door
# (COURSE.md, "validate once at the public entry point"), and a block's forward stays the math.
INNER_LAYERS = ("minivlm.attention.MultiHeadAttention", "minivlm.blocks.RMSNorm", "minivlm.blocks.SwiGLU",
                "minivlm.blocks.MLP", "minivlm.dynamic_resolution.PatchEmbed", "minivlm.dynamic_resolution.PatchMerger",
                "minivlm.gated_xattn.MaskedCrossAttention", "minivlm.perceiver.PerceiverAttention",
                "minivlm.blocks.TransformerBlock", "minivlm.qformer.PostNormAttention", "minivlm.qformer.PostNormFFN")
# the identity without a process group: it returns what it is given
DOCUMENTED_ANYTHING = ("minivlm.contrastive.gather_with_grad",)
# token-id fields: 0 is a valid id (the fields are checked to lie in [0, vocab_size))
for _name, _config in CONFIGS.items():
    for _field in dataclasses.fields(_config):
        if _field.name.endswith(("_token_id", "_id")):
            DOCUMENTED[(_name, _field.name, "0")] = "0 is a valid token id"


# ----------------------------------------------------------------------------- calling

class Slow(Exception):
    pass


def call(fn, *args, **kwargs):
    """('error', exception) / ('ran', result); a call that takes over 10 s is 'slow' (it did real work)."""
    def alarm(signum, frame):
        raise Slow
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(10)
    try:
        return "ran", fn(*args, **kwargs)
    except Slow:
        return "slow", None
    except Exception as error:                        # noqa: BLE001 - classified by the caller
        return "error", error
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def classify(entry, argument, label, outcome, value):
    if outcome == "error" and isinstance(value, (ValueError, TypeError)) and argument in str(value):
        return "clear"
    if (entry, argument, label) in DOCUMENTED or entry.rsplit(".", 1)[0] in INNER_LAYERS \
            or entry in DOCUMENTED_ANYTHING:
        return "documented"
    return "other"


def fuzz_configs(record):
    for name, config in CONFIGS.items():
        required = {f.name: f for f in dataclasses.fields(config)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        base = {"vocab_size": 58, "height_px": 64, "width_px": 64}
        base = {k: v for k, v in base.items() if k in required}
        assert set(base) == set(required), f"{name}: no valid value for {set(required) - set(base)}"
        config(**base)                                  # the defaults are valid
        for field in dataclasses.fields(config):
            for label, bad in field_mistakes(field):
                record(name, field.name, label, *call(config, **{**base, field.name: bad}))


# Valid values for the other arguments of a function or module, by name: what a caller would pass.
def valid_arguments():
    return {"images": torch.rand(2, 3, 32, 32), "image": torch.rand(3, 32, 32), "input_ids": torch.randint(4, 50, (2, 8)),
            "ids": torch.randint(4, 50, (2, 8)), "labels": torch.randint(4, 50, (2, 8)), "x": torch.randn(2, 8, 16),
            "patch_size": 4, "factor": 2, "dim": 16, "heads": 2, "num_heads": 2, "image_features": torch.randn(4, 8),
            "text_features": torch.randn(4, 8), "logit_scale": torch.tensor(10.0), "tokens": torch.randn(2, 16, 16),
            "media": torch.randn(2, 1, 4, 16), "logits": torch.randn(2, 8, 10), "vocab_size": 58,
            "query_features": torch.randn(4, 3, 8), "logit_bias": torch.tensor(-10.0), "positions": torch.arange(8),
            "size": (16, 16), "target_size": (32, 32), "original_size": (32, 32), "max_tokens": 16, "crop_size": 32,
            "grid_pinpoints": [(32, 32), (32, 64)], "features": torch.randn(16, 4, 4), "grid_thw": torch.tensor([[1, 4, 4]])}


def fill(fn, skip, values):
    """kwargs for fn's required parameters other than `skip`, or None if one has no known valid value."""
    kwargs = {}
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.name in ("self", skip) or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.default is not parameter.empty:
            continue
        if parameter.name not in values:
            return None
        kwargs[parameter.name] = values[parameter.name]
    return kwargs


def fuzz_callable(entry, fn, record, skipped, sizes=True):
    """Each required tensor parameter (and each size parameter, with `sizes`) of fn, in turn, gets
    each of its mistakes; the others valid values. A model's generate needs real prompts for its
    sizes to be reached, so models get the tensor mistakes only."""
    parameters = [p for p in inspect.signature(fn).parameters.values() if p.kind != p.VAR_POSITIONAL and
                  ((p.name in TENSORS and p.default is p.empty) or (sizes and p.name in SIZES))]
    for parameter in parameters:
        kwargs = fill(fn, parameter.name, valid_arguments())
        if kwargs is None:
            skipped.append(f"{entry}({parameter.name})")
            continue
        mistakes = SIZE_MISTAKES if parameter.name in SIZES else tensor_mistakes(parameter.name)
        for label, bad in mistakes:
            record(entry, parameter.name, label, *call(fn, **{**kwargs, parameter.name: bad}))


def default_config(cls):
    """The config a module class takes: its __init__'s annotation, else the Config defined beside it."""
    annotation = inspect.signature(cls.__init__).parameters["config"].annotation
    if annotation is inspect.Parameter.empty:
        annotation = next((c for n, c in CONFIGS.items() if n.rsplit(".", 1)[0] == cls.__module__), None)
    if annotation is None:
        return None
    return annotation(vocab_size=58) if "vocab_size" in {f.name for f in dataclasses.fields(annotation)
                                                         if f.default is dataclasses.MISSING} else annotation()


def build(cls):
    """An instance of an nn.Module class from its defaults and the valid-argument table, or None."""
    values = {**valid_arguments(), "context_dim": 16, "hidden": 32, "hidden_dim": 32, "in_dim": 16, "out_dim": 16,
              "num_classes": 3, "mlp_hidden": 32, "eps": 1e-6, "depth": 1, "vision_dim": 16, "text_dim": 16,
              "has_cross_attention": True}
    if "config" in inspect.signature(cls.__init__).parameters:
        values["config"] = default_config(cls)
    kwargs = fill(cls.__init__, None, values)
    if kwargs is None:
        return None
    outcome, model = call(cls, **kwargs)
    return model if outcome == "ran" else None


def fuzz():
    results, skipped = [], []

    def record(entry, argument, label, outcome, value):
        results.append((entry, argument, label, classify(entry, argument, label, outcome, value),
                        f"{outcome}: {type(value).__name__}: {str(value)[:160]}" if outcome == "error" else outcome))

    torch.manual_seed(0)
    fuzz_configs(record)
    for name, fn in FUNCTIONS.items():
        fuzz_callable(name, fn, record, skipped)
    for name, cls in MODULES.items():
        model = build(cls)
        if model is None:
            skipped.append(f"{name}()")
            continue
        for method in ("forward", "generate"):
            if hasattr(model, method):
                fuzz_callable(f"{name}.{method}", getattr(model, method), record, skipped, sizes=False)
    return results, skipped


@pytest.fixture(scope="module")
def fuzzed():
    return fuzz()


def test_discovery_finds_the_public_api():
    for name in ("minivlm.models.llava.Llava", "minivlm.train.fit", "minivlm.patching.patchify",
                 "minivlm.lm.LMConfig", "minivlm.train.TrainConfig", "minivlm.data.world.WorldConfig"):
        assert name in API
    assert "minivlm.models.llava.LanguageModel" not in API          # imported there, defined in lm.py
    assert len(CONFIGS) >= 13 and len(FUNCTIONS) >= 200 and len(MODULES) >= 30


def test_every_mistake_gets_a_clear_error_or_a_documented_result(fuzzed):
    results, skipped = fuzzed
    counts = {kind: sum(r[3] == kind for r in results) for kind in ("clear", "documented", "other")}
    entries = {r[0] for r in results}
    print(f"\n{len(entries)} entry points, {len(results)} calls: {counts}; {len(skipped)} not callable from "
          f"the table of valid arguments")
    others = [r for r in results if r[3] == "other"]
    assert not others, "\n".join(f"{e}({a}={label}): {what}" for e, a, label, _, what in others)

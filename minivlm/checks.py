"""One-line argument checks for configs and public entry points.

Each raises a TypeError (wrong kind of value) or ValueError (right kind, wrong value)
whose message names the argument and what it must be, and returns the value:

    positive_ints(self, "dim", "depth", "heads")      # in a config's __post_init__
    number("lr", self.lr, above=0)                    # finite, > 0 (nan fails)
    tensor("images", images, dims=4, kind="float", shape="(B, C, H, W)")

They run once, at the door; the layers inside trust their inputs.
"""

import math
import numbers

import torch


def integer(name, value, low=None, high=None):
    """An int in [low, high] (None: unbounded). Not a bool, a float like 2.5, or a str like "10"."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if low is not None and high is not None else \
            f">= {low}" if low is not None else f"<= {high}"
        raise ValueError(f"{name} must be an int {bounds}, got {value!r}")
    return int(value)


def positive_ints(config, *names):
    """Every named field of `config` is an int >= 1."""
    for name in names:
        integer(name, getattr(config, name), low=1)


def booleans(config, *names):
    """Every named field of `config` is True or False (not "no", not 0)."""
    for name in names:
        if not isinstance(getattr(config, name), bool):
            raise TypeError(f"{name} must be True or False, got {getattr(config, name)!r}")


def number(name, value, low=None, high=None, above=None, below=None):
    """A finite real number (not nan, inf, a bool or a str); low/high inclusive, above/below exclusive."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    bounds = [f">= {low}" if low is not None else "", f"> {above}" if above is not None else "",
              f"<= {high}" if high is not None else "", f"< {below}" if below is not None else ""]
    if not math.isfinite(value) or (low is not None and value < low) or (above is not None and value <= above) \
            or (high is not None and value > high) or (below is not None and value >= below):
        raise ValueError(f"{name} must be a finite number {' and '.join(b for b in bounds if b)}".rstrip()
                         + f", got {value!r}")
    return value


def choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


KINDS = {"float": torch.Tensor.is_floating_point, "bool": lambda x: x.dtype == torch.bool,
         "int": lambda x: not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool}


def tensor(name, value, dims=None, kind=None, shape=""):
    """A torch.Tensor with `dims` dimensions (an int or a tuple of allowed ones) of `kind`
    ("float", "int" or "bool"); `shape` names the layout for the message, e.g. "(B, T)"."""
    shape = f" {shape}" if shape else ""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor{shape}, got {type(value).__name__}")
    allowed = (dims,) if isinstance(dims, int) else dims
    if allowed is not None and value.dim() not in allowed:
        raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions{shape}, "
                         f"got shape {tuple(value.shape)}")
    if kind is not None and not KINDS[kind](value):
        hint = " (uint8 pixels: divide by 255 first)" if kind == "float" and value.dtype == torch.uint8 else ""
        raise TypeError(f"{name} must be {'an' if kind == 'int' else 'a'} {kind} tensor{hint}, got {value.dtype}")
    return value

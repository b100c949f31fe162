"""minivlm: a from-scratch course on vision-language models, one short PyTorch file per concept."""

__version__ = "0.1.0"

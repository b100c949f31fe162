"""A word-level tokenizer for the Shapes world: text <-> token ids, and padded batches (B, L).

The vocabulary is closed and small: the special tokens (ids 0..7, `<pad>` = 0), then every
word the Shapes grammar can produce (`world_vocabulary()`). Text is lowercased, split on
whitespace, and "?" "." "," become tokens of their own; `<image>`-style special tokens stay whole.

    encode("How many shapes?")  -> [ids...]                         list[int]
    batch_encode(texts)          -> input_ids (B, L) long, attention_mask (B, L) bool
"""

import json
import re

import torch

from .text import world_vocabulary

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<image>", "<video>", "<user>", "<assistant>", "<system>")
TOKEN_PATTERN = re.compile(r"<[^<>\s]+>|[?.,]|[^\s?.,<]+|<")


class Tokenizer:

    def __init__(self, words=None):
        if isinstance(words, (str, bytes)):
            raise TypeError(f"words must be a list of words, got the string {words!r} (try [{words!r}])")
        words = world_vocabulary() if words is None else list(words)
        if not all(isinstance(w, str) and w and not any(c.isspace() for c in w) for w in words):
            raise ValueError("words must be non-empty strings without whitespace")
        # specials first (fixed ids), then the words in the order given, without duplicates
        self.vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *(w.lower() for w in words)]))
        self.token_to_id = {token: i for i, token in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id, self.image_id, self.video_id, \
            self.user_id, self.assistant_id, self.system_id = range(len(SPECIAL_TOKENS))

    def __len__(self):
        return len(self.vocab)

    @property
    def vocab_size(self):
        return len(self.vocab)

    def tokenize(self, text):
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        return TOKEN_PATTERN.findall(text.lower())

    def encode(self, text, *, add_bos=False, add_eos=False):
        ids = [self.bos_id] if add_bos else []
        for token in self.tokenize(text):
            if token not in self.token_to_id:
                raise ValueError(f"unknown word {token!r} in text {text!r}: not in the Shapes vocabulary")
            ids.append(self.token_to_id[token])
        return ids + [self.eos_id] if add_eos else ids

    def decode(self, ids, *, skip_special=True):
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"ids must be a 1-D tensor or a list, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        tokens = []
        for i in ids:
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"token id {i} out of range for a vocabulary of {len(self.vocab)}")
            if not (skip_special and i < len(SPECIAL_TOKENS)):
                tokens.append(self.vocab[i])
        return " ".join(tokens)

    def batch_encode(self, texts, *, add_bos=False, add_eos=False, padding_side="right", max_length=None):
        """Encode and pad to the longest text (cut to `max_length` tokens, keeping the start).

        Returns input_ids (B, L) long, padded with pad_id, and attention_mask (B, L) bool, True on real tokens.
        """
        if isinstance(texts, str) or not texts:
            raise ValueError("texts must be a non-empty list of strings")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
        encoded = [self.encode(t, add_bos=add_bos, add_eos=add_eos)[:max_length] for t in texts]
        length = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(texts), length), dtype=torch.bool)
        for row, ids in enumerate(encoded):
            start = 0 if padding_side == "right" else length - len(ids)
            input_ids[row, start:start + len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, start:start + len(ids)] = True
        return input_ids, attention_mask

    def save(self, path):
        with open(path, "w") as f:
            json.dump({"vocab": self.vocab}, f, indent=1)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            vocab = json.load(f)["vocab"]
        if tuple(vocab[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"{path}: vocab must start with the special tokens {SPECIAL_TOKENS}")
        return cls(vocab[len(SPECIAL_TOKENS):])

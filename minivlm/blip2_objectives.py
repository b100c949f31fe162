"""BLIP-2's stage-1 objectives on the Q-Former's outputs (Li et al. 2023, arXiv 2301.12597, §3.2).

The Q-Former gives each image Q query outputs and each caption one text output (its first
token); both are projected to a shared width E and L2-normalised.

ITC, image-text contrastive: image i and text j are as similar as their *best-matching
query*, s_ij = max_q cos(z_iq, t_j); the loss is CLIP's symmetric cross-entropy over
logit_scale · s (B, B), with the pairs on the diagonal. With one query it is CLIP's loss.

ITM, image-text matching: a binary "is this a pair?" classifier on the bidirectional (itm
mask) pass. Its negatives are *hard*: for each image a text, and for each text an image,
drawn from the other pairs of the batch with probability ∝ softmax of the ITC logits, so
the most confusable ones are seen most often.
"""

import torch
import torch.nn.functional as F

from .contrastive import symmetric_cross_entropy


def itc_logits(query_features, text_features, logit_scale):
    """(B, Q, E) queries of each image, (B, E) texts -> (B, B): logit_scale · max over queries of the cosine."""
    if query_features.dim() != 3 or text_features.dim() != 2 or query_features.shape[-1] != text_features.shape[-1]:
        raise ValueError(f"query_features must be (B, Q, E) and text_features (B, E) of the same E, got "
                         f"{tuple(query_features.shape)} and {tuple(text_features.shape)}")
    queries = F.normalize(query_features, dim=-1)
    texts = F.normalize(text_features, dim=-1)
    per_query = torch.einsum("iqe,je->ijq", queries, texts)     # (B_images, B_texts, Q) cosines
    return logit_scale * per_query.amax(dim=-1)


def itc_loss(query_features, text_features, logit_scale):
    """BLIP-2's ITC: CLIP's symmetric cross-entropy over the max-over-queries logits; a scalar."""
    return symmetric_cross_entropy(itc_logits(query_features, text_features, logit_scale))


@torch.no_grad()
def hard_negatives(logits, generator=None):
    """(B, B) ITC logits -> (text for each image (B,), image for each text (B,)), never the true pair.

    Each negative is drawn with probability ∝ softmax over the row (for an image) or the column
    (for a text), the true pair left out.
    """
    B = logits.shape[0]
    if logits.dim() != 2 or logits.shape[1] != B or B < 2:
        raise ValueError(f"logits must be (B, B) with B >= 2 (a pair needs another pair as its negative), "
                         f"got {tuple(logits.shape)}")
    own_pair = torch.eye(B, dtype=torch.bool, device=logits.device)
    text_weights = logits.float().softmax(dim=1).masked_fill(own_pair, 0.0)      # image i -> texts
    image_weights = logits.float().softmax(dim=0).T.masked_fill(own_pair, 0.0)   # text j -> images
    negative_text = torch.multinomial(text_weights, 1, generator=generator).squeeze(1)
    negative_image = torch.multinomial(image_weights, 1, generator=generator).squeeze(1)
    return negative_text, negative_image

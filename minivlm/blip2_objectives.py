"""BLIP-2's stage-1 objectives on the Q-Former's outputs (Li et al. 2023, arXiv 2301.12597, §3.2).

The Q-Former gives each image Q query outputs and each caption one text output (its first
token); both are projected to a shared width E and L2-normalised.

ITC, image-text contrastive: image i and text j are as similar as their *best-matching
query*, s_ij = max_q cos(z_iq, t_j); the loss is CLIP's symmetric cross-entropy over
logit_scale · s (B, B), with the pairs on the diagonal. With one query it is CLIP's loss.

ITM, image-text matching: a binary "is this a pair?" classifier on the bidirectional (itm
mask) pass. Its negatives are *hard*: for each image a text, and for each text an image,
drawn from the other pairs of the batch with probability ∝ softmax of the ITC logits, so
the most confusable ones are seen most often; pairs that match as well (the same caption)
are never drawn.
"""

import torch
import torch.nn.functional as F

from .checks import tensor
from .contrastive import symmetric_cross_entropy


def itc_logits(query_features, text_features, logit_scale):
    """(B, Q, E) queries of each image, (B, E) texts -> (B, B): logit_scale · max over queries of the cosine."""
    tensor("query_features", query_features, kind="float", shape="(B, Q, E)")
    tensor("text_features", text_features, kind="float", shape="(B, E)")
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
def hard_negatives(logits, generator=None, same=None):
    """(B, B) ITC logits -> (text for each image (B,), image for each text (B,)), never the true pair.

    Each negative is drawn with probability ∝ softmax over the row (for an image) or the column
    (for a text), the true pair left out. `same` (B, B) bool marks other pairs that match too
    (in Shapes, two scenes with the same caption): they are left out as well, as BLIP-2's code
    leaves out pairs of the same image id, for a "negative" that matches teaches ITM the wrong
    answer. A row with nothing else left falls back to every other pair.
    """
    tensor("logits", logits, dims=2, kind="float", shape="(B, B)")
    B = logits.shape[0]
    if logits.dim() != 2 or logits.shape[1] != B or B < 2:
        raise ValueError(f"logits must be (B, B) with B >= 2 (a pair needs another pair as its negative), "
                         f"got {tuple(logits.shape)}")
    if same is not None and (same.shape != (B, B) or same.dtype != torch.bool):
        raise ValueError(f"same must be a ({B}, {B}) bool tensor, got {tuple(same.shape)} of {same.dtype}")
    own_pair = torch.eye(B, dtype=torch.bool, device=logits.device)
    excluded = own_pair if same is None else own_pair | same

    def draw(weights):                                   # (B, B) softmax rows -> one column per row
        kept = weights.masked_fill(excluded, 0.0)
        kept = torch.where(kept.sum(1, keepdim=True) > 0, kept, weights.masked_fill(own_pair, 0.0))
        return torch.multinomial(kept, 1, generator=generator).squeeze(1)

    negative_text = draw(logits.float().softmax(dim=1))          # image i -> texts
    negative_image = draw(logits.float().softmax(dim=0).T)       # text j -> images
    return negative_text, negative_image

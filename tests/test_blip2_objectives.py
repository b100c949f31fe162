"""minivlm.blip2_objectives: ITC takes the best query and is CLIP's loss with one query; hard negatives."""

import pytest
import torch

from minivlm import contrastive
from minivlm.blip2_objectives import hard_negatives, itc_logits, itc_loss


def test_itc_with_one_query_is_clip():
    torch.manual_seed(0)
    images, texts = torch.randn(5, 1, 8), torch.randn(5, 8)
    assert torch.allclose(itc_logits(images, texts, 10.0), contrastive.similarity_logits(images[:, 0], texts, 10.0))
    assert torch.allclose(itc_loss(images, texts, 10.0), contrastive.clip_loss(images[:, 0], texts, 10.0))


def test_itc_takes_the_best_query():
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    queries = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]],      # image 0: one query on text 0, one away from it
                            [[0.0, -1.0], [1.0, 1.0]]])     # image 1: the second query is 45° from both
    expected = torch.tensor([[1.0, 0.0], [2 ** -0.5, 2 ** -0.5]])
    assert torch.allclose(itc_logits(queries, texts, 1.0), expected)


def test_itc_is_symmetric():
    torch.manual_seed(1)
    queries, texts = torch.randn(4, 3, 6), torch.randn(4, 6)
    logits = itc_logits(queries, texts, 5.0)
    assert torch.allclose(contrastive.symmetric_cross_entropy(logits), contrastive.symmetric_cross_entropy(logits.T))
    with pytest.raises(ValueError, match="query_features"):
        itc_logits(torch.randn(4, 6), texts, 5.0)


def test_hard_negatives_follow_the_softmax_and_skip_the_pair():
    logits = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    generator = torch.Generator().manual_seed(0)
    texts = torch.stack([hard_negatives(logits, generator)[0] for _ in range(4000)])     # (4000, 3)
    images = torch.stack([hard_negatives(logits, generator)[1] for _ in range(4000)])
    assert not (texts == torch.arange(3)).any() and not (images == torch.arange(3)).any()
    e = torch.e
    # image 0 picks text 1 with probability e^2 / (e^2 + 1); text 0 picks image 2 with e / (e + 1)
    assert abs((texts[:, 0] == 1).double().mean().item() - e ** 2 / (e ** 2 + 1)) < 0.03
    assert abs((images[:, 0] == 2).double().mean().item() - e / (e + 1)) < 0.03
    with pytest.raises(ValueError, match="B >= 2"):
        hard_negatives(torch.zeros(1, 1))


def test_hard_negatives_never_draw_a_pair_marked_same():
    logits = torch.tensor([[0.0, 5.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    same = torch.zeros(4, 4, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True                        # scenes 0 and 1 have the same caption
    generator = torch.Generator().manual_seed(0)
    draws = [hard_negatives(logits, generator, same) for _ in range(500)]
    texts, images = torch.stack([d[0] for d in draws]), torch.stack([d[1] for d in draws])
    assert not ((texts[:, :2] == 1 - torch.arange(2)) | (images[:, :2] == 1 - torch.arange(2))).any()
    assert set(texts[:, 0].tolist()) == {2, 3}            # the confusable "negative" is the same caption: skipped
    everything_same = torch.ones(2, 2, dtype=torch.bool)  # nothing else left: fall back to the other pair
    assert hard_negatives(torch.zeros(2, 2), generator, everything_same)[0].tolist() == [1, 0]
    with pytest.raises(ValueError, match="same must be a \\(4, 4\\) bool"):
        hard_negatives(logits, generator, same.long())

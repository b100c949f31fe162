"""Architecture figures drawn from a config: the config's numbers are in them, change with it, and stay readable."""

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from minivlm.figures import decoder_figure, llava_figure, vit_figure  # noqa: E402
from minivlm.lm import LMConfig  # noqa: E402
from minivlm.models.llava import LlavaConfig  # noqa: E402
from minivlm.vit import ViTConfig  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(figure):
    return [t.get_text() for t in figure.findobj(Text) if t.get_text().strip()]


def joined(figure):
    return "\n".join(texts(figure))


def assert_readable(figure):
    """No two texts overlap, and every text lies inside the figure."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in figure.findobj(Text) if t.get_text().strip()]
    for text, box in boxes:
        assert 0 <= box.x0 and box.x1 <= figure.bbox.width and 0 <= box.y0 and box.y1 <= figure.bbox.height, text
    for (first, a), (second, b) in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (first, second)


def test_vit_figure_writes_the_configs_numbers():
    config = ViTConfig(image_size=32, patch_size=4, dim=64, depth=2, heads=4, positions="learned", pool="cls")
    text = joined(vit_figure(config))
    for part in ("32 × 32 px", "8 × 8 grid of 4 × 4 px", "N = 64 patches", "3·4·4 = 48 values", "Linear 48 → 64",
                 "learned positions", "(64 × 64 table)", "prepend [CLS]: (B, 65, 64)", "2 × pre-norm",
                 "4 heads × 16 dims", "Linear 64 → 256", "Linear 256 → 64", "LayerNorm\n(64)", "the [CLS] token",
                 "pooled (B, 64)", "tokens (B, 64, 64)"):
        assert part in text, part


def test_vit_figure_changes_with_the_config():
    small = ViTConfig(image_size=32, patch_size=4, dim=64, depth=2, heads=4, positions="learned", pool="cls")
    other = ViTConfig(image_size=64, patch_size=8, dim=96, depth=6, heads=6, mlp_ratio=2.0, positions="rope2d")
    text = joined(vit_figure(other))
    for part in ("64 × 64 px", "8 × 8 grid of 8 × 8 px", "3·8·8 = 192 values", "Linear 192 → 96", "6 × pre-norm",
                 "6 heads × 16 dims", "Linear 96 → 192", "2D RoPE", "mean of 64 tokens", "pooled (B, 96)"):
        assert part in text, part
    assert "[CLS]" not in text and "learned" not in text
    assert texts(vit_figure(small)) != texts(vit_figure(other))
    assert "fixed 2D sin/cos" in joined(vit_figure(ViTConfig(positions="sincos")))
    assert "no positions" in joined(vit_figure(ViTConfig(positions="none")))


def test_decoder_figure_writes_the_configs_numbers_and_the_kv_cache():
    config = LMConfig(vocab_size=58, dim=64, depth=2, heads=4, max_seq_len=320)
    text = joined(decoder_figure(config))
    for part in ("token ids", "58 × 64 table", "2 × decoder", "RMSNorm\n(64)", "causal self-attention",
                 "4 heads × 16 dims", "RoPE turns q, k", f"{config.mlp_hidden}", "silu(w1 x) ⊙ w3 x",
                 "lm_head, tied", "logits\n(B, L, 58)", "(B, 4, S, 16)", "(B, 4, 1, 16)", "S → S + 1",
                 "max_seq_len = 320", "2 × 2 layers × B × S × 64"):
        assert part in text, part


def test_decoder_figure_changes_with_the_config():
    tied = LMConfig(vocab_size=58, dim=64, depth=2, heads=4)
    untied = LMConfig(vocab_size=100, dim=96, depth=3, heads=6, mlp_hidden=200, tie_embeddings=False, rope="mrope")
    text = joined(decoder_figure(untied))
    for part in ("100 × 96 table", "3 × decoder", "6 heads × 16 dims", "96 → 200", "200 → 96", "Linear 96 → 100",
                 "its own weights", "M-RoPE", "/".join(map(str, untied.mrope_section)), "(B, 6, S, 16)"):
        assert part in text, part
    assert "tied" not in text
    assert texts(decoder_figure(tied)) != texts(decoder_figure(untied))


def test_llava_figure_shows_the_splice_and_the_loss():
    config = LlavaConfig()                      # 32 px, 8 px patches: a 4 x 4 grid, 2 x 2 unshuffle: 4 tokens
    text = joined(llava_figure(config))
    for part in ("32 × 32 px", "4 × 4 grid of 8 px patches", "16 tokens of width 64", "pixel unshuffle",
                 "each 2 × 2 window → 1 token", "(4/2)² = 4 tokens of 64·2² = 256", "MLP → 128",
                 "T = 4 visual tokens", "(B, 4, 128)", "L = 12 tokens", "= 12 − 1 + 4 = 15", "<image>",
                 "label −100", "loss", f"{config.text_depth} decoder blocks, width 128", "(B, 15, 58)"):
        assert part in text, part
    shown = texts(llava_figure(config))
    assert [t for t in shown if t.startswith("v") and t[1:].isdigit()] == ["v1", "v2", "v3", "v4"]
    assert shown.count("<image>") == 1 and shown.count("two") == 2   # the prompt and the LM input


def test_llava_figure_changes_with_the_config():
    config = LlavaConfig(image_size=64, patch_size=8, projector="mlp", text_dim=96, text_depth=3, prefix="causal")
    text = joined(llava_figure(config))
    for part in ("64 × 64 px", "8 × 8 grid", "64 tokens of width 64", "projector: MLP", "Linear 64 → 96",
                 "T = 64 visual tokens", "= 12 − 1 + 64 = 75", "3 decoder blocks, width 96", "causal everywhere"):
        assert part in text, part
    assert "v64" in texts(llava_figure(config)) and "v5" not in texts(llava_figure(config))   # a long run is cut
    assert "Linear 64 → 96" in joined(llava_figure(LlavaConfig(projector="linear", text_dim=96)))
    assert texts(llava_figure(LlavaConfig())) != texts(llava_figure(config))


@pytest.mark.parametrize("figure", [
    lambda: vit_figure(ViTConfig(positions="rope2d", pool="cls")),
    lambda: vit_figure(ViTConfig(image_size=224, patch_size=16, dim=768, depth=12, heads=12, positions="sincos")),
    lambda: decoder_figure(LMConfig(vocab_size=32000, dim=4096, depth=32, heads=32, max_seq_len=4096,
                                    tie_embeddings=False)),
    lambda: decoder_figure(LMConfig(vocab_size=58, dim=96, depth=3, heads=4, rope="mrope")),
    lambda: llava_figure(LlavaConfig()),
    lambda: llava_figure(LlavaConfig(image_size=64, patch_size=4, unshuffle_factor=4, vision_dim=768, text_dim=4096,
                                     vocab_size=32000)),
])
def test_architecture_figures_have_no_overlapping_text(figure):
    assert_readable(figure())

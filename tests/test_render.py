"""Rendering: image shapes and ranges, each object's colour at its centre, geometry of each shape, CUDA = CPU."""

import pytest
import torch

from minivlm.data import BACKGROUND, COLORS, WorldConfig, render, sample_scenes, scenes_from_objects


def scenes(n=64, seed=0, split=None, **config):
    return sample_scenes(n, WorldConfig(**config), generator=torch.Generator().manual_seed(seed), split=split)


def pixel(image, x, y):
    """Colour of the pixel at image coordinates (x, y) in [0, 1]."""
    H, W = image.shape[-2:]
    return image[:, int(y * H), int(x * W)]


def test_bad_image_size():
    with pytest.raises(ValueError, match="image_size"):
        render(scenes(2), 0)


@pytest.mark.parametrize("size", [24, 32, 48, 64, 224])
def test_render_shapes_and_colours(size):
    batch = scenes(8 if size == 224 else 64, max_objects=4)
    images = render(batch, size)
    assert images.shape == (len(batch), 3, size, size) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    background = torch.tensor(BACKGROUND)
    for i in range(len(batch)):
        for o in batch.objects(i):
            assert torch.allclose(pixel(images[i], o["x"], o["y"]), torch.tensor(COLORS[o["color"]]))
        assert torch.allclose(images[i, :, 0, 0], background)  # corners are never covered
    assert torch.equal(render(batch[3], size)[0], images[3])


def test_render_geometry():
    one = lambda shape, size="large": [{"shape": shape, "color": "red", "size": size, "cell": 0}]
    batch = scenes_from_objects([one("circle"), one("square"), one("triangle"), one("square", "small")])
    area = (render(batch, 64) != torch.tensor(BACKGROUND)[:, None, None]).any(1).sum((1, 2)).float()
    r = 0.4 * 32  # large half-width in pixels: 0.4 of a 32-pixel cell
    expected = torch.tensor([3.14159 * r**2, 4 * r**2, 2 * r**2, 4 * (0.25 * 32) ** 2])
    assert torch.allclose(area, expected, rtol=0.1)
    triangle = (render(batch[2], 64)[0] != torch.tensor(BACKGROUND)[:, None, None]).any(0)
    assert triangle[16:32].sum() > 2 * triangle[0:16].sum()  # points up: wider at the bottom


def test_render_on_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    batch = scenes(32, max_objects=4)
    assert torch.allclose(render(batch, 32, device="cuda").cpu(), render(batch, 32))
    scenes_gpu = sample_scenes(16, generator=torch.Generator("cuda").manual_seed(0), device="cuda", split="val")
    assert render(scenes_gpu, 32).device.type == "cuda"

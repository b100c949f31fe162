"""Plotting helpers: image grids with titles and colours, training curves, attention overlays, patch grids, answer figures."""

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import same_color  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from minivlm.viz import answer_figure, draw_patch_grid, overlay_attention, plot_history, show_images  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def images(count, size=16):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(0))


def image_axes(figure):
    return [axis for axis in figure.axes if axis.get_images()]


def test_show_images_draws_one_titled_axis_per_image():
    titles, colors = [f"image {k}" for k in range(5)], ["red", "green", "blue", "black", "tab:orange"]
    figure = show_images(images(5), titles, ncols=3, colors=colors)
    assert len(figure.axes) == 6 and len(image_axes(figure)) == 5  # a 2 x 3 grid, the last cell left empty
    assert not any(axis.axison for axis in figure.axes)
    for axis, title, color in zip(image_axes(figure), titles, colors):
        assert axis.get_title() == title and same_color(axis.title.get_color(), color)
        assert axis.get_images()[0].get_array().shape == (16, 16, 3)


def test_show_images_defaults():
    figure = show_images(images(3))
    assert len(figure.axes) == 3 and len(image_axes(figure)) == 3  # fewer images than ncols: one row
    assert all(axis.get_title() == "" for axis in figure.axes)
    titled = show_images(images(2), ["a", "b"])
    assert all(same_color(axis.title.get_color(), "black") for axis in titled.axes)


def test_plot_history_draws_the_loss_and_its_moving_average():
    history = {"step": list(range(30)), "loss": [2.0 / (1 + step) for step in range(30)]}
    figure = plot_history(history)
    assert len(figure.axes) == 1
    axis = figure.axes[0]
    raw, average = axis.get_lines()
    assert list(raw.get_xdata()) == history["step"] and list(raw.get_ydata()) == pytest.approx(history["loss"])
    assert len(average.get_xdata()) == 30 - 10 + 1
    assert axis.get_yscale() == "log" and axis.get_ylabel() == "loss"
    short = plot_history({"step": [0, 1, 2], "loss": [3.0, 2.0, 1.0]})
    assert len(short.axes[0].get_lines()) == 1  # too short to smooth: no moving average


def test_plot_history_puts_an_eval_metric_on_a_second_axis():
    history = {"step": list(range(20)), "loss": [1.0] * 20,
               "eval": [{"step": 0, "accuracy": 0.2}, {"step": 10, "accuracy": 0.6}, {"step": 19, "loss": 0.9}]}
    figure = plot_history(history, metric="accuracy")
    assert len(figure.axes) == 2
    second = figure.axes[1]
    (line,) = second.get_lines()
    assert list(line.get_xdata()) == [0, 10] and list(line.get_ydata()) == [0.2, 0.6]
    assert second.get_ylabel() == "accuracy"
    assert len(plot_history(history).axes) == 1  # no metric asked for
    assert len(plot_history(history, metric="recall").axes) == 1  # a metric no eval has


@pytest.mark.parametrize("height, width, patch_size, lines", [(32, 32, 8, 6), (16, 32, 8, 4), (32, 32, 32, 0)])
def test_draw_patch_grid_draws_a_line_between_patches(height, width, patch_size, lines):
    axis = draw_patch_grid(torch.rand(3, height, width), patch_size)
    assert len(axis.get_lines()) == lines and len(axis.get_images()) == 1
    _, given = plt.subplots()
    assert draw_patch_grid(torch.rand(3, height, width), patch_size, axis=given) is given


def test_answer_figure_colours_right_answers_green_and_wrong_ones_red():
    questions = ["how many shapes are there ?", "what color is the circle ?", "is there a red square ?"]
    figure = answer_figure(images(3), questions, ["two", "blue", "yes"], truths=["two", "red", "yes"])
    titles = [axis.title for axis in image_axes(figure)]
    assert [same_color(t.get_color(), "tab:green") for t in titles] == [True, False, True]
    assert same_color(titles[1].get_color(), "tab:red")
    assert titles[1].get_text().endswith("→ blue (true: red)")
    assert "(true:" not in titles[0].get_text() and titles[0].get_text().endswith("→ two")
    assert "how many shapes are there?" in titles[0].get_text()


def test_answer_figure_without_truths_is_black():
    figure = answer_figure(images(2), ["is there a red square ?"] * 2, ["yes", "no"])
    assert all(same_color(axis.title.get_color(), "black") for axis in image_axes(figure))
    assert not any("(true:" in axis.get_title() for axis in figure.axes)


def test_overlay_attention_tints_the_most_attended_patch_most():
    figure, axis = plt.subplots()
    weights = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    overlay_attention(axis, torch.rand(3, 8, 8), weights)
    picture, tint = axis.get_images()
    assert picture.get_array().shape == (8, 8, 3)
    alpha = tint.get_array()[..., 3]
    assert alpha.shape == (2, 2) and alpha[1, 1] == pytest.approx(0.8) and alpha[0, 0] == pytest.approx(0.0)
    assert tint.get_extent() == [-0.5, 7.5, 7.5, -0.5]          # one tint cell per 4 x 4 patch
    plt.close(figure)

"""Native multimodal vs staged training: the four scenarios' rows, their batches, the schedules, a tiny run."""

import json

import pytest
import torch

from minivlm import native_multimodal as nm

TINY = nm.TINY


def test_each_scenario_is_a_chat_row_with_its_media_expanded_and_scored_on_the_answer_only():
    rows = nm.examples(TINY, "train")
    assert set(rows) == set(nm.SCENARIOS) and all(len(v) > 0 for v in rows.values())
    config = nm.model_config()
    for scenario, expected_images in (("text", 0), ("image", 1), ("multi_image", 2)):
        row = rows[scenario][0]
        assert (0 if row.grid is None else len(row.grid)) == expected_images
        assert int((row.ids == config.image_token_id).sum()) == 4 * expected_images     # 32 px: 2x2 merged tokens
    video = rows["video"][0]
    assert video.video_grid.tolist() == [[4, 4, 4]] and int((video.ids == config.video_token_id).sum()) == 16
    for row in (r[0] for r in rows.values()):
        scored = row.labels != -100
        assert row.labels[scored][-1] == nm.TOKENIZER.eos_id
        assert int((row.ids == nm.TOKENIZER.assistant_id).nonzero()[0, 0]) == int(scored.nonzero()[0, 0]) - 1
        assert row.positions.shape == (3, len(row.ids))


def test_a_batch_is_each_row_alone():
    rows = nm.examples(TINY, "train")
    mixed = [rows["video"][0], rows["text"][1], rows["multi_image"][0], rows["image"][2]]
    torch.manual_seed(0)
    model = nm.Qwen2VL(nm.model_config()).eval()
    with torch.no_grad():
        together = model(**nm.collate(mixed)).logits
        for b, row in enumerate(mixed):
            alone = model(**nm.collate([row])).logits[0]
            torch.testing.assert_close(together[b, :len(row.ids)], alone, atol=1e-5, rtol=1e-5)


def test_schedules_share_the_budget_and_the_staged_one_starts_with_text():
    counts = nm.rows_per_scenario(nm.INTERNVL3_MIX, 32)
    assert sum(counts.values()) == 32 and counts == {"text": 13, "image": 11, "multi_image": 3, "video": 5}
    settings = dict(TINY, steps=10, rows_per_step=32, text_first=0.4)
    mixed, staged = nm.schedule("mixed", settings), nm.schedule("staged", settings)
    assert len(mixed) == len(staged) == 10 and all(sum(s.values()) == 32 for s in mixed + staged)
    assert all(s == {"text": 32, "image": 0, "multi_image": 0, "video": 0} for s in staged[:4])
    assert all(s["text"] == 0 for s in staged[4:]) and staged[4] == nm.rows_per_scenario(
        {"image": 0.35, "video": 0.15, "multi_image": 0.10}, 32)


def test_a_tiny_run_here_and_in_workers(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = nm.run_recipes((0,), settings=TINY, workers=0)
    finally:
        torch.set_num_threads(threads)
    assert [r["recipe"] for r in here] == ["mixed", "staged"] and len(here[0]["loss"]) == 3
    assert all(0 <= a <= 100 for r in here for a in r["accuracy"].values())
    assert nm.run_recipes((0,), settings=TINY, workers=2) == here
    rows = nm.summarize(here)
    assert [r["recipe"] for r in rows] == ["mixed", "staged"]
    assert rows[0]["mean"][0] == pytest.approx(sum(here[0]["accuracy"].values()) / 4)
    table = nm.format_table(rows, nm.majority_baseline(TINY))
    assert table.splitlines()[1].startswith("majority") and "staged" in table
    paths = nm.write_results(here, str(tmp_path), TINY)
    with open(paths["json"]) as f:
        stored = json.load(f)
    assert len(stored["runs"]) == 2 and stored["settings"]["steps"] == TINY["steps"]
    with open(paths["csv"]) as f:
        assert [line.split(",")[0] for line in f.read().splitlines()] == ["recipe", "majority", "mixed", "staged"]


def test_the_majority_baseline_is_the_share_of_the_commonest_answer():
    base = nm.majority_baseline(TINY)
    assert set(base) == set(nm.SCENARIOS) and all(0 <= v <= 100 for v in base.values())
    multi = [nm.TOKENIZER.decode(r.ids[r.labels != -100][:-1]) for r in nm.examples(dict(TINY, train_examples=400),
                                                                                   "train")["multi_image"]]
    assert max(multi.count(a) for a in set(multi)) / len(multi) < 0.6      # not "zero" / "no" to most


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="recipe must be one of"):
        nm.run_recipes((0,), recipes=("mixed", "curriculum"), settings=TINY, workers=0)
    with pytest.raises(ValueError, match="mix must give non-negative shares"):
        nm.run_recipes((0,), settings=dict(TINY, mix={"text": 1.0, "audio": 0.5}), workers=0)
    with pytest.raises(ValueError, match="text_first must be a share"):
        nm.run_recipes((0,), settings=dict(TINY, text_first=1.0), workers=0)
    with pytest.raises(ValueError, match="seeds must be"):
        nm.run_recipes((), settings=TINY, workers=0)

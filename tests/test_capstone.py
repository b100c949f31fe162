"""The capstone: every connector builds, counts its visual tokens as the table says, trains one step with ViT and
LM frozen; the tiny scale runs end to end, here, in workers and from the command line; bad input is named."""

import csv
import json
import os

import pytest
import torch

from minivlm import capstone as cs
from minivlm.cli import main
from minivlm.evaluate import encode_vqa
from minivlm.train import TrainConfig, fit

TINY = cs.SCALES["tiny"]


@pytest.mark.parametrize("connector", cs.CONNECTORS)
def test_each_connector_has_the_tables_visual_tokens_and_trains_only_itself(connector, lm_cache):
    torch.manual_seed(0)
    model = cs.build(connector, TINY)
    images, batch, _, pairs = cs.data(TINY)
    rows = encode_vqa(cs.TOKENIZER, [(0, pairs[0][1]), (1, pairs[1][1])])
    out = model(images[:2], rows["input_ids"], rows["attention_mask"], rows["labels"], torch.tensor([0, 1]))
    text_length = rows["input_ids"].shape[1]
    in_sequence = out.logits.shape[1] - text_length + (0 if connector == "xattn" else 1)   # <image> -> its tokens
    assert in_sequence == cs.visual_tokens(connector, TINY)
    assert cs.visual_tokens(connector, cs.SCALES["cpu"]) == {"linear": 16, "mlp": 16, "unshuffle": 4, "qformer": 4,
                                                             "perceiver": 4, "xattn": 0}[connector]

    inner = model.model if isinstance(model, cs.OneImagePerRow) else model
    before = {k: v.clone() for k, v in inner.state_dict().items()}
    get = cs.image_row_batches(batch, 2, seed=0)
    fit(model, lambda step: get(step, images), lambda m, b: m(*b, validate=False).loss,
        TrainConfig(steps=1, lr=1e-2, warmup_steps=1, device="cpu", progress=False))
    after = inner.state_dict()
    frozen = [k for k in before if k.startswith(("vision.", "lm."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in frozen)
    assert cs.trainable_parameters(model) == sum(v.numel() for k, v in inner.named_parameters() if k not in frozen
                                                 and v.requires_grad)


def test_the_tiny_capstone_runs_end_to_end_here_and_in_workers(lm_cache, tmp_path):
    jobs = dict(seeds=(0, 1), connectors=("unshuffle", "xattn"), settings=TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                      # as each worker runs
    try:
        here = cs.run_connectors(**jobs, workers=0)
    finally:
        torch.set_num_threads(threads)
    there = cs.run_connectors(**jobs, workers=2)
    strip = lambda results: [{k: v for k, v in r.items() if k != "ms_per_step"} for r in results]
    assert strip(here) == strip(there)
    frozen = {seed: {r["frozen"] for r in here if r["seed"] == seed} for seed in (0, 1)}
    assert all(len(f) == 1 for f in frozen.values()) and frozen[0] != frozen[1]    # a ViT and LM per seed
    assert [(r["connector"], r["seed"]) for r in here] == [("unshuffle", 0), ("xattn", 0), ("unshuffle", 1), ("xattn", 1)]
    rows = cs.summarize(here)
    assert [r["connector"] for r in rows] == ["unshuffle", "xattn"] and rows[0]["seeds"] == [0, 1]
    assert "unshuffle" in cs.format_table(rows) and "InternVL-1.5" in cs.format_table(rows)
    paths = cs.write_results(here, str(tmp_path / "out"))
    assert all(os.path.getsize(p) > 0 for p in paths.values())
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [r["connector"] for r in table] == ["unshuffle", "xattn"] and table[1]["tokens"] == "0"
    with open(paths["json"]) as f:
        assert len(json.load(f)["runs"]) == 4


def test_the_command_line_writes_the_table_and_names_bad_arguments(lm_cache, tmp_path, capsys):
    out = tmp_path / "cap"
    assert main(["capstone", "--scale", "tiny", "--workers", "0", "--seeds", "0", "--connectors", "linear",
                 "qformer", "--out", str(out), "--quiet", "--mixed", "--mixed-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "qformer" in printed and "BLIP-2" in printed and "wrote" in printed and "majority" in printed
    assert sorted(os.listdir(out)) == ["capstone.csv", "capstone.json", "capstone.png", "mixed.csv", "mixed.json"]
    with open(out / "mixed.json") as f:
        assert json.load(f)["settings"]["steps"] == 2
    (tmp_path / "a_file").write_text("")
    for argv, message in ((["--steps", "0"], "--steps must be >= 1"), (["--workers", "-1"], "--workers must be >= 0"),
                          (["--connectors", "lstm"], "--connectors must be among"),
                          (["--seeds", "1", "1"], "--seeds must be distinct"),
                          (["--mixed-steps", "5"], "goes with --mixed"), (["--mixed", "--mixed-steps", "0"], ">= 1"),
                          (["--out", str(tmp_path / "a_file")], "is a file"),
                          *([(["--scale", "gpu"], "there is none here")] if not torch.cuda.is_available() else [])):
        with pytest.raises(SystemExit) as stop:
            main(["capstone", "--scale", "tiny", "--workers", "0", "--out", str(tmp_path / "never"), *argv])
        assert message in str(stop.value) and str(stop.value).count("\n") == 0
    assert not (tmp_path / "never").exists()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="connector must be one of"):
        cs.build("lstm", TINY)
    with pytest.raises(ValueError, match="connectors must be a non-empty subset"):
        cs.run_connectors((0,), ("linear", "lstm"), TINY, workers=0)
    with pytest.raises(ValueError, match="seeds must be a non-empty sequence of ints"):
        cs.run_connectors((), settings=TINY, workers=0)
    with pytest.raises(ValueError, match=r"settings lacks \['steps'\]"):
        cs.run_connectors((0,), settings={k: v for k, v in TINY.items() if k != "steps"}, workers=0)


def test_a_wider_vit_and_lm_reach_every_connector(lm_cache, monkeypatch):
    """The gpu scale's plumbing on the CPU: its own ViT and LM widths (the LM pretrained for them, briefly here)."""
    from minivlm import pretrained
    monkeypatch.setattr(pretrained, "PRETRAIN", {**pretrained.PRETRAIN, "steps": 2, "scenes": 20})
    wide = dict(TINY, vision=dict(dim=32, depth=1, heads=2), lm=dict(dim=48, depth=1, heads=4), latents=3)
    results = cs.run_connectors((0,), cs.CONNECTORS, wide, workers=0)
    assert [r["tokens"] for r in results] == [16, 16, 4, 3, 3, 0]
    for connector in cs.CONNECTORS:
        model = cs.build(connector, wide)
        inner = model.model if isinstance(model, cs.OneImagePerRow) else model
        assert inner.vision.config.dim == 32 and inner.lm.config.dim == 48 and inner.lm.config.depth == 1
    gpu = cs.SCALES["gpu"]
    assert cs.llava_config(gpu).vision_config().grid_size ** 2 == 64 and cs.visual_tokens("unshuffle", gpu) == 16
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            cs.run_connectors((0,), settings=gpu)


def test_the_majority_baseline_gives_the_commonest_training_answer_of_each_kind():
    floor = cs.majority_baseline(TINY)
    test_pairs = cs.data(TINY)[3]
    kinds = {qa.kind for _, qa in test_pairs}
    assert set(floor) == {"all", *kinds} and all(0 <= v <= 100 for v in floor.values())
    counts = {kind: sum(qa.kind == kind for _, qa in test_pairs) for kind in kinds}
    assert floor["all"] == pytest.approx(sum(floor[k] * n for k, n in counts.items()) / len(test_pairs))
    cpu = cs.majority_baseline(cs.SCALES["cpu"])
    assert cpu["exists"] > 50 and cpu["count"] > 50        # one-object scenes: "one" and "yes" are the commonest


RESULTS = os.path.join(os.path.dirname(__file__), "..", "chapters", "results")


def test_the_stored_results_were_written_by_the_code_as_it_is():
    """Chapter 11 and the README read these files: they must come from the current settings, every run there."""
    from minivlm import native_multimodal as nm
    with open(os.path.join(RESULTS, "capstone.json")) as f:
        stored = json.load(f)
    assert stored["settings"] == json.loads(json.dumps(cs.SCALES["cpu"]))
    assert [(r["connector"], r["seed"]) for r in stored["runs"]] == [(c, s) for s in (0, 1, 2) for c in cs.CONNECTORS]
    assert all(r["tokens"] == cs.visual_tokens(r["connector"], cs.SCALES["cpu"]) for r in stored["runs"])
    assert all(len({r["frozen"] for r in stored["runs"] if r["seed"] == seed}) == 1 for seed in (0, 1, 2))
    assert json.loads(json.dumps(cs.summarize(stored["runs"]))) == stored["summary"]
    for folder, steps in (("", nm.SETTINGS["steps"]), ("mixed-1200-steps", 1200)):
        with open(os.path.join(RESULTS, folder, "mixed.json")) as f:
            stored = json.load(f)
        assert stored["settings"] == json.loads(json.dumps(dict(nm.SETTINGS, steps=steps)))
        assert [(r["recipe"], r["seed"]) for r in stored["runs"]] == [(m, s) for s in (0, 1, 2) for m in nm.RECIPES]
        assert json.loads(json.dumps(nm.summarize(stored["runs"]))) == stored["summary"]
        assert all(len(r["loss"]) == steps for r in stored["runs"])

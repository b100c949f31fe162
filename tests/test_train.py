import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from minivlm.train import TrainConfig, fit, load_checkpoint, lr_at, pick_device, save_checkpoint, shard


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 3))


def get_batch(step):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(16, 8, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def quiet(**kw):
    return TrainConfig(progress=False, device="cpu", warmup_steps=5, **kw)


def test_fit_learns_and_records_history():
    model = make_model()
    evals = []
    history = fit(model, get_batch, loss_fn, quiet(steps=150, lr=1e-2, eval_every=50),
                  eval_fn=lambda m: evals.append(1) or {"loss": loss_fn(m, get_batch(10**6)).item()})
    assert len(history["loss"]) == 150 and history["step"] == list(range(150))
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert [e["step"] for e in history["eval"]] == [50, 100, 150]


def test_lr_schedule_warmup_then_cosine():
    config = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(0.1)
    assert lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(10, config) == pytest.approx(1.0)
    assert lr_at(99, config) == pytest.approx(0.1, abs=1e-3)
    lrs = [lr_at(s, config) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_training_is_seeded_and_deterministic():
    a, b = make_model(), make_model()
    fit(a, get_batch, loss_fn, quiet(steps=20))
    fit(b, get_batch, loss_fn, quiet(steps=20))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_resume_midway_matches_straight_run(tmp_path, monkeypatch):
    straight = make_model()
    fit(straight, get_batch, loss_fn, quiet(steps=30))
    path = str(tmp_path / "mid.pt")

    class Stop(Exception):
        pass

    def stopping_batch(step):
        if step == 12:
            raise Stop
        return get_batch(step)

    interrupted = make_model()
    with pytest.raises(Stop):
        fit(interrupted, stopping_batch, loss_fn, quiet(steps=30, checkpoint_path=path, checkpoint_every=12))
    assert torch.load(path, weights_only=True)["step"] == 12
    resumed = make_model(seed=7)
    history = fit(resumed, get_batch, loss_fn, quiet(steps=30), resume_from=path)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert history["step"] == list(range(30))


def test_checkpoint_errors(tmp_path):
    model = make_model()
    with pytest.raises(FileNotFoundError):
        load_checkpoint(str(tmp_path / "missing.pt"), model)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupted"):
        load_checkpoint(str(bad), model)
    path = str(tmp_path / "ok.pt")
    save_checkpoint(path, model)
    with pytest.raises(ValueError, match="does not fit"):
        load_checkpoint(path, nn.Linear(2, 2))
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_nan_loss_stops_training_naming_the_step():
    calls = []

    def nan_at_37(model, batch):
        calls.append(1)
        loss = loss_fn(model, batch)
        return loss * float("nan") if len(calls) == 38 else loss
    with pytest.raises(FloatingPointError, match=r"step 37 \(read back for steps 25\.\.49\)"):
        fit(make_model(), get_batch, nan_at_37, quiet(steps=100))
    with pytest.raises(TypeError, match="scalar tensor"):
        fit(make_model(), get_batch, lambda m, b: 1.0, quiet(steps=3))


def test_save_checkpoint_leaves_no_temporary_file(tmp_path, monkeypatch):
    model = make_model()
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(IsADirectoryError, match="dir.pt"):
        save_checkpoint(str(tmp_path / "dir.pt"), model)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if not os.access(locked, os.W_OK):           # root may write anywhere
        with pytest.raises(PermissionError):
            save_checkpoint(str(locked / "ck.pt"), model)
    locked.chmod(0o700)

    def failing_save(state, path):
        open(path, "wb").write(b"half a file")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(str(tmp_path / "ck.pt"), model)
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name or p.name.startswith("ck.pt")]


def test_shard_and_device_pick():
    batch = {"x": torch.arange(8), "pair": (torch.arange(8), torch.ones(8))}
    part = shard(batch, 1, 2)
    assert part["x"].tolist() == [4, 5, 6, 7] and part["pair"][1].shape == (4,)
    with pytest.raises(ValueError, match="divisible"):
        shard(torch.arange(5), 0, 2)
    assert pick_device("cpu").type == "cpu"
    assert pick_device().type in ("cpu", "cuda", "mps")


def test_config_validation():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)


DDP_SCRIPT = r"""
import sys, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
from test_train import make_model, get_batch, loss_fn
from minivlm.train import TrainConfig, fit
model = make_model()
fit(model, get_batch, loss_fn, TrainConfig(steps=15, progress=False, device="cpu", warmup_steps=5))
torch.save(model.state_dict(), f"{out}/rank{{dist.get_rank()}}.pt")
dist.destroy_process_group()
"""


def test_ddp_two_processes_match_single_process(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=os.path.dirname(__file__), out=str(tmp_path)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", str(script)],
                            capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    single = make_model()
    fit(single, get_batch, loss_fn, quiet(steps=15))
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name, value in single.state_dict().items():
        assert torch.equal(rank0[name], rank1[name])
        assert torch.allclose(rank0[name], value, atol=1e-5), name


def test_move_to_and_shard_keep_named_tuples():
    from typing import NamedTuple

    from minivlm.distributed import shard
    from minivlm.train import move_to

    class Batch(NamedTuple):
        x: torch.Tensor
        names: list

    batch = Batch(torch.arange(4), ["a", "b"])
    moved = move_to(batch, "cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.x, batch.x) and moved.names == ["a", "b"]
    half = shard(batch, 1, 2)
    assert isinstance(half, Batch) and half.x.tolist() == [2, 3]

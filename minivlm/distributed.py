"""The torchrun process group, as the training loop and the contrastive losses see it.

Under `torchrun --nproc_per_node=N script.py` each of N processes (ranks) runs the same
script on its own slice of every global batch; without torchrun there is one process,
rank 0 of a world of size 1, and every function here is the identity.

    rank, world_size = world()            # (0, 1) without a process group
    rank, world_size = join(device)       # join torchrun's group (gloo on CPU, nccl on CUDA)
    shard(batch, rank, world_size)        # this rank's rows of every tensor, (B, ...) -> (B/N, ...)
"""

import os

import torch
import torch.distributed as dist


def world():
    """(rank, world_size) of the torch.distributed process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def join(device):
    """Join the process group torchrun describes in WORLD_SIZE (if any); returns (rank, world_size)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.device(device).type == "cuda" else "gloo")
    return world()


def rebuild(sequence, values):
    """A list, tuple or NamedTuple of the same type as `sequence`, holding `values`."""
    return type(sequence)(*values) if hasattr(sequence, "_fields") else type(sequence)(values)


def shard(batch, rank, world_size):
    """This rank's slice of every tensor in the batch, along dim 0 (tensors, or tuples/lists/dicts of them)."""
    if isinstance(batch, torch.Tensor):
        if batch.shape[0] % world_size:
            raise ValueError(f"global batch size {batch.shape[0]} must be divisible by world size {world_size}")
        return batch.chunk(world_size)[rank]
    if isinstance(batch, dict):
        return {key: shard(value, rank, world_size) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return rebuild(batch, [shard(value, rank, world_size) for value in batch])
    return batch

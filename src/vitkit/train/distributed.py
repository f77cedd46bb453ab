"""torchrun integration: process group setup, DDP or FSDP2 wrapping, and metric reduction across ranks.

Launched plainly, everything here is a no-op (world size 1). Under ``torchrun --nproc_per_node N`` the environment
variables torchrun sets (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT) start a process group: gloo on a CPU,
NCCL on CUDA.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .config import DistConfig


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    strategy: str = "none"  # none | ddp | fsdp

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(cfg: DistConfig, device_type: str) -> DistInfo:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single-process DistInfo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        if cfg.strategy == "fsdp":
            raise ValueError("dist.strategy='fsdp' needs several processes: launch with torchrun --nproc_per_node N")
        return DistInfo()
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device_type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size(),
                    "fsdp" if cfg.strategy == "fsdp" else "ddp")
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def device_for(info: DistInfo, requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device='cuda' but CUDA is not available; use train.device=cpu")
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DDP, or FSDP2: every repeated block (an element of an nn.Sequential / ModuleList child) sharded, then the root.

    The block rule reads only the module tree's shape, so the engine still knows nothing of the model's insides.
    """
    if info.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if info.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for child in model.children():
            if isinstance(child, (nn.Sequential, nn.ModuleList)):
                for block in child:
                    fully_shard(block)
        fully_shard(model)
    return model


def no_sync(model: nn.Module, skip: bool):
    """Skip the gradient all-reduce on inner accumulation steps (DDP ``no_sync``; FSDP2 ``set_requires_gradient_sync``)."""
    if not skip:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def model_state_dict(model: nn.Module, raw_model: nn.Module, info: DistInfo) -> dict:
    """The full (unsharded) model state on rank 0. Under FSDP2 a collective: every rank must call it."""
    if info.strategy != "fsdp":
        return raw_model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, info: DistInfo) -> dict:
    if info.strategy != "fsdp":
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_model_and_optimizer(model: nn.Module, raw_model: nn.Module, optimizer: torch.optim.Optimizer,
                             model_state: dict, optim_state: dict, info: DistInfo) -> None:
    """Inverse of the two functions above; under FSDP2 rank 0's full state is scattered into the shards."""
    if info.strategy != "fsdp":
        raw_model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, model_state, options=options)
    set_optimizer_state_dict(model, optimizer, optim_state, options=options)


def all_reduce_max(value: int, device: torch.device, info: DistInfo) -> int:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_reduce_sum(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    """Sum a few scalars (counts, loss sums) over ranks: metrics are then exact, not averages of averages."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "DistInfo", "setup_distributed", "device_for", "wrap_model", "no_sync", "all_reduce_sum", "all_reduce_max",
    "barrier", "model_state_dict", "optimizer_state_dict", "load_model_and_optimizer",
    "broadcast_object", "cleanup",
]

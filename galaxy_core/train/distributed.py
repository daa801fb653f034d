"""torchrun support: process group, rank, DistributedDataParallel wrapping and reductions.

``galaxygan train`` runs unchanged under ``torchrun --nproc_per_node=N`` (and multi-node with
torchrun's ``--nnodes``/``--rdzv-endpoint`` options): when torchrun's ``WORLD_SIZE`` is above 1
the process group is started from torchrun's environment (NCCL on CUDA, gloo on CPU), every
trainable network is wrapped in :class:`torch.nn.parallel.DistributedDataParallel`, each rank
trains on its slice of the step's global batch, and only rank 0 writes the run folder. Nothing
here replaces torch's own machinery; it only reads torchrun's environment.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            comm = t.to(self._comm_device(t), copy=True)  # NCCL reduces CUDA tensors only
            dist.all_reduce(comm, op=dist.ReduceOp.SUM)
            t = comm.to(t.device)
        return t

    @staticmethod
    def _comm_device(t: torch.Tensor) -> torch.device:
        """Where a collective's tensor must live: this rank's GPU under NCCL, else where it is."""
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return t.device

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if not self.enabled:
            return flag
        return bool(self.all_reduce_sum(torch.tensor([1.0 if flag else 0.0], dtype=torch.float64))[0] > 0)

    def all_gather_float(self, value: float) -> list[float]:
        if not self.enabled:
            return [value]
        mine = torch.tensor([value], dtype=torch.float64)
        mine = mine.to(self._comm_device(mine))
        out = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(out, mine)
        return [float(o[0]) for o in out]

    def broadcast_buffers(self, net: nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm statistics differ with each rank's slice)."""
        if self.enabled:
            for b in net.buffers():
                dist.broadcast(b, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def wrap(self, net: nn.Module, device: torch.device) -> nn.Module:
        if not self.enabled or not any(p.requires_grad for p in net.parameters()):
            return net
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(net, device_ids=ids, broadcast_buffers=True)


def setup(device_name: str) -> Dist:
    """Start the process group when launched by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
        if use_cuda:
            torch.cuda.set_device(local)
        # a long timeout: the other ranks wait at a barrier while rank 0 prepares the data,
        # which takes minutes for a new folder or the simulated set (the defaults are 10-30 min)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=2))
    return Dist(rank=rank, world_size=world, local_rank=local)


def agree_on(value, device_name: str):
    """Rank 0's ``value`` on every rank, for a choice each rank would otherwise make alone (a new
    run's name has a random part). Without torchrun (``WORLD_SIZE`` 1) returns ``value``;
    otherwise starts the process group (:func:`setup`) and broadcasts rank 0's. ``value`` must
    pickle."""
    d = setup(device_name)
    if not d.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown(d: Dist) -> None:
    """Leave the process group together: a barrier first, so no rank closes its connections
    while another still has messages in flight (with gloo that can abort a rank at exit
    after training finished), then destroy the group."""
    if d.enabled and dist.is_initialized():
        try:
            dist.barrier()
        except Exception:  # another rank already failed; its error is the one to report
            pass
        dist.destroy_process_group()

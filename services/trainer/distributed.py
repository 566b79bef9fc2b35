"""A rank's view of its process group, for data-parallel training (torch.distributed).

The ranks are started by services/trainer/launcher.py; each runs the ordinary `train(cfg)`. Inside
it, `current()` returns this rank's `Group`, which gives the rank its device, its shard of each epoch
(DistributedSampler), a DistributedDataParallel model (gradients all-reduced) and the few
collectives the loop needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler


@dataclass(frozen=True)
class Group:
    """This process's place in the process group."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def wrap(self, model: torch.nn.Module) -> DistributedDataParallel:
        """DDP broadcasts rank 0's weights at construction and all-reduces gradients in backward."""
        ids = [self.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, n: int, seed: int, epoch: int) -> list[int]:
        """This rank's indices for one epoch: a shuffle shared by all ranks, split rank::world_size
        (padded by repetition so every rank runs the same number of steps)."""
        # The sampler only takes len() of its dataset (torch ignores the same mismatch inside it), so
        # a range stands for the examples; torch's annotation asks for a Dataset all the same.
        indices = cast("Dataset[int]", range(n))
        sampler: DistributedSampler[int] = DistributedSampler(
            indices, num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=seed
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    def shard_size(self, n: int) -> int:
        return -(-n // self.world_size)

    def sum(self, *values: float) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value, on every rank."""
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's value, in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out


def current() -> Group | None:
    """The process group this process trains in, or None for a plain single-process run."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shard_report(group: Group, epochs: list[list[int]], model: torch.nn.Module) -> dict[str, Any]:
    """What each rank trained on (its indices per epoch) and whether the replicas ended equal."""
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    ranks = group.gather((epochs, checksum))
    overlap = 0
    for epoch in range(len(epochs)):
        counts: dict[int, int] = {}
        for rank_epochs, _ in ranks:
            for i in set(rank_epochs[epoch]):
                counts[i] = counts.get(i, 0) + 1
        overlap = max(overlap, sum(1 for c in counts.values() if c > 1))
    sums = [c for _, c in ranks]
    return {
        "processes": group.world_size,
        "rank_examples_per_epoch": [len(rank_epochs[0]) if rank_epochs else 0 for rank_epochs, _ in ranks],
        # Examples more than one rank trained on in the same epoch: only DistributedSampler's
        # padding (n % world_size of them), which evens out the ranks' step counts.
        "rank_overlap": overlap,
        # DDP all-reduced the gradients: every replica ends with the same weights.
        "replicas_in_sync": max(sums) - min(sums) <= 1e-6 * max(1.0, abs(sums[0])),
    }

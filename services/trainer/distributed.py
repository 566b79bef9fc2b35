"""Several processes for one training job: torch.distributed data parallelism.

`launch(cfg, processes)` starts a one-node process group with torch's elastic launcher (what
`torchrun --standalone` uses: a c10d rendezvous on a free localhost port, processes started with
`spawn`, so nothing of the caller's CUDA state is inherited). Every rank runs the ordinary
`train(cfg)`; inside it, `current()` returns this rank's `Group`, which gives the rank its device,
its shard of each epoch (DistributedSampler), a DistributedDataParallel model (gradients
all-reduced) and the few collectives the loop needs. Rank 0 alone evaluates, writes the checkpoint
and returns the TrainResult. Backend: nccl on CUDA (one GPU per rank), gloo on CPU."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from services.trainer.students import resolve_model_name
from shared.schemas.training import TrainResult

if TYPE_CHECKING:
    from services.trainer.train import TrainConfig

logger = logging.getLogger(__name__)


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
        sampler = DistributedSampler(
            range(n), num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=seed
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


def _exit_with_launcher() -> None:
    """A rank whose launcher is gone (the work horse killed) stops instead of training on alone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        logger.error("training launcher %d is gone: rank exits", parent)
        os._exit(70)

    threading.Thread(target=watch, name="exit-with-launcher", daemon=True).start()


def _rank_main(cfg_json: str, log_level: str) -> dict[str, Any] | None:
    """One rank (a spawned process): join the group, train, leave. Module-level so spawn can import it."""
    from services.trainer.train import TrainConfig, train
    from shared.logging import configure_logging

    configure_logging(log_level)
    _exit_with_launcher()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        result = train(TrainConfig.model_validate_json(cfg_json))
        return result.model_dump(mode="json") if result is not None else None
    finally:
        dist.destroy_process_group()


def launch(cfg: TrainConfig, processes: int) -> TrainResult:
    """Train `cfg` with `processes` ranks on this machine; rank 0's TrainResult."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    resolve_model_name(cfg.model, cfg.kind, cfg.allowed_models)  # fail here, not in every rank
    if torch.cuda.is_available() and processes > torch.cuda.device_count():
        raise ValueError(f"{processes} training processes but {torch.cuda.device_count()} GPUs")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=f"gold-{cfg.checkpoint_id}-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port, as `torchrun --standalone`
        max_restarts=0,  # a failed rank fails the job; RQ's retry runs it again
        monitor_interval=1.0,
        start_method="spawn",
    )
    logger.info("training %s with %d processes", cfg.checkpoint_id, processes)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    results = elastic_launch(config, _rank_main)(cfg.model_dump_json(), level)
    return TrainResult.model_validate(results[0])

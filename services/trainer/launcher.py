"""Several processes for one training job: `launch(cfg, processes)`.

A one-node process group started with torch's elastic launcher (what `torchrun --standalone` uses: a
c10d rendezvous on a free localhost port, processes started with `spawn`, so nothing of the caller's
CUDA state is inherited). Every rank runs the ordinary `train(cfg)` (services/trainer/distributed.py
gives it its place in the group); rank 0 evaluates, writes the checkpoint, and its TrainResult is the
job's. Backend: nccl on CUDA (one GPU per rank), gloo on CPU."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

import torch
import torch.distributed as dist

from services.trainer.students import resolve_model_name
from services.trainer.train import train
from services.trainer.train_config import TrainConfig
from shared.schemas.training import TrainResult

logger = logging.getLogger(__name__)


def _exit_with_launcher() -> None:
    """A rank whose launcher is gone (the work horse killed) stops instead of training on alone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        logger.error("training launcher %d is gone: rank exits", parent)
        os._exit(70)

    threading.Thread(target=watch, name="exit-with-launcher", daemon=True).start()


def _rank_main(cfg_json: str, log_level: str) -> dict[str, Any]:
    """One rank (a spawned process): join the group, train, leave. Module-level so spawn can import it."""
    from shared.logging import configure_logging

    configure_logging(log_level)
    _exit_with_launcher()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        return train(TrainConfig.model_validate_json(cfg_json)).model_dump(mode="json")
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

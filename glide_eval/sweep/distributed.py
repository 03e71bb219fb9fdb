"""torchrun: which rank this process is, and the barriers between ranks (gloo on CPU, NCCL on CUDA).

Every rank of a multi-process sweep watches every other one (`liveness`): a rank that is lost
(its node or launcher died, it hangs) stops the others within GLIDE_EVAL_LOST_AFTER_S
seconds, with a message naming it, however long the collective they wait in may take.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from glide_eval.sweep.errors import SweepError
from glide_eval.sweep.launcher import exit_with_launcher
from glide_eval.sweep.liveness import Liveness


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    initialized: bool = False
    liveness: Liveness | None = None

    @property
    def prefix(self) -> str:
        """ "[rank R/W] " for log lines and progress bars of a multi-process sweep, else ""."""
        return f"[rank {self.rank}/{self.world}] " if self.world > 1 else ""

    def barrier(self) -> None:
        if self.initialized:
            self._collective(dist.barrier)

    def _collective(self, call: Callable[..., Any], *args) -> Any:
        """`call(*args)`; when it fails (a peer's connection closed), first give the watcher the
        time to name a lost rank: it then ends this process with that message."""
        try:
            return call(*args)
        except Exception as e:
            verdict = None if self.liveness is None else self.liveness.wait_for_verdict(self.liveness.lost_after + 5)
            if verdict is not None:
                raise SweepError(verdict) from e
            raise

    def share(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (a picklable object)."""
        if not self.initialized:
            return value
        box = [value]
        self._collective(dist.broadcast_object_list, box, 0)
        return box[0]

    def first_failure(self, failure: str | None) -> str | None:
        """The first rank's non-None `failure`, on every rank (each rank gives its own, or None):
        every rank learns that one of them stopped, so none waits at a barrier for it."""
        if not self.initialized:
            return failure
        every: list[str | None] = [None] * self.world
        self._collective(dist.all_gather_object, every, failure)
        return next((f for f in every if f is not None), None)

    def close(self, failure: str | None = None) -> None:
        """Leave the process group; tell the other ranks' watchers "done", or `failure`."""
        if self.liveness is not None:
            self.liveness.close(failure or "done")
            self.liveness = None
        if self.initialized:
            dist.destroy_process_group()
            self.initialized = False


def init_distributed(device: str) -> Dist:
    """Read RANK / WORLD_SIZE (set by torchrun); join the process group when WORLD_SIZE > 1.
    A torchrun worker also ends with its launcher (`launcher.exit_with_launcher`)."""
    exit_with_launcher()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return Dist()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(device)  # one GPU per rank, also for NCCL's barrier
    if not dist.is_initialized():
        # long timeout: ranks wait at the final barrier while others finish their shards (a lost
        # rank ends the wait sooner: `liveness`)
        dist.init_process_group(backend, timeout=datetime.timedelta(days=2))
    liveness = Liveness(rank, world, os.environ.get("MASTER_ADDR", "127.0.0.1"))
    peers: list = [None] * world
    dist.all_gather_object(peers, liveness.me)
    liveness.start(peers)
    return Dist(rank, world, True, liveness)

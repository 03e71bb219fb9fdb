"""torchrun workers end when their launcher does.

torchrun starts one worker process per rank and, when it is killed (SIGKILL, a lost node,
an OOM kill), nothing tells the workers: they would sample to the end of the sweep. On Linux
`exit_with_launcher` asks the kernel (prctl PR_SET_PDEATHSIG) to send the worker SIGTERM
when its parent ends, then checks the parent once more: a launcher that died between the
worker's start and the prctl call is caught by that check. Elsewhere it does nothing.

It imports no torch so `python -m glide_eval` can call it first thing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h
TORCHRUN_ENV = "TORCHELASTIC_RUN_ID"  # set by torchrun in every worker


def started_by_torchrun(environ=os.environ) -> bool:
    return TORCHRUN_ENV in environ


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """prctl(PR_SET_PDEATHSIG, sig); False where there is no such call (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    return True


def exit_with_launcher(sig: int = signal.SIGTERM, environ=os.environ) -> bool:
    """In a torchrun worker: be sent `sig` when the launcher ends; end now if it already has.
    Whether the death signal is set."""
    if not started_by_torchrun(environ):
        return False
    parent = os.getppid()
    armed = set_parent_death_signal(sig)
    if armed and (os.getppid() != parent or parent == 1):  # the launcher died before the prctl
        os.kill(os.getpid(), sig)
    return armed

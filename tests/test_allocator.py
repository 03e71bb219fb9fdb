"""glibc malloc tuning (glide_eval/allocator.py): fewer page faults, applied by the CLI, opt-out."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from glide_eval import allocator, cli

ROOT = Path(__file__).resolve().parent.parent
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# a toy base model forward loop in a fresh process; prints minor page faults per forward
FORWARDS = """
import json, resource, sys, torch
if sys.argv[1] == "tuned":
    from glide_eval.allocator import tune_glibc_malloc
    assert tune_glibc_malloc()
from glide_eval.toy import load_toy_models
torch.set_num_threads(1)
model = load_toy_models().base.eval()
x, t = torch.randn(16, 3, 16, 16), torch.full((16,), 500)
with torch.inference_mode():
    text = model.encode_text(torch.randint(0, 30, (16, 16)), torch.ones(16, 16, dtype=torch.bool))
    for _ in range(3):
        model(x, t, text=text)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        model(x, t, text=text)
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 8))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_tuned_malloc_stops_page_faulting_the_activations_in_again():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    faults = {
        mode: json.loads(
            subprocess.run(
                [sys.executable, "-c", FORWARDS, mode], env=env, check=True, capture_output=True, text=True
            ).stdout.splitlines()[-1]
        )
        for mode in ("default", "tuned")
    }
    # What the tuning guarantees on any glibc machine: after warm-up, a forward pass reuses the heap
    # instead of faulting its activations in again, so the tuned faults are a small fraction of the
    # default's (or a handful, where the default faults little). How many the default takes depends
    # on the machine (glibc version, thresholds, transparent huge pages): ~3,500 on one, 360 on
    # another; bench/allocator.py measures it.
    assert faults["tuned"] <= max(faults["default"] / 10, 32), faults


def test_settings_of_the_user_are_left_alone():
    for env in (
        {"MALLOC_TRIM_THRESHOLD_": "0"},
        {"MALLOC_MMAP_THRESHOLD_": "1"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"},
    ):
        assert allocator.user_chose_malloc_settings(env) and not allocator.tune_glibc_malloc(env)
    assert not allocator.user_chose_malloc_settings({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})
    assert allocator.tune_glibc_malloc({}) is GLIBC


def test_every_glide_eval_command_tunes_malloc_first(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "tune_glibc_malloc", lambda: calls.append(1))
    result = CliRunner().invoke(cli.main, ["elo", "--help"])
    assert result.exit_code == 0 and calls == [1]

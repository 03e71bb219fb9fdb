import os
from pathlib import Path

import pytest
import torch

from torchvision_compat import ensure_torchvision

ensure_torchvision()  # before any torch_fidelity / open_clip import

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken_cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken_cache")


@pytest.fixture
def golden_dir() -> Path:
    return GOLDEN


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads; on a shared 2-core machine extra threads only spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

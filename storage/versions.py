"""The installed versions of the packages that decide the numbers, for provenance records."""

from __future__ import annotations

import contextlib
import platform
from importlib.metadata import PackageNotFoundError, version

VERSIONED_PACKAGES = ("glide-eval", "torch", "numpy", "torch-fidelity", "open-clip-torch")


def package_versions(packages: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Python's and the installed versions of `packages` (those not installed are left out)."""
    out = {"python": platform.python_version()}
    for package in packages:
        with contextlib.suppress(PackageNotFoundError):
            out[package] = version(package)
    return out

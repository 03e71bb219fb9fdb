"""Loading the released GLIDE checkpoints from a local directory.

The directory comes from the `checkpoint_dir` argument or the `GLIDE_CHECKPOINTS`
environment variable and holds the released file names (`OFFICIAL_FILES`). Files are read
with `torch.load(weights_only=True)` and loaded strictly; a mismatch raises
`CheckpointMismatchError` naming the file and listing missing, unexpected and wrongly
shaped keys. Every loader also returns the files' sha256 for provenance.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from samplers.model_configs import (
    GLIDE_MODELS,
    OFFICIAL_FILES,
    create_model,
    create_noised_clip,
    official_clip_config,
    official_options,
)
from storage import given_path, sha256_file

ENV_VAR = "GLIDE_CHECKPOINTS"


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not fit the model built for it."""


class CheckpointReadError(ValueError):
    """A checkpoint file that torch cannot read (truncated, not a PyTorch file); names the file."""


def resolve_checkpoint_dir(directory: str | os.PathLike | None = None) -> Path:
    """The checkpoint directory: the argument, else $GLIDE_CHECKPOINTS."""
    missing = f"no checkpoint directory: pass one or set ${ENV_VAR}"
    return given_path(directory, ENV_VAR, "checkpoint directory", missing, folder=True)


def _limited(items: list[str], limit: int = 10) -> str:
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_state_dict(module: torch.nn.Module, state_dict: dict, source: str) -> None:
    """Raise CheckpointMismatchError unless `state_dict` has exactly `module`'s keys and shapes."""
    if not isinstance(state_dict, dict):
        raise CheckpointMismatchError(f"{source}: expected a state dict, got {type(state_dict).__name__}")
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    missing = [k for k in expected if k not in given and k not in not_tensors]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: file {given[k]} vs model {expected[k]}" for k in expected if k in given and given[k] != expected[k]
    ]
    wrong_type = [k for k in not_tensors if k in expected]
    if missing or unexpected or shapes or wrong_type:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_limited(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_limited(unexpected)}")
        if shapes:
            parts.append(f"wrong shapes ({len(shapes)}): {_limited(shapes)}")
        if wrong_type:
            parts.append(f"not tensors ({len(wrong_type)}): {_limited(wrong_type)}")
        raise CheckpointMismatchError(f"{source} does not match the model: " + "; ".join(parts))


def load_state_dict_file(path: Path, map_location="cpu", mmap: bool = False) -> dict:
    """torch.load(weights_only=True) of `path`; CheckpointReadError naming the file when torch
    cannot read it (truncated download, another format), FileNotFoundError when absent."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    mmap = mmap and zipfile.is_zipfile(path)  # torch maps only its zip format (not legacy files)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointReadError(
            f"{path}: not a readable PyTorch checkpoint (truncated or another format?): {first_line}"
        ) from None


def official_module(name: str) -> torch.nn.Module:
    """The official model behind OFFICIAL_FILES[name], built on the meta device (no memory)."""
    with torch.device("meta"):
        if name in GLIDE_MODELS:
            return create_model(official_options(name))
        if name in ("clip/image-enc", "clip/text-enc"):
            clip = create_noised_clip(official_clip_config())
            return clip.image_encoder if name == "clip/image-enc" else clip.text_encoder
    raise ValueError(f"unknown checkpoint {name!r}; expected one of {list(OFFICIAL_FILES)}")


def check_checkpoint_file(name: str, path: str | os.PathLike) -> str:
    """Check a released checkpoint without loading it: memory-map `path` and compare its keys and
    shapes with the official `name` model built on the meta device. Returns the file's sha256;
    raises FileNotFoundError, CheckpointReadError or CheckpointMismatchError naming the file."""
    path = Path(path)
    state_dict = load_state_dict_file(path, map_location="cpu", mmap=True)
    check_state_dict(official_module(name), state_dict, str(path))
    return sha256_file(path)


def _load_checked(module: torch.nn.Module, path: Path, device) -> None:
    """Check `path` against `module` (built on the meta device), then assign its tensors as float32."""
    state_dict = load_state_dict_file(path, map_location=device)
    check_state_dict(module, state_dict, str(path))
    module.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True, assign=True)


def load_glide_model(
    name: str,
    checkpoint_dir: str | os.PathLike | None = None,
    device="cpu",
    dtype: torch.dtype = torch.float32,
    options: dict | None = None,
):
    """Load a released GLIDE UNet ("base", "upsample", "base-inpaint", "upsample-inpaint").

    `options` overrides the official options (for non-official files saved under the same name).
    Returns (model in eval mode on `device`, converted with `to_dtype(dtype)`, file sha256).
    """
    if name not in GLIDE_MODELS:
        raise ValueError(f"unknown GLIDE model {name!r}; expected one of {list(GLIDE_MODELS)}")
    path = resolve_checkpoint_dir(checkpoint_dir) / OFFICIAL_FILES[name]
    options = official_options(name) if options is None else options
    with torch.device("meta"):
        model = create_model(options)
    _load_checked(model, path, device)
    model = model.to(device).use_channels_last().eval()
    if dtype != torch.float32:
        model.to_dtype(dtype)
    return model, sha256_file(path)


def load_noised_clip(checkpoint_dir: str | os.PathLike | None = None, device="cpu", config: dict | None = None):
    """Load the noised CLIP from clip_image_enc.pt and clip_text_enc.pt.

    Returns (NoisedCLIP in eval mode, {"clip_image_enc.pt": sha256, "clip_text_enc.pt": sha256}).
    """
    directory = resolve_checkpoint_dir(checkpoint_dir)
    config = official_clip_config() if config is None else config
    with torch.device("meta"):
        clip = create_noised_clip(config)
    hashes = {}
    for name, encoder in (("clip/image-enc", clip.image_encoder), ("clip/text-enc", clip.text_encoder)):
        path = directory / OFFICIAL_FILES[name]
        _load_checked(encoder, path, device)
        hashes[path.name] = sha256_file(path)
    return clip.to(device).eval(), hashes

"""A checkpoint-driven engine for the regress tests (`engine = "python:test_regress_engine:make_components"`).

Generation is the real GLIDE pipeline (`samplers.pipeline.sample_images`) with a tiny base
model whose weights are read from CHECKPOINTS/base.pt, so a candidate folder with other
weights gives other samples. Features are fixed random projections of the pixels, and the
metrics are the real `metrics.calculate_metrics` (FID, IS, precision/recall, CLIP score)
against reference pool features from [engine_options] reference (an .npz with "pool").
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from glide_eval.sweep.components import Components
from glide_eval.sweep.errors import MissingComponentError
from storage import sha256_file

EMBED = 16


def tiny_options() -> dict:
    from samplers.model_configs import official_options
    from samplers.pipeline import TINY_OVERRIDES

    return dict(official_options("base"), **TINY_OVERRIDES["base"])


def save_checkpoint(folder: Path, seed: int = 0, noise: float = 0.0, like: Path | None = None) -> Path:
    """A tiny base model's state dict in folder/base.pt: random weights (seed), or `like`'s
    weights, plus Gaussian noise of `noise` times each tensor's std."""
    from samplers.pipeline import load_glide_models

    state = (
        torch.load(like, weights_only=True)
        if like
        else load_glide_models(None, random_weights=True, tiny=True, seed=seed).base.state_dict()
    )
    generator = torch.Generator().manual_seed(seed + 1)
    if noise:
        state = {
            k: v + noise * v.float().std().nan_to_num() * torch.randn(v.shape, generator=generator)
            if v.is_floating_point() and v.numel() > 1
            else v
            for k, v in state.items()
        }
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "base.pt")
    return folder / "base.pt"


def load_models(checkpoint_dir: Path, device: str = "cpu"):
    from samplers.model_configs import create_model
    from samplers.pipeline import GlideModels

    options = tiny_options()
    model = create_model(options)
    model.load_state_dict(torch.load(Path(checkpoint_dir) / "base.pt", weights_only=True))
    return GlideModels(base=model.to(device).eval(), base_options=options)


def generate_with(models, config, captions, sample_ids, setting, device: str = "cpu"):
    from samplers.pipeline import sample_images

    result = sample_images(
        models,
        captions,
        sample_ids,
        config["run"]["seed"],
        guidance=setting.guidance,
        respacing=config["sampler"]["base_respacing"],
        sampler=config["sampler"]["method"],
        batch_size=len(captions),
        device=device,
    )
    return result.images.numpy(), np.asarray(result.nan_steps, dtype=np.int64)


_PROJ = np.random.default_rng(0).normal(size=(51, 8 + 10 + EMBED))


def caption_embedding(caption: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(caption.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=EMBED)


def featurize(images: np.ndarray, captions: list[str]) -> dict:
    x = images.astype(np.float64) / 255.0
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, 4, h // 4, 4, w // 4).mean(axis=(3, 5)).reshape(n, -1)
    z = np.concatenate([blocks, x.std(axis=(2, 3))], axis=1) @ _PROJ
    img, txt = z[:, 18:], np.stack([caption_embedding(cap) for cap in captions])
    cos = (img * txt).sum(1) / np.linalg.norm(img, axis=1) / np.linalg.norm(txt, axis=1)
    return {"pool": z[:, :8], "logits_unbiased": 3.0 * z[:, 8:18], "clip_scores": 100.0 * cos}


def make_components(config, device: str) -> Components:
    from metrics.calculate import calculate_metrics

    folder = Path(config.models.checkpoints)
    if not (folder / "base.pt").is_file():
        raise MissingComponentError(f"[models.checkpoints] {folder / 'base.pt'} not found")
    reference = np.load(config.engine_options["reference"])["pool"]
    names = set(config.metrics.names)
    loaded = []

    def generate(captions, sample_ids, setting):
        if not loaded:
            loaded.append(load_models(folder, device))
        return generate_with(loaded[0], config, captions, sample_ids, setting, device)

    def compute_metrics(features, captions, ci):
        gen = {k: features[k] for k in ("pool", "logits_unbiased", "clip_scores")}
        out = calculate_metrics(
            gen,
            {"pool": reference},
            fid="fid" in names,
            isc="is" in names,
            prc=bool(names & {"precision", "recall"}),
            clip_score="clip_score" in names,
            isc_splits=2,
        )
        return {k: float(v) for k, v in out.items()}

    return Components(
        generate,
        featurize,
        compute_metrics,
        provenance={
            "files": {
                "base": sha256_file(folder / "base.pt"),
                "test_featurizer": hashlib.sha256(_PROJ.tobytes()).hexdigest(),
            }
        },
    )


def test_engine_depends_on_the_checkpoint(tmp_path):
    from glide_eval.sweep.config import Setting

    save_checkpoint(tmp_path / "a", seed=0)
    save_checkpoint(tmp_path / "b", noise=0.5, like=tmp_path / "a" / "base.pt")
    config = {"run": {"seed": 1}, "sampler": {"base_respacing": "2", "method": "ancestral"}}
    args = (config, ["a red cube", "a blue ball"], [0, 1], Setting("cfg", 3.0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions on a shared machine
    try:
        a, _ = generate_with(load_models(tmp_path / "a"), *args)
        again = generate_with(load_models(tmp_path / "a"), *args)[0]
        other = generate_with(load_models(tmp_path / "b"), *args)[0]
    finally:
        torch.set_num_threads(threads)
    assert a.shape == (2, 3, 16, 16) and a.dtype == np.uint8
    assert np.array_equal(a, again) and not np.array_equal(a, other)

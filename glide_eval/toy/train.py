"""Train the toy world's models from scratch, reproducibly, on a CPU.

    glide-eval toy-models --out glide_eval/assets [--stages classifier,clip,base,noised_clip,upsample]

Stages (each writes `<stage>.pt`, `train_log_<stage>.csv` and updates `manifest.json` in --out):
- classifier: attribute classifier on clean (noise/blur-augmented) renders (cross-entropy per head);
- clip: clean-image CLIP, symmetric InfoNCE with soft targets for scenes of identical attributes;
- base: GLIDE base UNet (16x16) with the hybrid loss (MSE on eps + VLB for the learned variance,
  improved-DDPM), 20% empty captions for classifier-free guidance, EMA weights shipped;
- noised_clip: GLIDE noised CLIP trained contrastively on q(x_t | x_0) images at random t;
- upsample: GLIDE upsampler 16 -> 32 (hybrid loss, cosine schedule), low_res = 8-bit 16x16 of x_0,
  with x_t's signal displaced for the whole batch (`_upsampler_shift`), so it learns to take the
  coarse image from low_res rather than x_t.
The two diffusion models weight the eps MSE toward high noise (`hybrid_loss`, `max_weight`,
`high_noise`): with the plain loss the base model never learned what only the caption tells at
high noise (its backgrounds matched captions at chance). The base takes a tenth of the
upsampler's emphasis: more starved the low-noise steps, where shapes are drawn (unguided shape
accuracy on 512 captions after 6400 steps: 0.44 at max_weight 100 / high_noise 0.4, 0.60 at 10 / 0.2).
Each stage trains in its own worker process (`--jobs 2`, the CLI's default: two at a time, one
thread each).

Reproducibility. Seeds are fixed and torch runs deterministically, but float results depend
on the CPU kernels torch (ATen), oneDNN and MKL choose by instruction set. A worker's
environment pins all three before torch starts (`kernel_pins`: AVX2 on x86-64 CPUs that have
it, the portable level on older x86, nothing on other architectures) and the worker checks
that torch took the pin. Weight files and train logs hold no file names or times. So:
- bit for bit (the design; checked on one Intel AVX512 machine, see the README): with the same
  torch version and --threads (1 by default) on x86-64 CPUs with AVX2 (the pinned kernels), a
  stage rebuilds the same weight file and log (`glide-eval toy-models --verify` checks it).
  MKL documents its AVX2 branch as reproducible on Intel CPUs only, oneDNN nothing across CPUs;
- not bit for bit: other architectures (no pins) and other torch versions run the same
  training with other rounding, so the weights differ slightly.
The manifest records per file the config, seed, sha256, measured metrics, training time,
threads, the CPU (`cpu`: kernel capability, pins, machine, model) and package versions.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import math
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from glide_eval.toy import models as toy_models
from glide_eval.toy import world
from glide_eval.toy.evalnets import category_label, contrastive_loss, to_input
from glide_eval.toy.tokenizer import clip_tokenize, glide_tokenize
from glide_eval.toy.world import ATTRIBUTES, dataset
from samplers.diffusion import Diffusion
from samplers.pipeline import quantize_low_res
from storage import atomic_write_text, atomic_write_with, package_versions, sha256_file

SEED = 0
STAGES = ("classifier", "clip", "base", "noised_clip", "upsample")
CONFIG = {
    "classifier": {"n_train": 20000, "steps": 4000, "batch": 64, "lr": 3e-3, "options": toy_models.CLASSIFIER_OPTIONS},
    "clip": {"n_train": 20000, "steps": 400, "batch": 64, "lr": 3e-3, "options": toy_models.CLIP_OPTIONS},
    "base": {
        "n_train": 20000,
        "steps": 6400,
        "batch": 64,
        "lr": 2e-3,
        "p_uncond": 0.2,
        "ema": 0.995,
        "max_weight": 10.0,
        "high_noise": 0.2,
        "options": toy_models.BASE_OPTIONS,
    },
    "noised_clip": {
        "n_train": 20000,
        "steps": 6000,
        "batch": 128,
        "lr": 2e-3,
        "options": toy_models.NOISED_CLIP_CONFIG,
    },
    "upsample": {
        "n_train": 20000,
        "steps": 2600,
        "batch": 32,
        "lr": 2e-3,
        "ema": 0.995,
        "max_weight": 100.0,
        "high_noise": 0.3,
        "shift": 1.0,
        "options": toy_models.UPSAMPLE_OPTIONS,
    },
}
LONGEST_FIRST = ("noised_clip", "base", "upsample", "classifier", "clip")  # scheduling order with --jobs
N_VAL = 500


# -- data ---------------------------------------------------------------------------------
def _cached_dataset(n: int, split: str, size: int, cache_dir: Path | None):
    """dataset(n, split, size) with an optional .npz cache (renders are deterministic)."""
    version = hashlib.sha256(Path(world.__file__).read_bytes()).hexdigest()[:12]  # a changed world: a new file
    path = None if cache_dir is None else cache_dir / f"toy_{split}_{size}_{n}_seed{SEED}_{version}.npz"
    if path is not None and path.is_file():
        blob = np.load(path, allow_pickle=False)
        labels = {k: blob[f"label_{k}"] for k in ATTRIBUTES}
        return blob["images"], [str(c) for c in blob["captions"]], labels
    images, captions, labels = dataset(n, split, size, seed=SEED)
    # renders are a transposed view; the cache returns contiguous arrays, and training must not
    # depend on which path it took (strides change conv kernels, hence the weights' bits)
    images = np.ascontiguousarray(images)
    if path is not None:
        arrays = {"images": images, "captions": np.array(captions), **{f"label_{k}": v for k, v in labels.items()}}

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        atomic_write_with(path, write)
    return images, captions, labels


def _same_scene(labels: dict, idx: np.ndarray) -> torch.Tensor:
    """[B, B] bool: rows/cols whose five attributes all agree (their captions mean the same)."""
    key = torch.from_numpy(np.stack([labels[k][idx] for k in ATTRIBUTES], 1))
    return (key[:, None] == key[None]).all(-1)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild blur (half the batch) and Gaussian noise, so generated images stay in distribution."""
    n = x.shape[0]
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    pick = (torch.rand(n, 1, 1, 1, generator=gen) < 0.5).float()
    x = pick * blurred + (1 - pick) * x
    return x + torch.rand(n, 1, 1, 1, generator=gen) * 0.08 * torch.randn(x.shape, generator=gen)


# -- diffusion loss -----------------------------------------------------------------------
class DiffusionTables:
    """Per-timestep coefficient tables of `samplers.diffusion.Diffusion`, indexed by a batch of t."""

    def __init__(self, schedule: str, steps: int = 1000):
        d = Diffusion.spaced(schedule, "", steps)
        self.num_steps = d.num_steps
        names = (
            "sqrt_alphas_cumprod",
            "sqrt_one_minus_alphas_cumprod",
            "sqrt_recip_alphas_cumprod",
            "sqrt_recipm1_alphas_cumprod",
            "posterior_mean_coef1",
            "posterior_mean_coef2",
            "posterior_log_variance_clipped",
            "log_betas",
        )
        self.t = {n: torch.from_numpy(getattr(d, n)).float() for n in names}

    def __call__(self, name: str, t: torch.Tensor) -> torch.Tensor:
        return self.t[name][t].view(-1, 1, 1, 1)

    def q_sample(self, x0, t, noise):
        return self("sqrt_alphas_cumprod", t) * x0 + self("sqrt_one_minus_alphas_cumprod", t) * noise


def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x, mean, log_scale):
    """log p(x) of 8-bit data x in [-1, 1] under a Gaussian discretised to bins of width 2/255."""
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = 0.5 * (1 + torch.erf(inv_std * (centered + 1 / 255) / math.sqrt(2)))
    cdf_min = 0.5 * (1 + torch.erf(inv_std * (centered - 1 / 255) / math.sqrt(2)))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def hybrid_loss(
    model,
    tables: DiffusionTables,
    x0,
    tokens,
    mask,
    gen,
    max_weight: float = 1.0,
    high_noise: float = 0.0,
    shift=None,
    **model_kwargs,
) -> tuple[torch.Tensor, dict]:
    """improved-DDPM hybrid loss: MSE(eps) + VLB term (in bits/dim, x T/1000) training only the variance.

    With `max_weight` > 1 the eps MSE of each sample is weighted by min(1 / alpha_bar_t, max_weight)
    (= 1 + 1/SNR, the weight that turns the eps error into the v-prediction error, capped). The
    plain eps MSE sees an x0 error only through alpha_bar_t / (1 - alpha_bar_t), so at high noise,
    where the caption alone decides an image's low frequencies (a background colour, the content
    an upsampler must take from low_res), it barely trains them; the weight restores that signal.
    `high_noise` draws that fraction of the batch's t from the top 15% of steps instead of all.
    `shift` (like x0) displaces the signal of x_t by shift * min(1, noise-to-signal ratio), and
    the eps target becomes the one that recovers x0 from that x_t: the model learns to undo
    errors of x_t of the size a sampler's earlier steps leave (those at noise level or below).
    """
    n = x0.shape[0]
    t = torch.randint(0, tables.num_steps, (n,), generator=gen)
    if high_noise > 0:
        hi = torch.randint(int(0.85 * tables.num_steps), tables.num_steps, (n,), generator=gen)
        t = torch.where(torch.rand(n, generator=gen) < high_noise, hi, t)
    noise = torch.randn(x0.shape, generator=gen)
    x_t = tables.q_sample(x0, t, noise)
    target = noise
    if shift is not None:
        signal, sd = tables("sqrt_alphas_cumprod", t), tables("sqrt_one_minus_alphas_cumprod", t)
        shift = shift * (sd / signal).clamp(max=1.0)
        x_t = x_t + signal * shift
        target = noise + signal / sd * shift
    out = model(x_t, t, tokens, mask, **model_kwargs)
    eps, v = out[:, :3], out[:, 3:]
    mse = ((eps - target) ** 2).mean(dim=(1, 2, 3))
    weight = (1 / tables("sqrt_alphas_cumprod", t).view(-1) ** 2).clamp(max=max(1.0, max_weight))
    min_log, max_log = tables("posterior_log_variance_clipped", t), tables("log_betas", t)
    frac = (v + 1) / 2
    log_var = frac * max_log + (1 - frac) * min_log
    pred_x0 = tables("sqrt_recip_alphas_cumprod", t) * x_t - tables("sqrt_recipm1_alphas_cumprod", t) * eps.detach()
    c1, c2 = tables("posterior_mean_coef1", t), tables("posterior_mean_coef2", t)
    model_mean, true_mean = c1 * pred_x0 + c2 * x_t, c1 * x0 + c2 * x_t
    kl = normal_kl(true_mean, min_log, model_mean, log_var).mean(dim=(1, 2, 3)) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * log_var).mean(dim=(1, 2, 3)) / math.log(2.0)
    vb = torch.where(t == 0, nll, kl) * (tables.num_steps / 1000.0)
    return (weight * mse + vb).mean(), {"mse": mse.mean().item(), "vb": vb.mean().item()}


# -- training helpers ---------------------------------------------------------------------
def _seed_everything(stage: str) -> torch.Generator:
    offset = STAGES.index(stage)
    torch.manual_seed(SEED + offset)
    return torch.Generator().manual_seed(SEED + 1000 + offset)


def _lr(step: int, total: int, lr: float, warmup: int = 100) -> float:
    """Linear warmup, then cosine decay to 10%."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


class _Log:
    def __init__(self, path: Path):
        self.path, self.rows = path, []

    def add(self, step: int, loss: float, **extra):
        # no wall-clock column: a log is part of what a retrain reproduces (times go to the manifest)
        self.rows.append({"step": step, "loss": round(loss, 6), **{k: round(v, 6) for k, v in extra.items()}})

    def write(self):
        def write_csv(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                fields = list(dict.fromkeys(k for row in self.rows for k in row))
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(self.rows)

        atomic_write_with(self.path, write_csv)


def _loop(
    stage: str,
    model,
    total: int,
    lr: float,
    step_fn,
    log: _Log,
    gen: torch.Generator,
    out: Path,
    ema=None,
    log_every: int = 50,
    save_every: int = 100,
):
    """AdamW with warmup + cosine decay and gradient clipping. Every `save_every` steps the whole
    training state (weights, EMA, optimizer, RNGs, log) goes to `<out>/.resume_<stage>.pt`, and
    an interrupted run continues from there with the same result."""
    from tqdm.auto import tqdm

    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    resume = out / f".resume_{stage}.pt"
    first, running = 0, None
    if resume.is_file():
        state = torch.load(resume, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if ema is not None:
            ema.shadow.load_state_dict(state["ema"])
            ema.n = state["ema_n"]
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        first, running, log.rows = state["step"], state["running"], state["log"]
    bar = tqdm(range(first, total), desc=stage, mininterval=5, initial=first, total=total)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(step, total, lr)
        loss, extra = step_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema is not None:
            ema.update()
        value = loss.item()
        running = value if running is None else 0.98 * running + 0.02 * value
        if step % log_every == 0 or step == total - 1:
            log.add(step, value, running=running, **extra)
            log.write()
            bar.set_postfix(loss=f"{running:.4f}")
        if (step + 1) % save_every == 0 and step + 1 < total:
            state = {
                "step": step + 1,
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "gen": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "running": running,
                "log": log.rows,
                "ema": ema.shadow.state_dict() if ema is not None else None,
                "ema_n": ema.n if ema is not None else 0,
            }
            atomic_write_with(resume, lambda tmp, state=state: torch.save(state, tmp))
    resume.unlink(missing_ok=True)


class EMA:
    """Exponential moving average of parameters (decay ramps up as (1 + n) / (10 + n))."""

    def __init__(self, model: torch.nn.Module, decay: float):
        import copy

        self.model, self.decay, self.n = model, decay, 0
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self):
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for s, p in zip(self.shadow.parameters(), self.model.parameters(), strict=False):
            s.mul_(d).add_(p.detach(), alpha=1 - d)


# -- stages -------------------------------------------------------------------------------
def train_classifier(cfg, out: Path, cache: Path | None) -> dict:
    gen = _seed_everything("classifier")
    images, _, labels = _cached_dataset(cfg["n_train"], "train", 32, cache)
    x_all = to_input(torch.from_numpy(images))
    targets = {
        "category": category_label(torch.from_numpy(labels["shape"]), torch.from_numpy(labels["colour"])),
        **{k: torch.from_numpy(labels[k]) for k in ("count", "size", "background")},
    }
    model = toy_models.build("classifier", cfg["options"]).train()
    log = _Log(out / "train_log_classifier.csv")

    def step(_):
        idx = torch.randint(0, len(x_all), (cfg["batch"],), generator=gen)
        _, logits = model(_augment(x_all[idx], gen))
        losses = {k: F.cross_entropy(logits[k], targets[k][idx]) for k in logits}
        return sum(losses.values()), {f"ce_{k}": v.item() for k, v in losses.items()}

    _loop("classifier", model, cfg["steps"], cfg["lr"], step, log, gen, out)
    model.eval()
    toy_models.save_weights(model, "classifier", cfg["options"], out / toy_models.FILES["classifier"])
    return {"val_accuracy": classifier_accuracy(model)}


@torch.no_grad()
def classifier_accuracy(model, n: int = N_VAL) -> dict:
    images, _, labels = dataset(n, "validation", 32, seed=SEED)
    pred = model.predict(torch.from_numpy(images))
    return {k: float((pred[k].numpy() == labels[k]).mean()) for k in ATTRIBUTES}


def train_clip(cfg, out: Path, cache: Path | None) -> dict:
    gen = _seed_everything("clip")
    images, captions, labels = _cached_dataset(cfg["n_train"], "train", 32, cache)
    x_all = to_input(torch.from_numpy(images))
    tokens, lens = clip_tokenize(captions)
    model = toy_models.build("clip", cfg["options"]).train()
    log = _Log(out / "train_log_clip.csv")

    def step(_):
        idx = torch.randint(0, len(x_all), (cfg["batch"],), generator=gen)
        img = model.image_features(_augment(x_all[idx], gen))
        txt = model.text(tokens[idx], lens[idx])
        return contrastive_loss(img, txt, model.log_scale, _same_scene(labels, idx.numpy())), {}

    _loop("clip", model, cfg["steps"], cfg["lr"], step, log, gen, out)
    model.eval()
    toy_models.save_weights(model, "clip", cfg["options"], out / toy_models.FILES["clip"])
    return {"val_retrieval": retrieval_by_noise(lambda x, t: model.image_features(x), model.text_features, 32)}


# noise levels (of the cosine schedule, 1000 steps) at which `make toy-models` measures both CLIPs' retrieval
RETRIEVAL_TIMESTEPS = (0, 250, 500, 750, 900)


@torch.no_grad()
def retrieval_by_noise(encode_noised, encode_text, size: int, timesteps=RETRIEVAL_TIMESTEPS) -> dict:
    """{"t<T>": clip_retrieval_accuracy of images noised to q(x_T | x_0)} at `size`, the same noise
    (a fixed seed) for every model: encode_noised(x_T, t) -> image embeddings, x_T float in the
    [-1, 1] scale. The clean evaluation CLIP is given x_T as an image; the noised CLIP also gets t.
    Printed as a table by `glide-eval toy-models` (the log shows why guidance needs the noised one)."""
    tables = DiffusionTables("squaredcos_cap_v2")
    out = {}
    for t in timesteps:
        gen = torch.Generator().manual_seed(SEED + t)

        def encode(u8, t=t, gen=gen):
            x0 = _images_at(u8.numpy(), size)
            tt = torch.full((len(x0),), t, dtype=torch.long)
            return encode_noised(tables.q_sample(x0, tt, torch.randn(x0.shape, generator=gen)), tt)

        out[f"t{t}"] = clip_retrieval_accuracy(encode, encode_text)
    return out


def retrieval_table(stage: str, by_noise: dict) -> str:
    """The log's lines of `retrieval_by_noise`: one per noise level, with sqrt(alpha_bar) (the signal left)."""
    tables = DiffusionTables("squaredcos_cap_v2")
    lines = [f"{stage}: caption retrieval (top-1 of {N_VAL} validation images in blocks of 100) on noised images"]
    for key, r in by_noise.items():
        signal = float(tables.t["sqrt_alphas_cumprod"][int(key[1:])])
        lines.append(f"  {key:>5}  signal {signal:.3f}  top1 {r['top1']:.3f}  (chance {r['chance']:.3f})")
    return "\n".join(lines)


@torch.no_grad()
def clip_retrieval_accuracy(encode_images, encode_text, n: int = N_VAL, block: int = 100) -> dict:
    """Image -> caption top-1 retrieval within blocks of `block` validation pairs; a hit is a
    caption naming exactly the image's attributes. Also returns the chance rate of a random pick."""
    images, captions, labels = dataset(n, "validation", 32, seed=SEED)
    hits, chance = [], []
    for s in range(0, n, block):
        idx = np.arange(s, min(n, s + block))
        img = F.normalize(encode_images(torch.from_numpy(images[idx])), dim=-1)
        txt = F.normalize(encode_text([captions[i] for i in idx]), dim=-1)
        same = _same_scene(labels, idx)
        best = (img @ txt.t()).argmax(1)
        hits.append(same[torch.arange(len(idx)), best].float())
        chance.append(same.float().mean(1))
    return {"top1": float(torch.cat(hits).mean()), "chance": float(torch.cat(chance).mean())}


def _text_inputs(captions, p_uncond: float, idx, gen, text_ctx):
    caps = [captions[i] for i in idx.tolist()]
    drop = torch.rand(len(caps), generator=gen) < p_uncond
    caps = ["" if d else c for c, d in zip(caps, drop.tolist(), strict=False)]
    return glide_tokenize(caps, text_ctx)


def _zero_output(model):
    with torch.no_grad():
        model.out[-1].weight.zero_()
        model.out[-1].bias.zero_()


def options_size(cfg) -> int:
    return int(cfg["options"]["image_size"])


def _images_at(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 renders -> float [-1, 1] at `size` (area downsampling of the 32x32 renders)."""
    x = torch.from_numpy(images).float() / 127.5 - 1
    return x if x.shape[-1] == size else F.avg_pool2d(x, x.shape[-1] // size)


def train_base(cfg, out: Path, cache: Path | None) -> dict:
    gen = _seed_everything("base")
    images, captions, _ = _cached_dataset(cfg["n_train"], "train", 32, cache)
    x_all = _images_at(images, options_size(cfg))
    options = cfg["options"]
    # NCHW: at this width CPU training steps are faster than in the UNet's default channels-last
    # (batch 64, 1 thread: 0.42 vs 0.57 s alone, 0.47 vs 0.52 s beside another training job;
    # the upsampler, batch 32: 0.81 vs 1.04 s, each beside the other)
    model = toy_models.build("base", options).use_channels_last(False).train()
    _zero_output(model)
    ema = EMA(model, cfg["ema"])
    tables = DiffusionTables(options["noise_schedule"])
    log = _Log(out / "train_log_base.csv")

    def step(_):
        idx = torch.randint(0, len(x_all), (cfg["batch"],), generator=gen)
        tokens, mask = _text_inputs(captions, cfg["p_uncond"], idx, gen, options["text_ctx"])
        return hybrid_loss(model, tables, x_all[idx], tokens, mask, gen, cfg["max_weight"], cfg["high_noise"])

    _loop("base", model, cfg["steps"], cfg["lr"], step, log, gen, out, ema=ema)
    toy_models.save_weights(ema.shadow, "base", options, out / toy_models.FILES["base"])
    return {"final_loss": log.rows[-1]["running"], "val_loss": _val_diffusion_loss(ema.shadow, tables, options)}


@torch.no_grad()
def _val_diffusion_loss(model, tables, options, n: int = 256, low_res: bool = False) -> dict:
    gen = torch.Generator().manual_seed(12345)
    size = options["image_size"]
    images, captions, _ = dataset(n, "validation", 32, seed=SEED)
    x0 = _images_at(images, size)
    tokens, mask = glide_tokenize(captions, options["text_ctx"])
    totals = {"mse": 0.0, "vb": 0.0}
    for s in range(0, n, 64):
        kw = {"low_res": _low_res(x0[s : s + 64])} if low_res else {}
        _, parts = hybrid_loss(model, tables, x0[s : s + 64], tokens[s : s + 64], mask[s : s + 64], gen, **kw)
        for k in totals:
            totals[k] += parts[k] * len(x0[s : s + 64]) / n
    return totals


def _low_res(x: torch.Tensor) -> torch.Tensor:
    """The upsampler's input: x at the base resolution, rounded to 8 bits (as in sampling)."""
    return quantize_low_res(F.avg_pool2d(x, x.shape[-1] // toy_models.BASE_OPTIONS["image_size"]))


def train_noised_clip(cfg, out: Path, cache: Path | None) -> dict:
    gen = _seed_everything("noised_clip")
    images, captions, labels = _cached_dataset(cfg["n_train"], "train", 32, cache)
    config = cfg["options"]
    x_all = _images_at(images, config["image_size"])
    tokens, lens = clip_tokenize(captions)
    model = toy_models.build("noised_clip", config).train()
    tables = DiffusionTables(config["beta_schedule"], config["n_timesteps"])
    log_scale = torch.tensor(math.log(config["logit_scale"]))
    log = _Log(out / "train_log_noised_clip.csv")

    def step(_):
        idx = torch.randint(0, len(x_all), (cfg["batch"],), generator=gen)
        t = torch.randint(0, tables.num_steps, (len(idx),), generator=gen)
        x_t = tables.q_sample(x_all[idx], t, torch.randn(x_all[idx].shape, generator=gen))
        img = model.image_embeddings(x_t, t)
        txt = model.text_embeddings(tokens[idx], lens[idx])
        return contrastive_loss(img, txt, log_scale, _same_scene(labels, idx.numpy())), {}

    _loop("noised_clip", model, cfg["steps"], cfg["lr"], step, log, gen, out)
    model.eval()
    toy_models.save_weights(model, "noised_clip", config, out / toy_models.FILES["noised_clip"])

    def text(caps):
        tok, ln = clip_tokenize(caps)
        return model.text_embeddings(tok, ln)

    return {"val_retrieval": retrieval_by_noise(model.image_embeddings, text, config["image_size"])}


def _coarse(x: torch.Tensor) -> torch.Tensor:
    """x's content at the base resolution, shown at x's size (what low_res tells the upsampler)."""
    factor = x.shape[-1] // toy_models.BASE_OPTIONS["image_size"]
    return F.interpolate(F.avg_pool2d(x, factor), scale_factor=factor, mode="nearest")


def _upsampler_shift(x0: torch.Tensor, x_all: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Displacements of x_t's signal (see `hybrid_loss`) for a fraction p of the batch: half of
    them swap x0's coarse content for another scene's, half replace x0 by saturated noise (what a
    sampler's first steps leave, where the model's x0 is amplified eps error). Without them the
    model reads the coarse image off x_t (the toy scenes' flat backgrounds make that easy),
    ignores low_res, and its samples keep the colours of their first steps."""
    n = x0.shape[0]
    other = x_all[torch.randint(0, len(x_all), (n,), generator=gen)]
    coarse = _coarse(other) - _coarse(x0)
    garbage = (x0 + 3 * torch.randn(x0.shape, generator=gen)).clamp(-1, 1) - x0
    u = torch.rand(n, 1, 1, 1, generator=gen)
    return torch.where(u < p / 2, coarse, torch.where(u < p, garbage, torch.zeros_like(x0)))


def train_upsample(cfg, out: Path, cache: Path | None) -> dict:
    gen = _seed_everything("upsample")
    images, captions, _ = _cached_dataset(cfg["n_train"], "train", options_size(cfg), cache)
    x_all = torch.from_numpy(images).float() / 127.5 - 1
    options = cfg["options"]
    model = toy_models.build("upsample", options).use_channels_last(False).train()  # NCHW, as train_base
    _zero_output(model)
    ema = EMA(model, cfg["ema"])
    tables = DiffusionTables(options["noise_schedule"])
    log = _Log(out / "train_log_upsample.csv")

    def step(_):
        idx = torch.randint(0, len(x_all), (cfg["batch"],), generator=gen)
        tokens, mask = glide_tokenize([captions[i] for i in idx.tolist()], options["text_ctx"])
        x0 = x_all[idx]
        return hybrid_loss(
            model,
            tables,
            x0,
            tokens,
            mask,
            gen,
            cfg["max_weight"],
            cfg["high_noise"],
            shift=_upsampler_shift(x0, x_all, cfg["shift"], gen),
            low_res=_low_res(x0),
        )

    _loop("upsample", model, cfg["steps"], cfg["lr"], step, log, gen, out, ema=ema)
    toy_models.save_weights(ema.shadow, "upsample", options, out / toy_models.FILES["upsample"])
    return {
        "final_loss": log.rows[-1]["running"],
        "val_loss": _val_diffusion_loss(ema.shadow, tables, options, n=64, low_res=True),
    }


TRAINERS = {
    "classifier": train_classifier,
    "clip": train_clip,
    "base": train_base,
    "noised_clip": train_noised_clip,
    "upsample": train_upsample,
}


# -- manifest -----------------------------------------------------------------------------
def versions() -> dict:
    return package_versions(("glide-eval", "torch", "numpy"))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else `platform.processor()` ("" if unknown)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cpu_record() -> dict:
    """What this process trains on: torch's CPU kernel level (float results, hence weight bits,
    differ between levels from the first step on), the kernel pins in its environment, the
    architecture and the CPU model."""
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "pins": {k: os.environ[k] for k in PIN_VARIABLES if k in os.environ},
        "machine": platform.machine(),
        "model": cpu_model(),
    }


def update_manifest(out: Path, stage: str, metrics: dict, seconds: float, threads: int, cfg: dict) -> None:
    """Record one stage's file (sha256, size), config, metrics, time and machine in manifest.json (atomic)."""
    path = out / "manifest.json"
    key = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"glide-eval-toy-{key}.lock", "w") as lock:  # parallel stages
        fcntl.flock(lock, fcntl.LOCK_EX)
        _update_manifest_locked(path, out, stage, metrics, seconds, threads, cfg)


def _update_manifest_locked(
    path: Path, out: Path, stage: str, metrics: dict, seconds: float, threads: int, cfg: dict
) -> None:
    manifest = json.loads(path.read_text()) if path.is_file() else {"seed": SEED, "files": {}}
    weight = out / toy_models.FILES[stage]
    manifest["files"][toy_models.FILES[stage]] = {
        "stage": stage,
        "sha256": sha256_file(weight),
        "bytes": weight.stat().st_size,
        "config": cfg,
        "metrics": metrics,
        "train_seconds": round(seconds, 1),
        "threads": threads,
        "cpu": cpu_record(),
        "log": f"train_log_{stage}.csv",
        "versions": versions(),
    }
    manifest["seed"] = SEED
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _train_stage(stage: str, cfg: dict, out: Path, threads: int, cache: Path | None) -> dict:
    """Train one stage in this process (`train` runs it in a worker with pinned kernels)."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    start = time.time()
    metrics = TRAINERS[stage](cfg, out, cache)
    seconds = time.time() - start
    update_manifest(out, stage, metrics, seconds, threads, cfg)
    print(f"{stage}: {seconds:.0f} s, {json.dumps(metrics)}", file=sys.stderr)
    if "val_retrieval" in metrics:
        print(retrieval_table(stage, metrics["val_retrieval"]), file=sys.stderr)
    return {"metrics": metrics, "seconds": round(seconds, 1)}


# -- worker processes with pinned CPU kernels ----------------------------------------------
# torch, oneDNN and MKL pick their kernels by the CPU's instruction set, so an AVX512 machine
# trains other bits than an AVX2 one. A worker's environment caps all three at one level before
# torch starts: AVX2 on every x86-64 CPU that has it, else the portable baseline.
PIN_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")
X86 = ("x86_64", "amd64", "i386", "i686")


def kernel_pins(machine: str | None = None, avx2: bool | None = None) -> dict:
    """The environment variables that pin a training worker's CPU kernels on `machine`
    (platform.machine(); `avx2`: whether the CPU has AVX2, asked of torch's cpuinfo when None).
    Empty on other architectures: their kernels are left as torch picks them."""
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in X86:
        return {}
    if avx2 is None:
        avx2 = torch.cpu._is_avx2_supported()
    if avx2:
        return {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
    return {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"}


def worker_env(pins: dict) -> dict:
    """This process's environment with `pins` in place of any inherited kernel settings, and this
    checkout first on PYTHONPATH (the worker runs the same code)."""
    env = {k: v for k, v in os.environ.items() if k not in PIN_VARIABLES}
    env.update(pins)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, env["PYTHONPATH"]] if env.get("PYTHONPATH") else [root])
    return env


def _run_worker(stage: str, cfg: dict, out: Path, threads: int, cache: Path | None) -> dict:
    """`_train_stage` in a fresh Python process whose environment pins the CPU kernels."""
    pins = kernel_pins()
    with tempfile.TemporaryDirectory(prefix="glide-eval-toy-worker-") as tmp:
        result = Path(tmp) / "result.pkl"
        job = dict(stage=stage, cfg=cfg, out=out, threads=threads, cache=cache, pins=pins, result=result)
        code = "from glide_eval.toy.train import _worker_main; _worker_main()"
        done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(job), env=worker_env(pins))
        if done.returncode != 0:
            raise RuntimeError(f"toy stage {stage!r}: its training process failed (exit {done.returncode}, see above)")
        return pickle.loads(result.read_bytes())


def _worker_main() -> None:
    """Entry of a worker: read the job (pickle on stdin), check that the kernel pin took, train."""
    job = pickle.load(sys.stdin.buffer)
    pinned = job["pins"].get("ATEN_CPU_CAPABILITY")
    capability = torch.backends.cpu.get_cpu_capability()
    if pinned and capability != pinned.upper():
        raise RuntimeError(f"ATEN_CPU_CAPABILITY={pinned} did not take: torch runs {capability} kernels")
    result = _train_stage(job["stage"], job["cfg"], job["out"], job["threads"], job["cache"])
    job["result"].write_bytes(pickle.dumps(result))


def train(out, stages=STAGES, threads: int = 2, cache_dir=None, jobs: int = 1) -> dict:
    """Train `stages` into `out`, each in a worker process with pinned CPU kernels (`kernel_pins`).
    With jobs > 1 that many workers of `threads` threads each run at once, longest first (on a
    small CPU two 1-thread workers beat one 2-thread process: these models are too small to keep
    two threads busy)."""
    _check_stages(stages)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir else None
    order = sorted(stages, key=LONGEST_FIRST.index)
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        pending = {s: pool.submit(_run_worker, s, CONFIG[s], out, threads, cache) for s in order}
        return {s: pending[s].result() for s in stages}


def _check_stages(stages) -> None:
    for stage in stages:
        if stage not in TRAINERS:
            raise ValueError(f"unknown stage {stage!r}; expected some of {', '.join(STAGES)}")


# -- verify -------------------------------------------------------------------------------
def verify(out, stages=STAGES, threads: int = 2, cache_dir=None, jobs: int = 1) -> dict:
    """Retrain `stages` into a temporary folder and compare each weight file with the one in `out`
    (which its manifest.json lists): {stage: {"equal", "shipped_sha256", "rebuilt_sha256",
    "manifest_sha256", "max_abs_diff" (largest parameter difference; 0.0 when equal, None when
    the parameter names or shapes differ), "same_config", "shipped_cpu", "rebuilt_cpu"}}."""
    out = Path(out)
    _check_stages(stages)
    path = out / "manifest.json"
    if not path.is_file():
        raise ValueError(f"{path}: no manifest to verify against")
    try:
        shipped = json.loads(path.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a toy-models manifest ({e!r})") from None
    for stage in stages:
        name = toy_models.FILES[stage]
        if name not in shipped:
            raise ValueError(f"{path}: no entry for {name} (stage {stage!r})")
        if not (out / name).is_file():
            raise ValueError(f"{out / name}: missing (listed in {path})")
    with tempfile.TemporaryDirectory(prefix="glide-eval-toy-verify-") as tmp:
        train(tmp, stages, threads, cache_dir, jobs)
        rebuilt = json.loads((Path(tmp) / "manifest.json").read_text())["files"]
        return {stage: _compare(out, Path(tmp), toy_models.FILES[stage], shipped, rebuilt) for stage in stages}


def _compare(out: Path, rebuilt_dir: Path, name: str, shipped: dict, rebuilt: dict) -> dict:
    a, b = sha256_file(out / name), rebuilt[name]["sha256"]
    return {
        "equal": a == b,
        "shipped_sha256": a,
        "rebuilt_sha256": b,
        "manifest_sha256": shipped[name]["sha256"],
        "max_abs_diff": 0.0 if a == b else max_abs_diff(out / name, rebuilt_dir / name),
        "same_config": shipped[name]["config"] == rebuilt[name]["config"],
        "shipped_cpu": shipped[name].get("cpu"),
        "rebuilt_cpu": rebuilt[name]["cpu"],
    }


def max_abs_diff(path_a: Path, path_b: Path) -> float | None:
    """The largest |a - b| over the parameters of two weight files (None if names or shapes differ)."""
    a = torch.load(path_a, map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(path_b, map_location="cpu", weights_only=True)["state_dict"]
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return None
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()), default=0.0)

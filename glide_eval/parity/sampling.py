"""Fixture checks for schedules, respacing and sampling loops (see glide_eval.parity.core).

Everything (configs, respacing, guidance scales, temperatures, noise) is read from the
fixture files, so the checks also run on fixtures made the same way with other settings.
Loop runs compare our trajectory and x0 predictions with the reference at EVERY step and
report the worst step.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from glide_eval.parity.core import LOOP_TOL, MODULE_TOL, CaseResult, compare, fixture_check, rel_error
from samplers.diffusion import Diffusion
from samplers.guidance import classifier_free_model_fn, clip_cond_fn, conditional_model_fn
from samplers.inpaint import inpaint_model_kwargs, known_region_denoised_fn
from samplers.model_configs import create_model, create_noised_clip
from samplers.noise import TapeNoise
from samplers.pipeline import quantize_low_res
from samplers.sampling import Recorder, p_mean_variance, sample_ancestral, sample_ddim
from samplers.schedules import named_betas, space_timesteps

SAMPLERS_FILE = "samplers.pt"


@fixture_check("schedules.json")
def check_schedules(path: Path) -> list[CaseResult]:
    data = json.loads(Path(path).read_text())
    results = []
    num_steps = {}
    for key, expected in data.items():
        if key.startswith("betas/"):
            name = key[len("betas/") :]
            num_steps[name] = len(expected)
            results.append(
                compare(
                    path.name,
                    key,
                    torch.from_numpy(named_betas(name, len(expected))),
                    torch.tensor(expected, dtype=torch.float64),
                    MODULE_TOL,
                )
            )
    total = max(num_steps.values(), default=1000)
    for key, expected in data.items():
        if key.startswith("respace/"):
            spec = key[len("respace/") :]
            ours = space_timesteps(total, spec)
            same = ours == list(expected)
            results.append(
                CaseResult(
                    path.name,
                    key,
                    0.0 if same else 1.0,
                    0.0,
                    same,
                    "" if same else f"ours {ours[:8]}... != {list(expected)[:8]}...",
                )
            )
    return results


# -- models from the fixture directory ----------------------------------------------------


def _load_unet(directory: Path, filename: str):
    blob = torch.load(directory / filename, weights_only=False)
    model = create_model({**blob["config"], "n_vocab": blob["n_vocab"]})
    model.load_state_dict(blob["state_dict"])
    return model.eval(), int(blob["n_vocab"])


def _load_clip(directory: Path):
    blob = torch.load(directory / "noised_clip.pt", weights_only=False)
    clip = create_noised_clip(blob["config"])
    clip.text_encoder.load_state_dict(blob["text_state_dict"])
    clip.image_encoder.load_state_dict(blob["image_state_dict"])
    return clip.eval()


def _schedule(run: dict, default: str) -> Diffusion:
    return Diffusion.spaced(run.get("noise_schedule", default), run["respacing"], run.get("num_timesteps", 1000))


def _compare_loop(file: str, name: str, recorder: Recorder, run: dict, samples: torch.Tensor) -> list[CaseResult]:
    """Per-step comparison of trajectory and pred_xstart on our rows (max over steps)."""
    results = []
    n = samples.shape[0]
    for key, ours in (("trajectory", recorder.trajectory), ("pred_xstart", recorder.pred_xstart)):
        expected = run[key]
        if len(ours) != len(expected):
            results.append(
                CaseResult(
                    file, f"{name}/{key}", float("inf"), LOOP_TOL, False, f"{len(ours)} steps, expected {len(expected)}"
                )
            )
            continue
        errors = [rel_error(a, e[:n]) for a, e in zip(ours, expected, strict=False)]
        worst = int(np.argmax(errors))
        results.append(
            CaseResult(
                file,
                f"{name}/{key}",
                errors[worst],
                LOOP_TOL,
                errors[worst] <= LOOP_TOL,
                f"max over {len(errors)} steps at step {worst}",
            )
        )
    results.append(compare(file, f"{name}/samples", samples, run["samples"][:n], LOOP_TOL))
    return results


def _cfg_fn(model, run: dict, **model_kwargs):
    return classifier_free_model_fn(
        model,
        run["tokens"],
        run["mask"],
        run["uncond_tokens"],
        run["uncond_mask"],
        float(run["guidance_scale"]),
        **model_kwargs,
    )


def _run_cfg_p_sample_loop(directory, run, file):
    model, _ = _load_unet(directory, "unet_base.pt")
    n = run["tokens"].shape[0]
    noise = TapeNoise(run["noise_tape"], rows=slice(0, n))
    x = noise.initial(run["noise_tape"][0][:n].shape)
    recorder = Recorder()
    samples = sample_ancestral(
        _cfg_fn(model, run), x, _schedule(run, "squaredcos_cap_v2"), noise=noise, clip_denoised=True, callback=recorder
    )
    return _compare_loop(file, "cfg_p_sample_loop", recorder, run, samples)


def _run_cfg_p_mean_variance(directory, run, file):
    model, _ = _load_unet(directory, "unet_base.pt")
    n = run["x_t"].shape[0] // 2  # the reference's doubled batch: rows [:n] captions, [n:] empty captions
    tokens, mask = run["tokens"], run["mask"]
    fn = classifier_free_model_fn(model, tokens[:n], mask[:n], tokens[n:], mask[n:], float(run["guidance_scale"]))
    out = p_mean_variance(
        fn, run["x_t"][:n], _schedule(run, "squaredcos_cap_v2"), int(run["t_index"]), clip_denoised=True
    )
    detail = f"rows [:{n}] (our single copy of x)"
    return [
        compare(file, f"cfg_p_mean_variance/{key}", out[key], run[key][:n], MODULE_TOL, detail)
        for key in ("mean", "variance", "log_variance", "pred_xstart")
    ]


def _run_ddim_conditional(directory, run, file):
    model, _ = _load_unet(directory, "unet_base.pt")
    recorder = Recorder()
    samples = sample_ddim(
        conditional_model_fn(model, run["tokens"], run["mask"]),
        run["noise"].clone(),
        _schedule(run, "squaredcos_cap_v2"),
        eta=float(run.get("eta", 0.0)),
        callback=recorder,
    )
    return _compare_loop(file, "ddim_conditional", recorder, run, samples)


def _run_clip_guided(directory, run, file):
    model, _ = _load_unet(directory, "unet_base.pt")
    clip = _load_clip(directory)
    noise = TapeNoise(run["noise_tape"])
    x = noise.initial(run["noise_tape"][0].shape)
    cond_fn = clip_cond_fn(clip, run["clip_text_tokens"], run["clip_text_lens"], float(run["clip_guidance_scale"]))
    recorder = Recorder()
    samples = sample_ancestral(
        conditional_model_fn(model, run["tokens"], run["mask"]),
        x,
        _schedule(run, "squaredcos_cap_v2"),
        noise=noise,
        cond_fn=cond_fn,
        clip_denoised=True,
        callback=recorder,
    )
    return _compare_loop(file, "clip_guided_p_sample_loop", recorder, run, samples)


def _run_cfg_inpaint(directory, run, file):
    model, n_vocab = _load_unet(directory, "unet_inpaint.pt")
    n = run["tokens"].shape[0]
    image, mask = run["image"], run["inpaint_mask"]
    image, mask = image.expand(n, *image.shape[1:]), mask.expand(n, *mask.shape[1:])
    if "uncond_tokens" in run:
        uncond_tokens, uncond_mask = run["uncond_tokens"], run["uncond_mask"]
    else:  # the empty caption: all end tokens (n_vocab - 1), nothing attended
        uncond_tokens, uncond_mask = torch.full_like(run["tokens"], n_vocab - 1), torch.zeros_like(run["mask"])
    fn = classifier_free_model_fn(
        model,
        run["tokens"],
        run["mask"],
        uncond_tokens,
        uncond_mask,
        float(run["guidance_scale"]),
        **inpaint_model_kwargs(image, mask),
    )
    noise = TapeNoise(run["noise_tape"], rows=slice(0, n))
    x = noise.initial(run["noise_tape"][0][:n].shape)
    recorder = Recorder()
    samples = sample_ancestral(
        fn,
        x,
        _schedule(run, "squaredcos_cap_v2"),
        noise=noise,
        clip_denoised=True,
        denoised_fn=known_region_denoised_fn(image, mask),
        callback=recorder,
    )
    return _compare_loop(file, "cfg_inpaint_p_sample_loop", recorder, run, samples)


def _run_upsample(directory, run, file):
    model, _ = _load_unet(directory, "unet_upsample.pt")
    results = [
        compare(file, "upsample_fast27_ddim/low_res", quantize_low_res(run["low_res_raw"]), run["low_res"], MODULE_TOL)
    ]
    fn = conditional_model_fn(model, run["tokens"], run["mask"], low_res=quantize_low_res(run["low_res_raw"]))
    recorder = Recorder()
    x = run["unit_noise"] * float(run["upsample_temp"])
    samples = sample_ddim(fn, x, _schedule(run, "linear"), eta=float(run.get("eta", 0.0)), callback=recorder)
    return results + _compare_loop(file, "upsample_fast27_ddim", recorder, run, samples)


RUNS = {
    "cfg_p_sample_loop": _run_cfg_p_sample_loop,
    "cfg_p_mean_variance": _run_cfg_p_mean_variance,
    "ddim_conditional": _run_ddim_conditional,
    "clip_guided_p_sample_loop": _run_clip_guided,
    "cfg_inpaint_p_sample_loop": _run_cfg_inpaint,
    "upsample_fast27_ddim": _run_upsample,
}


@fixture_check(SAMPLERS_FILE)
def check_samplers(path: Path) -> list[CaseResult]:
    runs = torch.load(path, weights_only=False)
    results = []
    torch.manual_seed(0)
    for name, run in runs.items():
        check = RUNS.get(name)
        if check is None:
            results.append(CaseResult(path.name, name, float("inf"), LOOP_TOL, False, "unknown run: no check for it"))
            continue
        results.extend(check(path.parent, run, path.name))
    return results

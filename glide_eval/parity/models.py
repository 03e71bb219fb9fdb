"""Fixture checks for the models, the noised CLIP and the tokenizers (see glide_eval.parity.core).

Everything a check builds comes from its fixture file (configs, vocab sizes, shapes), so the
same checks run on fixtures made with other shapes, scales and seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from glide_eval.parity.core import MODULE_TOL, CaseResult, compare, fixture_check
from samplers.model_configs import (
    OFFICIAL_FILES,
    create_model,
    create_noised_clip,
    official_clip_config,
    official_options,
)
from samplers.tokenizers import clip_tokenize, glide_tokenize

UNET_FIXTURES = ("unet_base.pt", "unet_upsample.pt", "unet_inpaint.pt", "unet_upsample-inpaint.pt")
UNET_CONDITIONING = ("low_res", "inpaint_image", "inpaint_mask")


def _exact(file: str, case: str, n_wrong: int, n_total: int, detail: str = "") -> CaseResult:
    """An exact-match case: rel_error is the fraction of mismatching items (tolerance 0)."""
    error = n_wrong / n_total if n_total else 0.0
    return CaseResult(file, case, error, 0.0, n_wrong == 0, detail)


def load_unet_fixture(path: Path):
    """(model with the fixture's weights, fixture dict)."""
    blob = torch.load(path, weights_only=False)
    model = create_model({**blob["config"], "n_vocab": blob["n_vocab"]})
    model.load_state_dict(blob["state_dict"], strict=True)
    return model, blob


def run_unet_fixture(model, blob) -> torch.Tensor:
    inputs = blob["inputs"]
    extra = {k: inputs[k] for k in UNET_CONDITIONING if k in inputs}
    with torch.no_grad():
        return model(inputs["x"], inputs["timesteps"], inputs["tokens"], inputs["mask"], **extra)


def _unet_check(path: Path) -> list[CaseResult]:
    model, blob = load_unet_fixture(path)
    results = [
        compare(
            path.name, "output", run_unet_fixture(model, blob), blob["output"], MODULE_TOL, f"kind={blob.get('kind')}"
        )
    ]
    inputs = blob["inputs"]
    extra = {k: inputs[k] for k in UNET_CONDITIONING if k in inputs}
    with torch.no_grad():  # the same output from a text embedding computed beforehand
        text = model.encode_text(inputs["tokens"], inputs["mask"])
        cached = model(inputs["x"], inputs["timesteps"], text=text, **extra)
    results.append(compare(path.name, "output (encode_text reused)", cached, blob["output"], MODULE_TOL))
    return results


for _name in UNET_FIXTURES:
    fixture_check(_name)(_unet_check)


def load_clip_fixture(path: Path):
    blob = torch.load(path, weights_only=False)
    clip = create_noised_clip(blob["config"])
    clip.text_encoder.load_state_dict(blob["text_state_dict"], strict=True)
    clip.image_encoder.load_state_dict(blob["image_state_dict"], strict=True)
    return clip, blob


@fixture_check("noised_clip.pt")
def check_noised_clip(path: Path) -> list[CaseResult]:
    clip, blob = load_clip_fixture(path)
    inputs, outputs = blob["inputs"], blob["outputs"]
    with torch.no_grad():
        text = clip.text_embeddings(inputs["text_tokens"], inputs["text_lens"])
        image = clip.image_embeddings(inputs["images"], inputs["timesteps"])
    grad = clip.guidance_grad(inputs["images"], inputs["timesteps"], text, inputs["grad_scale"])
    return [
        compare(path.name, "text_features", text, outputs["text_features"], MODULE_TOL),
        compare(path.name, "image_features", image, outputs["image_features"], MODULE_TOL),
        compare(path.name, "cond_fn_grad", grad, outputs["cond_fn_grad"], MODULE_TOL),
    ]


@fixture_check("tokenizers.json")
def check_tokenizers(path: Path) -> list[CaseResult]:
    fixture = json.loads(path.read_text())
    rows = fixture["rows"]
    captions = [row["caption"] for row in rows]
    try:
        tokens, mask = glide_tokenize(captions, text_ctx=len(rows[0]["glide_padded_128"]))
        clip_tokens, clip_lens = clip_tokenize(captions)
    except Exception as error:  # e.g. BPE files unavailable offline
        return [CaseResult(path.name, "tokenizers load", 1.0, 0.0, False, f"{type(error).__name__}: {error}")]
    checks = {
        "glide tokens (padded)": (tokens.tolist(), [r["glide_padded_128"] for r in rows]),
        "glide mask": (mask.tolist(), [r["glide_mask_128"] for r in rows]),
        "clip tokens (padded)": (clip_tokens.tolist(), [r["clip_padded_77"] for r in rows]),
        "clip lens": (clip_lens.tolist(), [r["clip_len"] for r in rows]),
    }
    results = []
    for case, (ours, expected) in checks.items():
        wrong = [captions[i] for i, (a, b) in enumerate(zip(ours, expected, strict=False)) if a != b]
        results.append(
            _exact(
                path.name,
                case,
                len(wrong),
                len(rows),
                f"first mismatch: {wrong[0]!r}" if wrong else f"{len(rows)} captions",
            )
        )
    return results


def _manifest_module(name: str, entry: dict):
    with torch.device("meta"):
        if name.startswith("clip/"):
            clip = create_noised_clip(entry["config"])
            return clip.image_encoder if name == "clip/image-enc" else clip.text_encoder
        return create_model(entry["options"])


@fixture_check("checkpoint_manifests.json")
def check_checkpoint_manifests(path: Path) -> list[CaseResult]:
    manifest = json.loads(path.read_text())
    results = []
    for name, entry in manifest.items():
        module = _manifest_module(name, entry)
        ours = {k: list(v.shape) for k, v in module.state_dict().items()}
        expected = {k: list(shape) for k, shape in entry["state_dict"]}
        missing = sorted(set(expected) - set(ours))
        unexpected = sorted(set(ours) - set(expected))
        shapes = sorted(k for k in set(ours) & set(expected) if ours[k] != expected[k])
        n_params = sum(p.numel() for p in module.parameters())
        ok = not (missing or unexpected or shapes) and n_params == entry["n_params"]
        detail = (
            (
                f"missing={missing[:3]} unexpected={unexpected[:3]} shapes={shapes[:3]} "
                f"n_params={n_params} expected={entry['n_params']}"
            )
            if not ok
            else f"{len(ours)} keys, {n_params} params"
        )
        results.append(CaseResult(path.name, f"{name} keys/shapes", 0.0 if ok else 1.0, 0.0, ok, detail))
        if name not in OFFICIAL_FILES:
            continue
        official = official_clip_config() if name.startswith("clip/") else official_options(name)
        given = entry["config"] if name.startswith("clip/") else entry["options"]
        diff = sorted(k for k in set(official) | set(given) if official.get(k) != given.get(k))
        results.append(
            CaseResult(
                path.name,
                f"{name} official config",
                1.0 if diff else 0.0,
                0.0,
                not diff,
                f"differs in {diff}" if diff else "",
            )
        )
    return results


@fixture_check("cases.json")
def check_cases(path: Path) -> list[CaseResult]:
    cases = json.loads(path.read_text())
    results = []
    for stem, expected in cases.items():
        unet_path = path.parent / f"{stem}.pt"
        if not unet_path.exists():
            results.append(CaseResult(path.name, stem, 1.0, 0.0, False, f"{unet_path.name} not found"))
            continue
        model, blob = load_unet_fixture(unet_path)
        n_params = sum(p.numel() for p in model.parameters())
        shape = list(run_unet_fixture(model, blob).shape)
        results.append(
            _exact(
                path.name,
                f"{stem} params",
                int(n_params != expected["params"]),
                1,
                f"{n_params} vs {expected['params']}",
            )
        )
        results.append(
            _exact(
                path.name,
                f"{stem} output shape",
                int(shape != expected["output_shape"]),
                1,
                f"{shape} vs {expected['output_shape']}",
            )
        )
    return results

"""Our loops with the real (tiny) models reproduce the reference GLIDE runs in samplers.pt."""

import pytest
import torch

from glide_eval.parity.core import LOOP_TOL, rel_error
from glide_eval.parity.sampling import RUNS, _load_clip, check_samplers, check_schedules
from samplers.guidance import clip_cond_fn

pytestmark = pytest.mark.usefixtures("one_thread")


def test_schedules_fixture_passes(golden_dir):
    results = check_schedules(golden_dir / "schedules.json")
    assert len(results) == 9 and all(r.passed for r in results), [r for r in results if not r.passed]


def test_every_sampling_run_matches_reference_at_every_step(golden_dir):
    runs = torch.load(golden_dir / "samplers.pt", weights_only=False)
    assert set(runs) <= set(RUNS)
    results = check_samplers(golden_dir / "samplers.pt")
    failed = [r for r in results if not r.passed]
    assert not failed, failed
    checked = {r.case.split("/")[0] for r in results}
    assert checked == set(runs)
    assert all(r.rel_error <= LOOP_TOL for r in results if r.case.endswith("/trajectory"))


def test_clip_cond_fn_matches_reference_gradient(golden_dir):
    blob = torch.load(golden_dir / "noised_clip.pt", weights_only=False)
    clip = _load_clip(golden_dir)
    inputs = blob["inputs"]
    cond_fn = clip_cond_fn(clip, inputs["text_tokens"], inputs["text_lens"], float(inputs["grad_scale"]))
    grad = cond_fn(inputs["images"], inputs["timesteps"])
    assert rel_error(grad, blob["outputs"]["cond_fn_grad"]) < 1e-4


def test_a_wrong_timestep_map_is_caught(golden_dir, monkeypatch):
    """The checks are not vacuous: feeding the model spaced instead of original timesteps fails them."""
    from samplers.diffusion import Diffusion

    monkeypatch.setattr(
        Diffusion,
        "original_timesteps",
        lambda self, i, batch, device: torch.full((batch,), i, dtype=torch.long, device=device),
    )
    runs = torch.load(golden_dir / "samplers.pt", weights_only=False)
    results = RUNS["ddim_conditional"](golden_dir, runs["ddim_conditional"], "samplers.pt")
    assert not all(r.passed for r in results)


def test_sample_images_with_real_unet_is_batch_invariant(golden_dir):
    """The fixture's tiny GLIDE UNet through sample_images: a sample does not depend on its batch."""
    from glide_eval.parity.sampling import _load_unet
    from samplers.pipeline import GlideModels, sample_images

    model, n_vocab = _load_unet(golden_dir, "unet_base.pt")
    blob = torch.load(golden_dir / "unet_base.pt", weights_only=False)

    def tokenize(captions, text_ctx):
        tokens = torch.full((len(captions), text_ctx), n_vocab - 1, dtype=torch.long)
        mask = torch.zeros(len(captions), text_ctx, dtype=torch.bool)
        for row, caption in enumerate(captions):
            ids = [ord(c) % (n_vocab - 1) for c in caption][:text_ctx]
            tokens[row, : len(ids)], mask[row, : len(ids)] = torch.tensor(ids, dtype=torch.long), True
        return tokens, mask

    models = GlideModels(base=model, base_options=blob["config"], tokenize=tokenize)
    captions, ids = ["a cat", "two dogs", "a red car"], ["c0", "c1", "c2"]
    together = sample_images(models, captions, ids, seed=3, respacing="6", batch_size=3)
    alone = sample_images(models, captions[1:2], ids[1:2], seed=3, respacing="6", batch_size=1)
    diff = (together.images[1].int() - alone.images[0].int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.99
    assert (together.images[0].int() - together.images[1].int()).abs().float().mean() > 5

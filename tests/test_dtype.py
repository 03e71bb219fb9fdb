"""Issue 19, GPU readiness: `dtype = bfloat16|float16` converts the UNets once (norms and
embeddings float32, as the reference's convert_to_fp16) instead of autocasting every step.
Checked on the CPU in bfloat16: the converted model agrees with the float32 one as closely as
autocast does, the sampler runs it without autocast, and the NaN report is kept."""

from __future__ import annotations

import copy

import torch

from samplers import guidance
from samplers.pipeline import convert_models, load_glide_models, sample_images


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_converted_model_matches_float32_as_autocast_does():
    models = load_glide_models(None, random_weights=True, tiny=True, seed=1)
    model = models.base
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=gen)
    tokens = torch.randint(0, 100, (2, 16), generator=gen)
    mask = torch.ones(2, 16, dtype=torch.bool)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        reference = model(x, t, tokens, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(x, t, tokens, mask)
        converted = convert_models(copy.deepcopy(models), torch.bfloat16).base
        out = converted(x, t, tokens, mask)
    assert converted.input_blocks[0][0].weight.dtype == torch.bfloat16
    kept = {n: p.dtype for n, p in converted.named_parameters() if "time_embed" in n or ".norm" in n}
    assert kept and set(kept.values()) == {torch.float32}
    assert out.dtype == torch.float32
    err, err_autocast = rel_error(out, reference), rel_error(autocast, reference)
    assert 0 < err < 3e-2 and err < 3 * err_autocast + 1e-3  # bfloat16 has 8 bits of mantissa
    assert torch.isfinite(out).all()


def test_sampling_a_converted_model_uses_no_autocast(monkeypatch):
    models = convert_models(load_glide_models(None, upsample=True, random_weights=True, tiny=True), torch.bfloat16)
    asked = []
    real = guidance._autocast

    def spy(device, dtype):
        asked.append(dtype)
        return real(device, dtype)

    monkeypatch.setattr(guidance, "_autocast", spy)
    reference = load_glide_models(None, upsample=True, random_weights=True, tiny=True)
    kwargs = dict(guidance=("cfg", 2.0), respacing="3", upsample=True, upsample_respacing="2", batch_size=2)
    half = sample_images(models, ["a cube", "a ball"], [0, 1], 0, dtype=torch.bfloat16, **kwargs)
    assert asked and set(asked) == {None}
    full = sample_images(reference, ["a cube", "a ball"], [0, 1], 0, **kwargs)
    assert half.images.shape == full.images.shape == (2, 3, 64, 64)
    assert half.nan_steps == [0, 0]  # the NaN report is kept
    asked.clear()
    autocast = sample_images(reference, ["a cube", "a ball"], [0, 1], 0, dtype=torch.bfloat16, **kwargs)
    assert set(asked) == {torch.bfloat16}  # the float32 models: autocast
    diff = (half.images.float() - full.images.float()).abs().mean()
    diff_autocast = (autocast.images.float() - full.images.float()).abs().mean()
    assert 0 < diff < 2 * diff_autocast + 1  # of 255 (here 4.4 and 3.7): bfloat16 rounding, as autocast


def test_tf32_is_explicit_and_off_by_default(tmp_path):
    from glide_eval.sweep.components import apply_tf32
    from glide_eval.sweep.config import load_config

    path = tmp_path / "c.toml"
    path.write_text("[run]\ndevice = 'cpu'\n")
    default = load_config(path)
    assert default.run.tf32 is False
    path.write_text("[run]\ndevice = 'cpu'\ntf32 = false\n")
    assert load_config(path).config_hash == default.config_hash  # configs from before the key keep their hash
    path.write_text("[run]\ndevice = 'cpu'\ntf32 = true\n")
    assert load_config(path).config_hash != default.config_hash  # TF32 changes the numbers
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        assert apply_tf32(True) is True
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert apply_tf32(False) is False
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_metrics_commands_default_to_auto_device():
    from glide_eval.cli.metrics import coco_reference_command, metrics_command

    for command in (metrics_command, coco_reference_command):
        option = next(p for p in command.params if p.name == "device")
        assert option.default == "auto"
        assert option.callback(None, option, "auto") == ("cuda" if torch.cuda.is_available() else "cpu")
        assert option.callback(None, option, "cpu") == "cpu"

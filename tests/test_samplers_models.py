"""GLIDE UNets, the noised CLIP and checkpoint loading against the reference's golden fixtures."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from glide_eval.parity.core import MODULE_TOL, rel_error
from glide_eval.parity.models import (
    UNET_FIXTURES,
    check_cases,
    check_checkpoint_manifests,
    check_noised_clip,
    load_clip_fixture,
    load_unet_fixture,
    run_unet_fixture,
)
from samplers.checkpoints import CheckpointMismatchError, load_glide_model, load_noised_clip
from samplers.model_configs import (
    OFFICIAL_FILES,
    create_model,
    create_noised_clip,
    official_clip_config,
    official_options,
)
from storage import sha256_file

GOLDEN = Path(__file__).parent / "fixtures" / "golden"


def _extra(inputs):
    return {k: inputs[k] for k in ("low_res", "inpaint_image", "inpaint_mask") if k in inputs}


@pytest.fixture(scope="module")
def unets():
    return {name: load_unet_fixture(GOLDEN / name) for name in UNET_FIXTURES}


@pytest.mark.parametrize("name", UNET_FIXTURES)
def test_unet_matches_reference(unets, name):
    model, blob = unets[name]
    out = run_unet_fixture(model, blob)
    assert out.shape == blob["output"].shape
    assert rel_error(out, blob["output"]) < MODULE_TOL


@pytest.mark.parametrize("name", UNET_FIXTURES)
def test_unet_rows_are_independent(unets, name):
    """Each batch row (with its own caption mask) gives the fixture's row when run alone."""
    model, blob = unets[name]
    inputs = blob["inputs"]
    for i in range(inputs["x"].shape[0]):
        row = {k: v[i : i + 1] for k, v in inputs.items()}
        with torch.no_grad():
            out = model(row["x"], row["timesteps"], row["tokens"], row["mask"], **_extra(row))
        assert rel_error(out, blob["output"][i : i + 1]) < MODULE_TOL


def test_encode_text_reuse_is_identical(unets):
    model, blob = unets["unet_base.pt"]
    inputs = blob["inputs"]
    with torch.no_grad():
        direct = model(inputs["x"], inputs["timesteps"], inputs["tokens"], inputs["mask"])
        text = model.encode_text(inputs["tokens"], inputs["mask"])
        reused = [model(inputs["x"], inputs["timesteps"], text=text) for _ in range(2)]
    assert text["xf_proj"].shape == (3, 4 * model.model_channels)
    assert text["xf_out"].shape == (3, model.xf_width, model.text_ctx)
    assert torch.equal(direct, reused[0]) and torch.equal(direct, reused[1])


def test_padded_token_ids_do_not_matter(unets):
    """Where the mask is False the learned padding embedding replaces the token."""
    model, blob = unets["unet_base.pt"]
    tokens, mask = blob["inputs"]["tokens"], blob["inputs"]["mask"]
    assert not mask.all()
    other = torch.where(mask, tokens, torch.zeros_like(tokens))
    with torch.no_grad():
        a = model.encode_text(tokens, mask)
        b = model.encode_text(other, mask)
        c = model.encode_text(tokens, torch.ones_like(mask))
    assert torch.allclose(a["xf_out"], b["xf_out"]) and torch.allclose(a["xf_proj"], b["xf_proj"])
    assert not torch.allclose(a["xf_proj"], c["xf_proj"])


def test_timestep_scalar_broadcasts(unets):
    model, blob = unets["unet_base.pt"]
    inputs = blob["inputs"]
    with torch.no_grad():
        a = model(inputs["x"], torch.tensor(500), inputs["tokens"], inputs["mask"])
        b = model(inputs["x"], torch.full((3,), 500.0), inputs["tokens"], inputs["mask"])
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_half_precision_stays_close(golden_dir, dtype, tol):
    model, blob = load_unet_fixture(golden_dir / "unet_upsample-inpaint.pt")
    model.to_dtype(dtype)
    assert model.input_blocks[0][0].weight.dtype == dtype
    assert model.transformer.resblocks[0].attn.c_qkv.weight.dtype == dtype
    norms = [p for n, p in model.named_parameters() if ".norm." in n or "in_layers.0" in n or "ln_" in n]
    assert norms and all(p.dtype == torch.float32 for p in norms)
    out = run_unet_fixture(model, blob)
    assert out.dtype == torch.float32
    err = rel_error(out, blob["output"])
    assert 0 < err < tol


def test_noised_clip_matches_reference(golden_dir):
    results = check_noised_clip(golden_dir / "noised_clip.pt")
    assert [r.case for r in results] == ["text_features", "image_features", "cond_fn_grad"]
    assert all(r.passed for r in results), results


def test_noised_clip_direct(golden_dir):
    clip, blob = load_clip_fixture(golden_dir / "noised_clip.pt")
    inputs, outputs = blob["inputs"], blob["outputs"]
    with torch.no_grad():
        text = clip.text_embeddings(inputs["text_tokens"], inputs["text_lens"])
        image = clip.image_embeddings(inputs["images"], inputs["timesteps"])
    assert rel_error(text, outputs["text_features"]) < MODULE_TOL
    assert rel_error(image, outputs["image_features"]) < MODULE_TOL
    assert clip.logit_scale == blob["config"]["logit_scale"]
    # the text feature is read at the end token: tokens after it cannot change it (causal)
    tokens = inputs["text_tokens"].clone()
    lens = inputs["text_lens"]
    row = int(torch.argmin(lens))
    tokens[row, lens[row] :] = 1
    with torch.no_grad():
        changed = clip.text_embeddings(tokens, lens)
    assert torch.allclose(changed, text, atol=1e-6)


def test_unet_cases(golden_dir):
    results = check_cases(golden_dir / "cases.json")
    assert len(results) == 8 and all(r.passed for r in results), results


def test_manifest_check_passes(golden_dir):
    results = check_checkpoint_manifests(golden_dir / "checkpoint_manifests.json")
    assert len(results) == 12 and all(r.passed for r in results), results


@pytest.mark.parametrize("name", list(OFFICIAL_FILES))
def test_official_configs_match_manifest(golden_dir, name):
    entry = json.loads((golden_dir / "checkpoint_manifests.json").read_text())[name]
    with torch.device("meta"):
        if name.startswith("clip/"):
            assert official_clip_config() == entry["config"]
            clip = create_noised_clip(official_clip_config())
            module = clip.image_encoder if name == "clip/image-enc" else clip.text_encoder
        else:
            assert official_options(name) == entry["options"]
            module = create_model(official_options(name))
    ours = [[k, list(v.shape)] for k, v in module.state_dict().items()]
    assert sorted(ours) == sorted(entry["state_dict"])
    assert sum(p.numel() for p in module.parameters()) == entry["n_params"]


def _tiny_options(blob):
    return {**blob["config"], "n_vocab": blob["n_vocab"]}


def test_load_glide_model_round_trip(golden_dir, tmp_path, monkeypatch):
    blob = torch.load(golden_dir / "unet_inpaint.pt", weights_only=False)
    path = tmp_path / OFFICIAL_FILES["base-inpaint"]
    torch.save(blob["state_dict"], path)
    monkeypatch.setenv("GLIDE_CHECKPOINTS", str(tmp_path))
    model, sha = load_glide_model("base-inpaint", options=_tiny_options(blob))
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    assert not model.training
    assert rel_error(run_unet_fixture(model, blob), blob["output"]) < MODULE_TOL
    half, _ = load_glide_model(
        "base-inpaint", checkpoint_dir=tmp_path, dtype=torch.bfloat16, options=_tiny_options(blob)
    )
    assert half.dtype == torch.bfloat16


def test_load_noised_clip_round_trip(golden_dir, tmp_path):
    blob = torch.load(golden_dir / "noised_clip.pt", weights_only=False)
    torch.save(blob["image_state_dict"], tmp_path / "clip_image_enc.pt")
    torch.save(blob["text_state_dict"], tmp_path / "clip_text_enc.pt")
    clip, hashes = load_noised_clip(tmp_path, config=blob["config"])
    assert hashes == {f: sha256_file(tmp_path / f) for f in ("clip_image_enc.pt", "clip_text_enc.pt")}
    inputs = blob["inputs"]
    with torch.no_grad():
        image = clip.image_embeddings(inputs["images"], inputs["timesteps"])
    assert rel_error(image, blob["outputs"]["image_features"]) < MODULE_TOL


def test_mismatched_checkpoint_is_reported(golden_dir, tmp_path):
    blob = torch.load(golden_dir / "unet_base.pt", weights_only=False)
    state = dict(blob["state_dict"])
    del state["out.2.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["time_embed.0.weight"] = torch.zeros(5, 5)
    torch.save(state, tmp_path / "base.pt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_glide_model("base", tmp_path, options=_tiny_options(blob))
    message = str(info.value)
    assert str(tmp_path / "base.pt") in message
    assert "missing keys (1): out.2.bias" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "time_embed.0.weight: file (5, 5) vs model (128, 32)" in message
    # an official-size model against the tiny file: every key has the wrong shape
    torch.save(blob["state_dict"], tmp_path / "base.pt")
    with pytest.raises(CheckpointMismatchError, match="wrong shapes"):
        load_glide_model("base", tmp_path)


def test_missing_directory_and_file(tmp_path, monkeypatch):
    monkeypatch.delenv("GLIDE_CHECKPOINTS", raising=False)
    with pytest.raises(FileNotFoundError, match="GLIDE_CHECKPOINTS"):
        load_glide_model("base")
    with pytest.raises(FileNotFoundError, match="upsample.pt"):
        load_glide_model("upsample", tmp_path)
    with pytest.raises(FileNotFoundError, match="clip_image_enc.pt"):
        load_noised_clip(tmp_path)
    with pytest.raises(ValueError, match="unknown GLIDE model"):
        load_glide_model("base64", tmp_path)


def test_sha256_file_chunks(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 1000
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=1000) == hashlib.sha256(data).hexdigest()


def test_bad_shapes_raise(unets, golden_dir):
    sr, blob = unets["unet_upsample-inpaint.pt"]
    inputs = blob["inputs"]
    x, t, tok, mask = inputs["x"], inputs["timesteps"], inputs["tokens"], inputs["mask"]
    ok = _extra(inputs)
    cases = [
        (dict(ok, low_res=inputs["low_res"][:2]), r"`low_res` must have shape \(3, 3, h, w\), got \(2, 3, 8, 8\)"),
        (dict(ok, low_res=None), "low_res"),
        (
            dict(ok, inpaint_mask=inputs["inpaint_mask"].expand(-1, 3, -1, -1)),
            r"`inpaint_mask` must have shape \(3, 1, 32, 32\), got \(3, 3, 32, 32\)",
        ),
        (dict(ok, inpaint_image=inputs["inpaint_image"][:, :, :16]), "`inpaint_image` must have shape"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            sr(x, t, tok, mask, **kwargs)
    with pytest.raises(ValueError, match=r"tokens must have shape \[N, 8\]"):
        sr(x, t, tok[:, :5], mask[:, :5], **ok)
    with pytest.raises(ValueError, match="x must have shape"):
        sr(x[:, :2], t, tok, mask, **ok)
    with pytest.raises(ValueError, match="multiples of 4"):
        sr(x[..., :30, :30], t, tok, mask, **ok)
    base, _ = unets["unet_base.pt"]
    with pytest.raises(ValueError, match="takes no low_res"):
        base(x, t, tok, mask, low_res=inputs["low_res"])

    clip, cblob = load_clip_fixture(golden_dir / "noised_clip.pt")
    images = cblob["inputs"]["images"]
    with pytest.raises(ValueError, match=r"expects images of shape \[N, 3, 32, 32\], got \(3, 3, 64, 64\)"):
        clip.image_embeddings(torch.nn.functional.interpolate(images, scale_factor=2), cblob["inputs"]["timesteps"])
    with pytest.raises(ValueError, match=r"CLIP text tokens must have shape \[N, 10\]"):
        clip.text_embeddings(cblob["inputs"]["text_tokens"][:, :5], cblob["inputs"]["text_lens"])


def test_channels_last_is_only_a_layout(unets):
    model, blob = unets["unet_upsample.pt"]
    assert model.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    expected = run_unet_fixture(model, blob)
    try:
        model.use_channels_last(False)
        plain = run_unet_fixture(model, blob)
    finally:
        model.use_channels_last(True)
    assert plain.is_contiguous() and expected.is_contiguous()
    assert rel_error(plain, expected) < 1e-5


def test_non_default_blocks_use_reference_names():
    """resblock_updown=False uses Downsample.op / Upsample.conv; no scale-shift halves emb_layers."""
    blob_options = dict(
        image_size=32,
        num_channels=32,
        num_res_blocks=1,
        channel_mult="1,2,2",
        num_heads=2,
        num_head_channels=-1,
        attention_resolutions="8",
        text_ctx=4,
        xf_width=32,
        xf_layers=1,
        xf_heads=2,
        use_scale_shift_norm=False,
        resblock_updown=False,
        xf_final_ln=False,
        xf_padding=False,
        n_vocab=10,
    )
    with torch.device("meta"):
        model = create_model(blob_options)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["input_blocks.2.0.op.weight"] == (32, 32, 3, 3)
    assert shapes["output_blocks.1.2.conv.weight"] == (64, 64, 3, 3)  # res, attn, upsample
    assert shapes["output_blocks.3.1.conv.weight"] == (64, 64, 3, 3)
    assert shapes["input_blocks.1.0.emb_layers.1.weight"] == (32, 128)
    assert "padding_embedding" not in shapes and "final_ln.weight" not in shapes
    assert shapes["input_blocks.0.0.weight"] == (32, 3, 3, 3)

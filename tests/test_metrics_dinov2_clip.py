"""DINOv2 and CLIP ViT-L image extractors from official-format files with random weights: features
equal the official DINOv2 code's (golden numbers, tests/fixtures/dinov2/README.md) and open_clip's
own forward; wrong files are refused by name."""

from pathlib import Path

import numpy as np
import pytest
import torch

import metrics  # noqa: F401  (registers the extractors)
from metrics.clip_image import OPENAI_MEAN, OPENAI_STD, ClipImageExtractor, Tower
from metrics.dinov2 import ARCHS, PROTOCOL, Arch, Dinov2Extractor, interpolate_pos_embed
from metrics.extractors import ExtractorError, create_extractor
from metrics.features import FeatureAccumulator
from metrics.testing import make_random_clip, make_random_dinov2
from torchvision_compat import ensure_torchvision

pytestmark = pytest.mark.usefixtures("one_thread")
FIXTURE = Path(__file__).parent / "fixtures" / "dinov2" / "golden_features.npz"
TINY_SWIGLU = Arch(64, 2, 4, swiglu=True)


def golden_images() -> list[np.ndarray]:
    """The images the golden features were made from (HWC uint8)."""
    rng = np.random.default_rng(2024)
    out = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    y, x = np.mgrid[0:96, 0:96]
    out.append(np.stack([x * 2 % 256, y * 2 % 256, (x + y) % 256], -1).astype(np.uint8))
    out.append(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    return out


def chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def vit_s_file(tmp_path_factory):
    return make_random_dinov2(
        tmp_path_factory.mktemp("dinov2") / "dinov2_vits14_pretrain.pth", ARCHS["dinov2-vit-s-14"], 7
    )


def test_dinov2_vit_s_features_equal_the_official_code(vit_s_file):
    golden = np.load(FIXTURE)
    ext = create_extractor("dinov2-vit-s-14", vit_s_file)
    assert ext.protocol == PROTOCOL and ext.dims == {"pool": 384}
    for i, image in enumerate(golden_images()):
        got = ext(chw(image))["pool"].double().numpy()[0]
        want = golden[f"vit_small/{i}"]
        assert np.abs(got - want).max() < 1e-5, i
    assert np.abs(golden["vit_small/0"] - golden["vit_small/1"]).max() > 0.1  # images tell apart


def test_dinov2_swiglu_features_equal_the_official_code(tmp_path):
    """ViT-G's SwiGLU feed-forward (official `w12`/`w3` keys) at a small width."""
    golden = np.load(FIXTURE)
    path = make_random_dinov2(tmp_path / "tiny.pth", TINY_SWIGLU, 7)
    ext = Dinov2Extractor(path, name="tiny", arch=TINY_SWIGLU)
    batch = torch.cat([chw(a) for a in golden_images()[:2]])  # a batch of two equals one at a time
    got = ext(batch)["pool"].double().numpy()
    for i in range(2):
        assert np.abs(got[i] - golden[f"tiny_swiglu/{i}"]).max() < 1e-5


def test_dinov2_refuses_another_architecture_and_non_checkpoints(tmp_path, vit_s_file):
    with pytest.raises(ExtractorError, match=r"width 384, depth 12.*not dinov2-vit-l-14.*dinov2_vitl14_pretrain\.pth"):
        create_extractor("dinov2-vit-l-14", vit_s_file)
    bad = tmp_path / "x.pth"
    torch.save({"weight": torch.zeros(2)}, bad)
    with pytest.raises(ExtractorError, match="not an official DINOv2 checkpoint"):
        create_extractor("dinov2-vit-s-14", bad)
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ExtractorError, match="cannot read DINOv2 weights"):
        create_extractor("dinov2-vit-s-14", bad)
    with pytest.raises(ExtractorError, match="GLIDE_EVAL_DINOV2"):
        create_extractor("dinov2-vit-s-14", None)


def test_position_embedding_interpolation_is_the_official_scale_factor_call():
    pos = torch.randn(1, 1 + 37 * 37, 8)
    out = interpolate_pos_embed(pos, 16)
    assert out.shape == (1, 257, 8) and torch.equal(out[:, 0], pos[:, 0])
    # the official call, spelled out: bicubic on the scale factor (16 + 0.1) / 37, no antialias
    grid = pos[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(grid, scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic")
    assert torch.equal(out[:, 1:], want.permute(0, 2, 3, 1).reshape(1, 256, 8))


TINY_TOWER = Tower(image_size=56, width=64, layers=2, patch=14)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.pt"
    return make_random_clip(path, image_size=56, width=64, layers=2, patch=14, embed_dim=32, text=(64, 1, 1), seed=3)


def test_clip_image_features_equal_open_clip_forward(tiny_clip):
    ensure_torchvision()
    import open_clip
    from PIL import Image

    ext = ClipImageExtractor(tiny_clip, name="tiny-clip", tower=TINY_TOWER)
    assert ext.protocol.startswith("dgm-eval-clip: PIL bicubic 56x56") and ext.dims == {"pool": 32}
    model = open_clip.load_openai_model(str(tiny_clip), precision="fp32", device="cpu").eval()
    preprocess = open_clip.image_transform(56, is_train=False, mean=OPENAI_MEAN, std=OPENAI_STD)
    images = [a for a in golden_images()]  # square images: open_clip's resize + crop is dgm-eval's resize
    with torch.no_grad():
        want = torch.cat([model.encode_image(preprocess(Image.fromarray(a))[None]) for a in images])
    got = torch.cat([ext(chw(a))["pool"] for a in images])
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-6)
    assert (got[0] - got[1]).abs().max() > 1e-3


def test_clip_image_refuses_another_tower(tiny_clip):
    with pytest.raises(ExtractorError, match=r"56 px, width 64, 2 layers.*not clip-vit-l-14-336.*ViT-L-14-336px\.pt"):
        create_extractor("clip-vit-l-14-336", tiny_clip)


def test_accumulator_records_the_protocol(vit_s_file):
    ext = create_extractor("dinov2-vit-s-14", vit_s_file)
    acc = FeatureAccumulator(ext)
    acc.add(torch.cat([chw(a) for a in golden_images()[:2]]))
    assert acc.meta["protocol"] == PROTOCOL and acc.pool.shape == (2, 384)


@pytest.mark.slow
def test_full_size_clip_vit_l_14_336_file_loads(tmp_path):
    """The released ViT-L/14@336 architecture (random weights, ~1.7 GB file)."""
    path = make_random_clip(tmp_path / "ViT-L-14-336px.pt")
    ext = create_extractor("clip-vit-l-14-336", path)
    assert ext(chw(golden_images()[0]))["pool"].shape == (1, 768)

"""Extractors and the whole pipeline against torch-fidelity's calculate_metrics and open_clip."""

import numpy as np
import pytest
import torch
from model_files import make_random_inception, make_tiny_clip

import torchvision_compat  # noqa: F401  (conftest.py calls ensure_torchvision() first)
from metrics import ExtractorError, FeatureAccumulator, calculate_metrics, create_extractor, register_extractor


@pytest.fixture(scope="module")
def inception_path(tmp_path_factory):
    return make_random_inception(tmp_path_factory.mktemp("inception"))


class _Images(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def smooth_images(n, size, seed):
    """Low-frequency colour fields (far, in features, from uniform noise)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear") * 255).round().to(torch.uint8)


def low_rank_exact_fid(g, r):
    """FID for N < D through the SVD of X1 X2^T (well conditioned, no square roots of noise)."""
    g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
    x1, x2 = g - g.mean(0), r - r.mean(0)
    n1, n2 = len(g), len(r)
    tr = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    d = g.mean(0) - r.mean(0)
    return d @ d + (x1**2).sum() / (n1 - 1) + (x2**2).sum() / (n2 - 1) - 2 * tr


def test_extractor_features_equal_torch_fidelity_model(inception_path):
    """Our wrapper (batched, uint8 in) gives torch-fidelity's FeatureExtractorInceptionV3 outputs."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    images = torch.randint(0, 256, (3, 3, 24, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    ex = create_extractor("inception-v3-compat", inception_path)
    ex.batch_size = 2
    ours = ex(images)
    model = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(inception_path)
    )
    with torch.no_grad():
        pool, logits = model(images)
    torch.testing.assert_close(ours["pool"], pool, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["logits_unbiased"], logits, rtol=1e-5, atol=1e-6)
    assert ours["pool"].std(0).mean() > 1e-4  # He init: features are not collapsed
    assert len(ex.weights_sha256) == 64


@pytest.mark.slow
def test_pipeline_equals_torch_fidelity(inception_path):
    """FID, IS and precision/recall of the same images and weights file, vs torch-fidelity."""
    import torch_fidelity

    gen = torch.randint(0, 256, (12, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    gen[6:] = smooth_images(6, 40, 1)
    ref = smooth_images(12, 48, 2)
    theirs = torch_fidelity.calculate_metrics(
        input1=_Images(gen),
        input2=_Images(ref),
        cuda=False,
        isc=True,
        fid=True,
        prc=True,
        isc_splits=3,
        feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(inception_path),
        batch_size=12,
        cache=False,
        verbose=False,
    )
    ex = create_extractor("inception-v3-compat", inception_path)
    g, r = FeatureAccumulator(ex), FeatureAccumulator(ex)
    for batch in gen.split(5):  # streamed in uneven batches
        g.add(batch)
    r.add(ref)
    ours = calculate_metrics(g, r, isc_splits=3)
    # With N < D, torch-fidelity's eigvals(S1 S2) adds square roots of ~2000 rounding-noise
    # eigenvalues (about 1e-6 relative here); ours matches the exact low-rank value.
    assert ours["fid"] == pytest.approx(low_rank_exact_fid(g.pool, r.pool), rel=1e-10)
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=3e-6)
    assert ours["is"] == pytest.approx(theirs["inception_score_mean"], rel=1e-6)
    assert ours["is_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-5, abs=1e-9)
    assert round(ours["precision"] * 12) == round(theirs["precision"] * 12)
    assert round(ours["recall"] * 12) == round(theirs["recall"] * 12)
    assert ours["fid"] > 1e-3  # features are informative, not collapsed


def test_extractor_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("GLIDE_EVAL_INCEPTION", raising=False)
    with pytest.raises(ExtractorError, match="GLIDE_EVAL_INCEPTION"):
        create_extractor("inception-v3-compat")
    with pytest.raises(ExtractorError, match="not found: .*nope.pth"):
        create_extractor("inception-v3-compat", tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(ExtractorError, match="bad.pth"):
        create_extractor("inception-v3-compat", bad)
    with pytest.raises(ExtractorError, match="unknown feature extractor 'nope'"):
        create_extractor("nope")


def test_registry_accepts_custom_extractor():
    class Mean:
        kind, name, weights_sha256 = "image", "mean-colour", None

        def __call__(self, images):
            x = images.float().mean(dim=(2, 3))
            return {"pool": x, "logits_unbiased": x}

    register_extractor("mean-colour", lambda weights_path=None, device="cpu": Mean())
    acc = FeatureAccumulator(create_extractor("mean-colour"))
    acc.add(torch.full((4, 3, 8, 8), 7, dtype=torch.uint8))
    assert acc.n == 4 and acc.meta["extractor"] == "mean-colour"
    np.testing.assert_array_equal(acc.pool, np.full((4, 3), 7.0))


def test_clip_score_equals_direct_computation(tmp_path):
    import open_clip
    from PIL import Image
    from torchvision import transforms

    path = make_tiny_clip(tmp_path / "clip.pt")
    scorer = create_extractor("clip-vit-b-16", path)
    images = torch.randint(0, 256, (5, 3, 48, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    captions = ["a red bus", "two cats on a sofa", "a bowl of fruit", "word " * 90, "a clock tower at night"]
    from metrics.clip_score import clip_scores

    ours, n_trunc = clip_scores(scorer, images, captions)
    # independent: a fresh model, torchvision transforms written out, the tokenizer, cosine
    model = open_clip.load_openai_model(str(path), precision="fp32", device="cpu").eval()
    tf = transforms.Compose(
        [
            transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(32),
            transforms.ToTensor(),
            transforms.Normalize(open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD),
        ]
    )
    pixels = torch.stack([tf(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in images])
    with torch.no_grad():
        img = model.encode_image(pixels)
        txt = model.encode_text(open_clip.get_tokenizer("ViT-B-16")(captions))
    direct = 100 * torch.nn.functional.cosine_similarity(img.double(), txt.double()).numpy()
    np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-4)
    assert n_trunc == 1
    out = calculate_metrics(
        {"pool": np.zeros((5, 2)), "clip_scores": ours, "n_truncated": n_trunc},
        fid=False,
        isc=False,
        prc=False,
        clip_score=True,
    )
    assert out["clip_score"] == pytest.approx(direct.mean(), rel=1e-5) and out["clip_truncated"] == 1

"""Slow: classifier-free guidance on the shipped toy base model has the shape of the paper's
Fig. 6 trade-off: from unguided to a modest scale CLIP score, precision and caption accuracy
rise and FID is lowest; at a strong scale the samples oversaturate and recall falls below
unguided (sampled as the default sweep samples: ancestral, 10 steps).

Measured on the pinned retrain that ships (`python -m glide_eval.toy.evaluate --n 1024 --scales
0,1.5,3,8 --respacing 10 --method ancestral`), scales 0 (unguided) / 1.5 / 3 / 8: FID 3.60 / 3.72 /
1.80 / 7.28, precision 0.917 / 0.932 / 0.943 / 0.803, recall 0.926 / 0.902 / 0.922 / 0.879, CLIP
score 94.63 / 96.09 / 96.37 / 83.52, shape accuracy 0.62 / 0.66 / 0.73 / 0.57. At 1024 captions
recall at scale 3 is within its noise of unguided (standard error about 0.018), so only the strong
scale is required to lower it; the default sweep's 3072 captions resolve the fall at 1.5 and 3
too (README). Under DDIM 10 the same model's recall is flat at every scale (0.940 / 0.934 / 0.937 /
0.932), while its CLIP score (89.0 -> 95.9 at 3) and precision (0.848 -> 0.920) rise more."""

import pytest

from glide_eval.toy import models as M


@pytest.mark.slow
def test_guidance_trades_recall_for_precision_and_clip_score():
    try:
        M.weight_path("base")
        M.weight_path("classifier")
        M.weight_path("clip")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    import torchvision_compat  # noqa: F401
    from glide_eval.toy.evaluate import guidance_trend

    rows = {
        r["scale"]: r
        for r in guidance_trend(n=1024, scales=(0, 3, 8), method="ancestral", respacing="10", seed=0, batch_size=128)
    }
    unguided, modest, strong = rows[0], rows[3], rows[8]
    assert modest["clip_score"] > unguided["clip_score"] + 1 and strong["clip_score"] < modest["clip_score"], rows
    assert modest["precision"] > unguided["precision"] + 0.015, rows
    assert unguided["recall"] > strong["recall"] + 0.02, rows
    assert modest["fid"] < 0.8 * unguided["fid"] and modest["fid"] < 0.8 * strong["fid"], rows
    # guidance makes samples follow their captions more closely
    assert unguided["acc_shape"] > 0.5 and modest["acc_shape"] > unguided["acc_shape"] + 0.08, rows
    colour_background = [r[f"acc_{k}"] for r in (unguided, modest) for k in ("colour", "background")]
    assert min(colour_background) > 0.95, rows

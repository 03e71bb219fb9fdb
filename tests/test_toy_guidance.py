"""Slow: classifier-free guidance on the shipped toy base model has the shape of the paper's
Fig. 6 trade-off: as the scale grows CLIP score and precision rise, recall falls, and FID is
lowest at a modest scale (sampled as the default sweep samples: DDIM, 10 steps).

Measured (`python -m glide_eval.toy.evaluate --n 1024 --scales 0,1.5,3,8 --respacing 10`),
scales 0 (unguided) / 1.5 / 3 / 8: FID 6.33 / 4.83 / 4.21 / 7.28, precision 0.828 / 0.887 /
0.906 / 0.856, recall 0.909 / 0.922 / 0.848 / 0.804, CLIP score 87.0 / 91.3 / 93.1 / 90.7.
With 20 steps: FID 5.54 / 4.89 / 4.03 / 5.86, recall 0.890 / 0.908 / 0.854 / 0.788, CLIP score
89.5 / 92.4 / 94.0 / 93.1. Past scale 3 the samples oversaturate and the toy CLIP score falls
back a little (it stays far above unguided); with 600 captions recall was flat within its
noise up to scale 5, hence 1024."""
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
    import glide_eval.compat  # noqa: F401
    from glide_eval.toy.evaluate import guidance_trend

    rows = {r["scale"]: r for r in guidance_trend(n=1024, scales=(0, 3, 8), method="ddim", respacing="10",
                                                  seed=0, batch_size=128)}
    unguided, modest, strong = rows[0], rows[3], rows[8]
    assert modest["clip_score"] > unguided["clip_score"] + 3, rows
    assert strong["clip_score"] > unguided["clip_score"] + 2, rows
    assert modest["precision"] > unguided["precision"] + 0.03, rows
    assert unguided["recall"] > modest["recall"] + 0.03 and modest["recall"] > strong["recall"] + 0.02, rows
    assert modest["fid"] < 0.8 * unguided["fid"] and modest["fid"] < 0.8 * strong["fid"], rows
    for k in ("colour", "background"):
        assert unguided[f"acc_{k}"] > 0.9 and modest[f"acc_{k}"] > 0.9, rows

"""Slow: classifier-free guidance on the shipped toy base model behaves like the paper's Fig. 6
trade-off on the side measured to hold here: CLIP score and precision rise with the scale.
(Measured with n=150, respacing 25, scales 0/1/3/5: CLIP score 50.9/50.9/63.8/65.6, precision
0.920/0.920/0.953/0.967, recall 0.813/0.813/0.873/0.853 -- recall does not fall at these scales,
so it is not asserted.)"""
import pytest

from glide_eval.toy import models as M


@pytest.mark.slow
def test_guidance_raises_clip_score_and_precision():
    try:
        M.weight_path("base")
        M.weight_path("classifier")
        M.weight_path("clip")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    import glide_eval.compat  # noqa: F401
    from glide_eval.toy.evaluate import guidance_trend

    rows = {r["scale"]: r for r in guidance_trend(n=150, scales=(0, 3), respacing="25", seed=0)}
    assert rows[3]["clip_score"] > rows[0]["clip_score"] + 5, rows
    assert rows[3]["precision"] > rows[0]["precision"], rows

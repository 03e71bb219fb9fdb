"""MS-COCO reading, reference images and cached statistics, and the CLI, on a synthetic COCO folder."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from glide_eval.cli import main
from glide_eval.data.coco import (
    CocoError,
    coco_reference,
    find_coco,
    preprocess_image,
    read_ids,
    reference_batches,
    sample_caption_records,
    sample_captions,
)
from metrics import ReferenceStats, calculate_metrics, register_extractor
from metrics.features import FeatureAccumulator


class ColourStats:
    """Cheap stand-in image extractor: per-channel mean/std and a coarse colour histogram."""

    kind, name, weights_sha256 = "image", "colour-stats", "0" * 64

    def __call__(self, images):
        x = images.float() / 255
        pool = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
        return {"pool": pool, "logits_unbiased": pool * 4}


register_extractor("colour-stats", lambda weights_path=None, device="cpu": ColourStats())

SIZES = [(80, 60), (50, 90), (64, 64), (130, 70), (300, 200), (45, 45)]


@pytest.fixture
def coco(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2014").mkdir()
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i, (w, h) in enumerate(SIZES):
        image_id = 100 + i
        name = f"COCO_val2014_{image_id:012d}.jpg"
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr)
        if i == 3:
            img = img.convert("L")  # grayscale
        if i == 4:
            img = img.convert("CMYK")
        img.save(root / "val2014" / name, format="JPEG")
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for j in range(5):
            anns.append({"id": 1000 + 10 * i + j, "image_id": image_id, "caption": f"image {i} caption {j}  "})
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root


def test_find_coco_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("GLIDE_EVAL_COCO", raising=False)
    with pytest.raises(CocoError, match="GLIDE_EVAL_COCO"):
        find_coco()
    with pytest.raises(CocoError, match="not found"):
        find_coco(tmp_path / "absent")
    with pytest.raises(CocoError, match="annotations/captions_val2014.json or annotations/captions_val2017.json"):
        find_coco(tmp_path)


def test_caption_sample_is_seeded_and_saved(coco, tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDE_EVAL_COCO", str(coco))
    a = sample_caption_records(n=12, seed=3)
    assert a.equals(sample_caption_records(coco, n=12, seed=3))
    assert not a.equals(sample_caption_records(coco, n=12, seed=4))
    assert list(a.columns) == ["sample_id", "image_id", "caption_id", "caption"]
    assert a["caption_id"].is_unique and a["caption_id"].is_monotonic_increasing
    row = a.iloc[0]
    assert row["caption"] == f"image {(row['caption_id'] - 1000) // 10} caption {row['caption_id'] % 10}"
    assert sample_captions(coco, n=12, seed=3) == a["caption"].tolist()
    with pytest.raises(CocoError, match="asked for 31 captions but .*captions_val2014.json holds 30"):
        sample_caption_records(coco, n=31)
    out = tmp_path / "caps.csv"
    result = CliRunner().invoke(
        main, ["coco-captions", "--coco", str(coco), "--n", "12", "--seed", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_csv(out), a)


def test_preprocess_crop_and_modes():
    # wide image: left/right thirds red/blue, middle third green -> the centre square is green
    arr = np.zeros((90, 270, 3), np.uint8)
    arr[:, :90, 0] = 255
    arr[:, 90:180, 1] = 255
    arr[:, 180:, 2] = 255
    out = preprocess_image(Image.fromarray(arr), 32)
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8
    assert (out[1] == 255).all() and (out[0] == 0).all() and (out[2] == 0).all()
    # 'adm' resizes the short side then crops: same centre for this image
    np.testing.assert_array_equal(preprocess_image(Image.fromarray(arr), 32, "adm")[:, 4:-4, 4:-4], out[:, 4:-4, 4:-4])
    grey = preprocess_image(Image.fromarray(np.full((40, 50), 77, np.uint8)), 16)
    assert (grey == 77).all()
    cmyk = preprocess_image(Image.fromarray(np.full((40, 40, 3), (200, 10, 10), np.uint8)).convert("CMYK"), 16)
    assert abs(int(cmyk[0, 0, 0]) - 200) <= 2 and cmyk[1].max() <= 12
    rgba = Image.fromarray(np.full((20, 20, 4), 90, np.uint8), "RGBA")
    assert (preprocess_image(rgba, 8) == round((90 * 90 + 255 * 165) / 255)).all()  # onto white (metrics.images)
    # the BOX halving keeps exact block means: 4x4 checker of 2x2 blocks -> 2x2 means
    big = np.kron(np.array([[0, 200], [100, 40]], np.uint8), np.ones((64, 64), np.uint8))
    small = preprocess_image(Image.fromarray(big), 2)
    np.testing.assert_array_equal(small[0], [[0, 200], [100, 40]])


def test_reference_batches_report_corrupt_files(coco):
    bad = coco / "val2014" / "COCO_val2014_000000000101.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(CocoError, match="1 unreadable image:\n.*COCO_val2014_000000000101.jpg") as e:
        list(reference_batches(find_coco(coco), 16, progress=False))
    assert "coco-reference --ids IDS.txt --out REF.npz" in str(e.value)  # the way past it
    bad.unlink()
    with pytest.raises(CocoError, match="1 image missing .*COCO_val2014_000000000101.jpg") as e:
        list(reference_batches(find_coco(coco), 16, progress=False))
    assert "coco-reference --ids IDS.txt --out REF.npz" in str(e.value) and "[metrics] reference" in str(e.value)


def test_an_image_changed_under_its_name_rebuilds_the_reference(coco, tmp_path, monkeypatch):
    """Issue 31: the statistics are keyed by the images' content. Inverting one image (same name,
    same size in pixels) rebuilds the cache, saying why, and gives the statistics of the new images;
    putting the old bytes back gives the old statistics again."""
    monkeypatch.setenv("GLIDE_EVAL_CACHE", str(tmp_path / "cache"))
    out, logs = tmp_path / "ref.npz", []
    before, _ = coco_reference(ColourStats(), coco, 16, out=out, progress=False, log=logs.append)
    image = coco / "val2014" / "COCO_val2014_000000000102.jpg"
    original = image.read_bytes()
    with Image.open(image) as img:
        Image.fromarray(255 - np.asarray(img.convert("RGB"))).save(image, format="JPEG")
    after, _ = coco_reference(ColourStats(), coco, 16, out=out, progress=False, log=logs.append)
    assert len(logs) == 1 and "is stale" in logs[0] and "images_sha256" in logs[0] and "content changed" in logs[0]
    assert after.meta["images_sha256"] != before.meta["images_sha256"]
    assert not np.allclose(after.mu, before.mu)
    acc = FeatureAccumulator(ColourStats())  # independently: the statistics of the images as they are now
    acc.add(torch.cat(list(reference_batches(find_coco(coco), 16, progress=False))))
    np.testing.assert_allclose(after.mu, acc.statistics()[0], rtol=1e-12)
    image.write_bytes(original)
    again, _ = coco_reference(ColourStats(), coco, 16, out=out, progress=False, log=logs.append)
    assert again.meta["images_sha256"] == before.meta["images_sha256"] and len(logs) == 2
    np.testing.assert_allclose(again.mu, before.mu, rtol=1e-12)
    # a cache from before the key existed is rebuilt once, without claiming the images changed
    old = ReferenceStats.load(out)
    old.meta.pop("images_sha256")
    old.save(out)
    coco_reference(ColourStats(), coco, 16, out=out, progress=False, log=logs.append)
    assert "images_sha256: None" in logs[-1] and "older glide-eval" in logs[-1] and "content changed" not in logs[-1]
    # the CLI's cache too: a second identical call reuses it, a changed image rebuilds it, saying why
    monkeypatch.setenv("GLIDE_EVAL_COCO", str(coco))  # --coco is optional with the variable set
    cli = ["coco-reference", "--resolution", "16", "--extractor", "colour-stats", "--allow-unknown-inception"]
    first = CliRunner().invoke(main, cli)
    assert first.exit_code == 0, first.output
    assert "stale" not in CliRunner().invoke(main, cli).output
    with Image.open(image) as img:
        img.convert("RGB").save(image, format="JPEG", quality=40)  # re-encoded: other bytes, same name
    changed = CliRunner().invoke(main, cli)
    assert changed.exit_code == 0 and "is stale" in changed.output and "content changed" in changed.output


def test_coco_reference_cache_and_invalidation(coco, tmp_path):
    out = tmp_path / "ref.npz"
    logs = []
    stats, path = coco_reference(ColourStats(), coco, 16, out=out, batch_size=4, progress=False, log=logs.append)
    assert path == out and stats.n == len(SIZES) and logs == []
    # the statistics are those of the preprocessed images
    layout = find_coco(coco)
    batches = torch.cat(list(reference_batches(layout, 16, progress=False)))
    acc = FeatureAccumulator(ColourStats())
    acc.add(batches)
    np.testing.assert_allclose(stats.mu, acc.statistics()[0], rtol=1e-12)
    assert stats.radii.shape == (len(SIZES),) and stats.meta["resolution"] == 16
    assert set(stats.meta) >= {"extractor", "extractor_sha256", "crop_rule", "image_ids_sha256", "versions"}
    mtime = out.stat().st_mtime_ns
    coco_reference(ColourStats(), coco, 16, out=out, progress=False, log=logs.append)
    assert out.stat().st_mtime_ns == mtime and logs == []  # reused
    stats32, _ = coco_reference(ColourStats(), coco, 32, out=out, progress=False, log=logs.append)
    assert "resolution: 16 != 32" in logs[-1] and stats32.meta["resolution"] == 32
    ids = tmp_path / "ids.txt"
    ids.write_text("# subset\n100\n102\n\n104\n")
    assert read_ids(ids) == [100, 102, 104]
    sub, _ = coco_reference(ColourStats(), coco, 32, ids=read_ids(ids), out=out, progress=False, log=logs.append)
    assert sub.n == 3 and "image_ids_sha256" in logs[-1]
    other = ColourStats()
    other.weights_sha256 = "1" * 64
    coco_reference(other, coco, 32, ids=[100, 102, 104], out=out, progress=False, log=logs.append)
    assert "extractor_sha256" in logs[-1]
    with pytest.raises(CocoError, match=r"not in .*captions_val2014.json: \[7\]"):
        coco_reference(ColourStats(), coco, 32, ids=[7], out=out, progress=False)


def test_metrics_cli_end_to_end(coco, tmp_path):
    runner = CliRunner()
    ref = tmp_path / "ref.npz"
    r = runner.invoke(
        main,
        [
            "coco-reference",
            "--coco",
            str(coco),
            "--resolution",
            "16",
            "--out",
            str(ref),
            "--extractor",
            "colour-stats",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["n"] == len(SIZES)
    rng = np.random.default_rng(1)
    gen = rng.integers(0, 256, size=(10, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "gen.npz", arr_0=gen)
    folder = tmp_path / "gen_png"
    folder.mkdir()
    for i, im in enumerate(gen):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    outputs = []
    for source in (tmp_path / "gen.npz", folder):
        r = runner.invoke(
            main,
            [
                "metrics",
                "--gen",
                str(source),
                "--ref",
                str(ref),
                "--extractor",
                "colour-stats",
                "--fid",
                "--prc",
                "--isc",
                "--json",
            ],
        )
        assert r.exit_code == 0, r.output
        outputs.append(json.loads(r.output))
    assert outputs[0]["fid"] == pytest.approx(outputs[1]["fid"], rel=1e-6) and outputs[0]["n_gen"] == 10
    feats = ColourStats()(torch.from_numpy(gen).permute(0, 3, 1, 2))
    direct = calculate_metrics(
        {"pool": feats["pool"].numpy(), "logits_unbiased": feats["logits_unbiased"].numpy()}, ReferenceStats.load(ref)
    )
    assert outputs[0]["fid"] == pytest.approx(direct["fid"], rel=1e-6)  # float32 reductions: layout
    assert outputs[0]["precision"] == direct["precision"] and outputs[0]["is"] == pytest.approx(direct["is"])
    # errors name the file
    r = runner.invoke(main, ["metrics", "--gen", str(tmp_path / "gen.npz"), "--ref", str(ref), "--fid"])
    assert r.exit_code != 0
    np.savez(tmp_path / "bad.npz", arr_0=gen.astype(np.float32))
    r = runner.invoke(
        main, ["metrics", "--gen", str(tmp_path / "bad.npz"), "--ref", str(ref), "--extractor", "colour-stats"]
    )
    assert r.exit_code != 0 and "bad.npz: arr_0 must be uint8" in r.output
    other_ref = ReferenceStats.load(ref)
    other_ref.meta["extractor"] = "inception-v3-compat"
    other_ref.save(tmp_path / "other.npz")
    r = runner.invoke(
        main,
        [
            "metrics",
            "--gen",
            str(tmp_path / "gen.npz"),
            "--ref",
            str(tmp_path / "other.npz"),
            "--extractor",
            "colour-stats",
            "--fid",
        ],
    )
    assert r.exit_code != 0 and "other.npz" in r.output and "colour-stats" in r.output

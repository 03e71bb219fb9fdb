"""metrics.images: one decoder, one rule per PIL mode, each checked against numpy arithmetic on the
raw stored values (never the same PIL call), plus the issue's 16-bit PNG case end to end."""

import io
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from glide_eval.cli import main
from metrics import register_extractor
from metrics.images import ImageError, read_rgb, to_rgb

RNG = np.random.default_rng(18)
H, W = 5, 7


def _roundtrip(img: Image.Image, fmt: str, **kw) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    buf.seek(0)
    return Image.open(buf)


def _grey3(v: np.ndarray) -> np.ndarray:
    return np.stack([v, v, v], axis=-1).astype(np.uint8)


def _round_div(num: np.ndarray, den: int) -> np.ndarray:
    """round(num / den) by float division (independent of the decoder's integer formulas)."""
    return np.floor(num.astype(np.float64) / den + 0.5).astype(np.uint8)


def test_rgb_and_l_and_1():
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb(_roundtrip(Image.fromarray(rgb), "PNG")), rgb)
    grey = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb(_roundtrip(Image.fromarray(grey), "PNG")), _grey3(grey))
    bits = RNG.integers(0, 2, (H, W)).astype(bool)
    img = _roundtrip(Image.fromarray(bits), "PNG")
    assert img.mode == "1"
    np.testing.assert_array_equal(to_rgb(img), _grey3(bits * 255))


@pytest.mark.parametrize("mode,dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2")])
def test_sixteen_bit_grey(mode, dtype):
    v = RNG.integers(0, 65536, (H, W)).astype(np.int64)
    v[0, :4] = [0, 128, 129, 65535]  # round(128/257)=0, round(129/257)=1, max -> 255
    img = Image.frombytes(mode, (W, H), v.astype(dtype).tobytes())
    expected = _round_div(v, 257)
    assert list(expected[0, :4]) == [0, 0, 1, 255]
    np.testing.assert_array_equal(to_rgb(img), _grey3(expected))


def test_sixteen_bit_png_file(tmp_path):
    v = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(v).save(path)
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(read_rgb(path), _grey3(_round_div(v, 257)))


def test_int32_grey_read_as_sixteen_bit_or_refused():
    v = RNG.integers(0, 65536, (H, W)).astype(np.int32)
    img = Image.fromarray(v, "I")
    np.testing.assert_array_equal(to_rgb(img), _grey3(_round_div(v, 257)))
    v[1, 1] = 70000
    with pytest.raises(ImageError, match=r"x.tif: 32-bit integer image with values in \[\d+, 70000\]"):
        to_rgb(Image.fromarray(v, "I"), "x.tif")
    v[1, 1] = -3
    with pytest.raises(ImageError, match=r"\[-3, "):
        to_rgb(Image.fromarray(v, "I"), "x.tif")


def test_float_grey_in_unit_range_or_refused():
    v = RNG.random((H, W)).astype(np.float32)
    v[0, 0], v[0, 1] = 0.0, 1.0
    expected = np.floor(v.astype(np.float64) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(to_rgb(Image.fromarray(v, "F")), _grey3(expected))
    with pytest.raises(ImageError, match=r"f.tif: float image with values in \[0, 200\]"):
        to_rgb(Image.fromarray(v * 200, "F"), "f.tif")
    v[2, 2] = np.nan
    with pytest.raises(ImageError, match="f.tif: float image with NaN"):
        to_rgb(Image.fromarray(v, "F"), "f.tif")


def _white_composite(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return _round_div(colour.astype(np.int64) * alpha[..., None] + 255 * (255 - alpha[..., None].astype(np.int64)), 255)


def test_rgba_composited_onto_white():
    rgba = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 255, 0
    out = to_rgb(_roundtrip(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(out, _white_composite(rgba[..., :3], rgba[..., 3]))
    np.testing.assert_array_equal(out[0, 0], rgba[0, 0, :3])  # opaque: exact colour
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])  # transparent: background


def test_la_composited_onto_white():
    la = RNG.integers(0, 256, (H, W, 2), dtype=np.uint8)
    img = _roundtrip(Image.fromarray(la, "LA"), "PNG")
    assert img.mode == "LA"
    np.testing.assert_array_equal(to_rgb(img), _grey3(_white_composite(la[..., :1], la[..., 1])[..., 0]))


def test_palette_with_and_without_transparency():
    palette = RNG.integers(0, 256, (16, 3), dtype=np.uint8)
    index = RNG.integers(0, 16, (H, W), dtype=np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette(palette.ravel().tolist())
    np.testing.assert_array_equal(to_rgb(_roundtrip(img, "PNG")), palette[index])
    # tRNS: a per-index alpha table; index 3 fully transparent, index 5 half
    alpha = np.full(16, 255, np.uint8)
    alpha[3], alpha[5] = 0, 128
    index[0, 0], index[0, 1] = 3, 5
    img = Image.fromarray(index, "P")
    img.putpalette(palette.ravel().tolist())
    loaded = _roundtrip(img, "PNG", transparency=alpha.tobytes())
    assert loaded.mode == "P" and "transparency" in loaded.info
    np.testing.assert_array_equal(to_rgb(loaded), _white_composite(palette[index], alpha[index]))


def test_grey_with_transparency_key():
    grey = RNG.integers(1, 256, (H, W), dtype=np.uint8)
    grey[2, 3] = 0
    loaded = _roundtrip(Image.fromarray(grey), "PNG", transparency=0)
    expected = _grey3(grey)
    expected[2, 3] = 255
    np.testing.assert_array_equal(to_rgb(loaded), expected)


def test_cmyk_rule():
    cmyk = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
    img = _roundtrip(Image.fromarray(cmyk, "CMYK"), "TIFF")
    assert img.mode == "CMYK"
    k = 255 - cmyk[..., 3:].astype(np.int64)
    np.testing.assert_array_equal(to_rgb(img), _round_div((255 - cmyk[..., :3].astype(np.int64)) * k, 255))


def test_ycbcr_bt601():
    ycc = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    y, cb, cr = (ycc[..., c].astype(np.float64) for c in range(3))
    rgb = np.stack(
        [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)], -1
    )
    expected = np.clip(np.rint(rgb), 0, 255)
    out = to_rgb(Image.fromarray(ycc, "YCbCr")).astype(np.float64)
    assert np.abs(out - expected).max() <= 1  # Pillow's fixed-point tables: within one level


@pytest.mark.parametrize("mode", ["LAB", "HSV", "RGBa", "La"])
def test_other_modes_refused_by_name(mode):
    img = Image.new(mode, (W, H))
    with pytest.raises(ImageError, match=f"odd.tif: image mode '{mode}' is not supported"):
        to_rgb(img, "odd.tif")


def test_unreadable_and_truncated_files_named(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="junk.png: cannot read image"):
        read_rgb(junk)
    full = tmp_path / "full.png"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:400])
    with pytest.raises(ImageError, match="cut.png: cannot read image"):
        read_rgb(cut)


class _PixelStats:
    """Stand-in extractor: per-channel means and a few coarse pixel averages (features that move with
    every grey level, so a white 16-bit misread would show)."""

    kind, name, weights_sha256 = "image", "pixel-stats-test", "1" * 64

    def __call__(self, images):
        x = images.double() / 255
        pool = torch.cat([x.mean(dim=(2, 3)), torch.nn.functional.avg_pool2d(x[:, :1], 4).flatten(1)], 1)
        return {"pool": pool.float(), "logits_unbiased": pool.float()}


register_extractor("pixel-stats-test", lambda weights_path=None, device="cpu": _PixelStats())


def test_sixteen_bit_pngs_give_the_eight_bit_fid(tmp_path):
    """The issue's case: 64 images saved as 16-bit grey PNG give the FID of the same images at 8 bits."""
    rng = np.random.default_rng(4)
    dirs = {name: tmp_path / name for name in ("g16", "g8", "ref")}
    for d in dirs.values():
        d.mkdir()
    for i in range(64):
        v16 = rng.integers(0, 30000, (8, 8)).astype(np.uint16)  # dark: misread as white would show
        Image.fromarray(v16).save(dirs["g16"] / f"{i:03d}.png")
        Image.fromarray(_round_div(v16, 257)).save(dirs["g8"] / f"{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(dirs["ref"] / f"{i:03d}.png")
    fids = {}
    for name in ("g16", "g8"):
        r = CliRunner().invoke(
            main,
            [
                "metrics",
                "--gen",
                str(dirs[name]),
                "--ref",
                str(dirs["ref"]),
                "--fid",
                "--extractor",
                "pixel-stats-test",
                "--json",
            ],
        )
        assert r.exit_code == 0, r.output
        fids[name] = json.loads(r.output)["fid"]
    assert fids["g16"] == pytest.approx(fids["g8"], rel=1e-9)
    assert fids["g8"] > 0.1


def test_metrics_folder_with_a_truncated_file_names_it(tmp_path):
    folder = tmp_path / "gen"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "1.png").write_bytes((folder / "1.png").read_bytes()[:200])
    r = CliRunner().invoke(
        main, ["metrics", "--gen", str(folder), "--isc", "--isc-splits", "1", "--extractor", "pixel-stats-test"]
    )
    assert r.exit_code == 1 and f"{folder / '1.png'}: cannot read image" in r.output

"""RunDir.save_images / saved_images: the one reader of RUN_DIR/images (the judging page and the
regression gate list saved images through it)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from glide_eval.sweep.config import Setting
from glide_eval.sweep.plan import Shard
from glide_eval.sweep.rundir import RunDir, SavedImage, keyed_shards
from storage import DamagedFile

CAPTIONS = [f"caption {i}" for i in range(8)]


def _images(ids):
    rng = np.random.default_rng(len(ids))
    return rng.integers(0, 256, (len(ids), 3, 4, 5), dtype=np.uint8)


def test_saved_images_lists_what_save_images_wrote(tmp_path):
    run = RunDir(tmp_path)
    shards = [Shard(Setting("cfg", 1.0), k, 4 * k, 4 * k + 4) for k in range(2)]
    first, second = keyed_shards(shards, "gen", CAPTIONS)
    assert run.saved_images("cfg-1") == [] and run.saved_image_settings() == []
    run.save_images(first, [0, 1, 2, 3], _images([0, 1, 2, 3]), "npz")
    run.save_images(second, [4, 5, 6], _images([4, 5, 6]), "png")
    folder = tmp_path / "images" / "cfg-1"
    (folder / ".000007.png.abcd1234.tmp").write_bytes(b"cut short")  # an interrupted write: not an image
    (folder / "notes.txt").write_text("x")
    npz = folder / "00000_000000.npz"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".000007.png.abcd1234.tmp", "00000_000000.npz", "000004.png", "000005.png", "000006.png", "notes.txt"]
    )
    listed = run.saved_images("cfg-1")
    # file-name order: "000004.png" sorts before "00000_000000.npz"
    assert listed == [SavedImage(i, folder / f"{i:06d}.png") for i in (4, 5, 6)] + [
        SavedImage(i, npz, i) for i in range(4)
    ]
    assert run.saved_image_settings() == ["cfg-1"]
    with np.load(npz) as f:  # the entries point at the pixels written
        np.testing.assert_array_equal(f["images"][listed[5].index], _images([0, 1, 2, 3])[2])
    np.testing.assert_array_equal(np.asarray(Image.open(listed[1].path)).transpose(2, 0, 1), _images([4, 5, 6])[1])


def test_an_npz_without_sample_ids_is_named(tmp_path):
    folder = tmp_path / "images" / "unguided"
    folder.mkdir(parents=True)
    np.savez(folder / "00000_000000.npz", images=np.zeros((1, 3, 2, 2), np.uint8))
    with pytest.raises(DamagedFile, match=r"00000_000000\.npz: not a saved-images npz"):
        RunDir(tmp_path).saved_images("unguided")

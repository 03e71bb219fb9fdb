"""Small sweep run directories with saved images, written in the layout `glide-eval sweep
--save-images` leaves (config.toml, captions.json, images/SETTING/...), for the judge tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CAPTIONS = [
    "a red cube on a table",
    "a blue ball, in the grass",
    'a green "cat" sleeping',
    "a grey bus at night",
    "a yellow tree by a lake",
    "an orange boat on the sea",
]
SETTING_COLOURS = {"unguided": (200, 40, 40), "cfg-1": (40, 160, 40), "cfg-3": (40, 40, 200)}


def sample_image(setting: str, sid: int, size: int = 32) -> np.ndarray:
    """[3, size, size] uint8: the setting's colour, with sample id's stripe (distinct per image)."""
    image = np.zeros((3, size, size), np.uint8)
    image[:] = np.array(SETTING_COLOURS.get(setting, (90, 90, 90)), np.uint8)[:, None, None]
    image[:, sid % size, :] = 255
    return image


def write_run(
    root: Path,
    name: str = "run",
    seed: int = 7,
    captions: list[str] = CAPTIONS,
    npz_settings: tuple[str, ...] = ("cfg-1",),
    save: tuple[str, ...] = ("unguided", "cfg-1", "cfg-3"),
    cfg: str = "[1.0, 3.0]",
) -> Path:
    """A run directory: unguided + cfg scales; PNGs for the settings in ``save``, npz batches of 4
    for those in ``npz_settings``."""
    run = root / name
    (run / "images").mkdir(parents=True)
    (run / "config.toml").write_text(f"""
[run]
output_dir = "{run}"
seed = {seed}
shard_size = 4
[models]
engine = "toy"
[captions]
source = "file"
path = "caps.txt"
n = {len(captions)}
[grid]
unguided = true
cfg = {cfg}
clip = []
""")
    (run / "captions.json").write_text(json.dumps(captions))
    for setting in save:
        folder = run / "images" / setting
        folder.mkdir()
        ids = list(range(len(captions)))
        if setting in npz_settings:
            for k, start in enumerate(range(0, len(ids), 4)):
                batch = ids[start : start + 4]
                np.savez_compressed(
                    folder / f"{k:05d}_{batch[0]:06d}.npz",
                    sample_ids=np.array(batch),
                    images=np.stack([sample_image(setting, s) for s in batch]),
                )
        else:
            for s in ids:
                Image.fromarray(sample_image(setting, s).transpose(1, 2, 0)).save(folder / f"{s:06d}.png")
    return run

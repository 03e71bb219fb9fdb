"""A procedural, seeded world of captioned images: coloured shapes on plain backgrounds.

Every scene is a pure function of (split, index, seed): `scene(i, split)` draws shape,
colour, size, count, background, positions, rotations and small colour jitter;
`render(scene, size)` draws it with numpy (4x supersampled, so edges are anti-aliased)
at any size, so the 32x32 and 64x64 images of one index show the same scene.
The "validation" split plays MS-COCO's role: its captions drive generation and its
images are the reference set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 80, 225),
    "yellow": (235, 215, 50),
    "purple": (150, 60, 190),
    "white": (240, 240, 240),
}
BACKGROUNDS = {
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "white": (245, 245, 245),
    "blue": (40, 60, 150),
    "green": (40, 120, 50),
}
SIZES = {"small": 0.11, "large": 0.19}  # half-extent as a fraction of the image side
COUNT_WORDS = ("one", "two", "three")
SPLITS = {"train": 0, "validation": 1}
# attribute -> class names, in label order
ATTRIBUTES = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "count": COUNT_WORDS,
    "size": tuple(SIZES),
    "background": tuple(BACKGROUNDS),
}
TEMPLATES = (
    "{count} {size} {colour} {shape} on a {background} background",
    "a {background} background with {count} {size} {colour} {shape}",
    "{count} {colour} {shape} , {size} , on a {background} background",
)
_JITTER = 12  # max per-channel colour jitter (0..255)


@dataclass(frozen=True)
class Scene:
    labels: dict  # attribute -> class index (see ATTRIBUTES)
    caption: str
    objects: tuple  # ((cx, cy, half_extent, angle, (r, g, b)), ...) in unit coordinates
    background: tuple  # (r, g, b)


def _rng(split: str, index: int, seed: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    if index < 0:
        raise ValueError(f"scene index must be >= 0, got {index}")
    return np.random.default_rng([seed, SPLITS[split], index])


def caption_for(labels: dict, template: int = 0) -> str:
    """The caption of a label dict, e.g. 'two small red circles on a blue background'."""
    count = labels["count"] + 1
    shape = SHAPES[labels["shape"]] + ("s" if count > 1 else "")
    words = {
        "count": "a" if count == 1 and template != 0 else COUNT_WORDS[count - 1],
        "shape": shape,
        "size": ATTRIBUTES["size"][labels["size"]],
        "colour": ATTRIBUTES["colour"][labels["colour"]],
        "background": ATTRIBUTES["background"][labels["background"]],
    }
    return TEMPLATES[template].format(**words)


def scene(index: int, split: str = "train", seed: int = 0) -> Scene:
    """The scene number `index` of `split` (deterministic)."""
    rng = _rng(split, index, seed)
    labels = {name: int(rng.integers(len(values))) for name, values in ATTRIBUTES.items()}
    colour_name = ATTRIBUTES["colour"][labels["colour"]]
    while ATTRIBUTES["background"][labels["background"]] == colour_name:  # keep objects visible
        labels["background"] = int(rng.integers(len(BACKGROUNDS)))
    count = labels["count"] + 1
    half = SIZES[ATTRIBUTES["size"][labels["size"]]] * rng.uniform(0.9, 1.1)
    base = np.array(COLOURS[colour_name], dtype=np.float64)
    objects, tries = [], 0
    while len(objects) < count:
        cx, cy = rng.uniform(half + 0.02, 1 - half - 0.02, size=2)
        tries += 1
        if tries < 500 and any(np.hypot(cx - o[0], cy - o[1]) < 2.05 * half for o in objects):
            continue
        colour = tuple(np.clip(base + rng.integers(-_JITTER, _JITTER + 1, size=3), 0, 255).tolist())
        objects.append((float(cx), float(cy), float(half), float(rng.uniform(0, 2 * np.pi)), colour))
    bg = np.array(BACKGROUNDS[ATTRIBUTES["background"][labels["background"]]], dtype=np.float64)
    bg = tuple(np.clip(bg + rng.integers(-_JITTER, _JITTER + 1, size=3), 0, 255).tolist())
    caption = caption_for(labels, int(rng.integers(len(TEMPLATES))))
    return Scene(labels=labels, caption=caption, objects=tuple(objects), background=bg)


def _shape_mask(shape: str, x: np.ndarray, y: np.ndarray, obj) -> np.ndarray:
    cx, cy, half, angle, _ = obj
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # object-frame coordinates
    if shape == "square":
        side = half * 0.85
        return (np.abs(u) <= side) & (np.abs(v) <= side)
    if shape == "diamond":
        return np.abs(u) / (half * 0.75) + np.abs(v) / half <= 1
    # equilateral triangle inscribed in the circle of radius `half`
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        a = angle + 2 * np.pi * k / 3
        nx, ny = np.cos(a), np.sin(a)
        inside &= (dx * nx + dy * ny) >= -half * 0.5
    return inside


def render(sc: Scene, size: int = 32, supersample: int = 4) -> np.ndarray:
    """uint8 [3, size, size] image of a scene."""
    n = size * supersample
    coords = (np.arange(n) + 0.5) / n
    x, y = np.meshgrid(coords, coords)
    img = np.empty((n, n, 3), dtype=np.float64)
    img[:] = sc.background
    shape = SHAPES[sc.labels["shape"]]
    for obj in sc.objects:
        img[_shape_mask(shape, x, y, obj)] = obj[4]
    img = img.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return np.round(img).clip(0, 255).astype(np.uint8).transpose(2, 0, 1)


def dataset(n: int, split: str = "train", size: int = 32, seed: int = 0, start: int = 0):
    """(images uint8 [n, 3, size, size], captions list[str], labels {attribute: int64 [n]})."""
    scenes = [scene(start + i, split, seed) for i in range(n)]
    images = np.stack([render(s, size) for s in scenes]) if n else np.zeros((0, 3, size, size), np.uint8)
    labels = {name: np.array([s.labels[name] for s in scenes], dtype=np.int64) for name in ATTRIBUTES}
    return images, [s.caption for s in scenes], labels


def parse_caption(caption: str) -> dict:
    """Attribute labels named by a caption of this world (inverse of `caption_for`)."""
    words = caption.lower().replace(",", " ").split()
    found = {}
    for name, values in (("shape", SHAPES), ("colour", tuple(COLOURS)), ("size", tuple(SIZES))):
        for i, w in enumerate(words):
            if words[i + 1 : i + 2] == ["background"]:
                continue
            stem = w[:-1] if w.endswith("s") and w[:-1] in values else w
            if stem in values and name not in found:
                found[name] = values.index(stem)
    for i, w in enumerate(words):
        if "count" not in found and (w in COUNT_WORDS or (w == "a" and words[i + 2 : i + 3] != ["background"])):
            found["count"] = COUNT_WORDS.index(w) if w in COUNT_WORDS else 0
        if w == "background" and i > 0 and words[i - 1] in BACKGROUNDS:
            found["background"] = tuple(BACKGROUNDS).index(words[i - 1])
    return found


def sample_captions(n: int, seed: int = 0) -> list[str]:
    """n validation captions (the toy stand-in for sampled MS-COCO captions)."""
    return [scene(i, "validation", seed).caption for i in range(n)]

"""Sweep configuration: a TOML file, validated into a `SweepConfig`.

Every key has a default (see `glide_eval/configs/default.toml` for a commented example).
Unknown keys and wrong types are errors that name the key, so a typo never silently
falls back to a default. Paths left empty are filled from the environment
(GLIDE_CHECKPOINTS, GLIDE_EVAL_INCEPTION, GLIDE_EVAL_CLIP, GLIDE_EVAL_COCO). Relative
input paths are resolved against the config file's folder; a relative `run.output_dir`
against the current directory.

`config_hash` covers every key except `output_dir` and `save_images`. The batch size is
in it: samples are seeded per sample index, but floating-point results can still move in
the last bits with the batch size, so resuming with another batch size needs --force
(which keeps the finished shards).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and key."""


ENV_VARS = {
    ("models", "checkpoints"): "GLIDE_CHECKPOINTS",
    ("weights", "inception"): "GLIDE_EVAL_INCEPTION",
    ("weights", "clip"): "GLIDE_EVAL_CLIP",
    ("captions", "path"): "GLIDE_EVAL_COCO",
}

# section -> key -> default. The type of the default is the required type
# (ints are accepted where floats are expected; lists hold numbers or strings).
SCHEMA: dict[str, dict[str, object]] = {
    "run": {
        "output_dir": "runs/sweep",
        "seed": 0,
        "batch_size": 16,
        "shard_size": 256,
        "device": "auto",  # auto | cpu | cuda
        "dtype": "float32",  # float32 | float16 | bfloat16
        "previews": 4,  # preview images kept from each shard
        "save_images": "none",  # none | png | npz
    },
    "models": {
        "engine": "glide",  # glide | toy | python:MODULE:FACTORY
        "checkpoints": "",  # folder with the released base.pt, upsample.pt, clip_*_enc.pt
    },
    "weights": {"inception": "", "clip": ""},
    "sampler": {
        "resolution": 64,  # glide: 64 (base model) or 256 (+ upsampler); toy: 16 or 32
        "method": "ancestral",  # ancestral | ddim
        "base_respacing": "250",
        "upsample_respacing": "fast27",
        "upsample_temperature": 0.997,
    },
    "captions": {"source": "coco", "path": "", "n": 30000, "seed": 0},
    # clip_method: the sampling method of the CLIP-guided settings ("": [sampler] method).
    # steps: base respacings sampled with each of steps_methods at steps_guidance
    # ("unguided" or "cfg:SCALE"), as extra settings of family "steps" (FID vs number of steps),
    # on the first steps_n captions (0: all; else a multiple of [run] shard_size)
    "grid": {"unguided": True, "cfg": [], "clip": [], "clip_method": "", "steps": [],
             "steps_methods": ["ancestral", "ddim"], "steps_guidance": "cfg:3.0", "steps_n": 0},
    "metrics": {
        "names": ["fid", "is", "precision", "recall", "clip_score"],
        "reference": "",  # cached reference statistics (.npz); built there when absent or stale
        "reference_n": 0,  # real images in the reference (0: the whole validation set)
        "ci": False,
        "bootstrap": 200,
    },
    "engine_options": {},  # free-form table passed to a python: engine factory
}

CHOICES = {
    ("run", "device"): ("auto", "cpu", "cuda"),
    ("run", "dtype"): ("float32", "float16", "bfloat16"),
    ("run", "save_images"): ("none", "png", "npz"),
    ("sampler", "method"): ("ancestral", "ddim"),
    ("grid", "clip_method"): ("", "ancestral", "ddim"),
    ("captions", "source"): ("coco", "toy", "file"),
}
KNOWN_METRICS = ("fid", "is", "precision", "recall", "clip_score")
POSITIVE = {("run", "batch_size"), ("run", "shard_size"), ("captions", "n"), ("sampler", "resolution")}
PATH_KEYS = {
    ("run", "output_dir"), ("models", "checkpoints"), ("weights", "inception"),
    ("weights", "clip"), ("captions", "path"), ("metrics", "reference"),
}
# keys that do not change what a sweep produces
UNHASHED = {("run", "output_dir"), ("run", "save_images")}
STEPS_KEYS = ("steps", "steps_methods", "steps_guidance", "steps_n")  # hashed only when steps are given


@dataclass(frozen=True)
class Setting:
    """One point of the grid: family 'none' (unguided), 'cfg', 'clip', or 'steps'.

    A 'steps' setting overrides [sampler]: it samples with `method` and base `respacing`,
    guided by `guided_by` ('none' or 'cfg') at `scale`. A 'clip' setting has `method` when
    `[grid] clip_method` differs from [sampler]'s. Other settings leave them None.
    """

    family: str
    scale: float
    method: str | None = None
    respacing: str | None = None
    guided_by: str | None = None

    @property
    def name(self) -> str:
        if self.family == "steps":
            return f"steps-{self.method}-{self.respacing}"
        return "unguided" if self.family == "none" else f"{self.family}-{self.scale:g}"

    @property
    def guidance(self) -> tuple[str, float]:
        """What the sampler is given. CLIP scale 0 is the conditional model alone ("none"):
        the CLIP family's own unguided point when it samples with another method
        (`clip_method`) than the other settings. (Classifier-free scale 0 is the
        unconditional model, and stays a cfg setting.)"""
        if self.family == "clip" and self.scale == 0:
            return ("none", 0.0)
        return (self.guided_by or self.family, self.scale)

    def sampler(self, config: "SweepConfig") -> tuple[str, str]:
        """(method, base respacing): this setting's own, else [sampler]'s."""
        return (self.method or config["sampler"]["method"],
                self.respacing or config["sampler"]["base_respacing"])

    def sampling(self, config: "SweepConfig") -> tuple:
        """What decides this setting's samples: settings equal here draw the same images."""
        return (self.guidance, self.sampler(config))


@dataclass
class SweepConfig:
    data: dict  # validated, resolved: section -> key -> value
    source: Path | None = None

    def __getitem__(self, section: str) -> dict:
        return self.data[section]

    @property
    def output_dir(self) -> Path:
        return Path(self.data["run"]["output_dir"])

    def n_samples(self, setting: Setting) -> int:
        """Samples of one setting: the first `[grid] steps_n` captions for a steps setting, else all."""
        n, steps_n = self.data["captions"]["n"], self.data["grid"]["steps_n"]
        return steps_n if setting.family == "steps" and 0 < steps_n < n else n

    @property
    def clip_guided(self) -> bool:
        """Whether a setting needs the noised CLIP (a CLIP scale above 0)."""
        return any(s.guidance[0] == "clip" for s in self.settings)

    @property
    def settings(self) -> list[Setting]:
        grid = self.data["grid"]
        out = [Setting("none", 0.0)] if grid["unguided"] else []
        out += [Setting("cfg", float(s)) for s in grid["cfg"]]
        out += [Setting("clip", float(s), grid["clip_method"] or None) for s in grid["clip"]]
        guided_by, scale = parse_steps_guidance(grid["steps_guidance"])
        out += [Setting("steps", scale, method, respacing, guided_by)
                for method in grid["steps_methods"] for respacing in grid["steps"]]
        return out

    def hashed_data(self) -> dict:
        d = copy.deepcopy(self.data)
        for section, key in UNHASHED:
            d[section].pop(key, None)
        if not d["grid"].get("steps"):  # configs without steps keep the hash they had before
            for key in STEPS_KEYS:
                d["grid"].pop(key, None)
        for key in ("clip_method", "steps_n"):  # nor do configs without these keys
            if not d["grid"].get(key):
                d["grid"].pop(key, None)
        return d

    @property
    def config_hash(self) -> str:
        return sha256_json(self.hashed_data())

    def with_overrides(self, **section_keys) -> "SweepConfig":
        """A copy with e.g. run={"output_dir": ...} merged in, then validated again."""
        d = copy.deepcopy(self.data)
        for section, values in section_keys.items():
            d.setdefault(section, {}).update(values)
        return validate(d, self.source, resolve_paths=False)

    def to_toml(self) -> str:
        return dump_toml(self.data)


def parse_steps_guidance(text: str) -> tuple[str, float]:
    """("none", 0.0) for "unguided", ("cfg", s) for "cfg:s"."""
    if text == "unguided":
        return ("none", 0.0)
    kind, _, scale = text.partition(":")
    try:
        value = float(scale)
    except ValueError:
        value = float("nan")
    if kind != "cfg" or not math.isfinite(value) or value < 0:
        raise ValueError(f"must be 'unguided' or 'cfg:SCALE' (SCALE >= 0), got {text!r}")
    return ("cfg", value)


def sha256_json(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> SweepConfig:
    """Read, fill from the environment, resolve paths and validate a TOML config."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)
    return validate(raw, path)


def validate(raw: dict, source: Path | None = None, resolve_paths: bool = True) -> SweepConfig:
    where = f"{source}" if source else "config"

    def fail(key: str, msg: str):
        raise ConfigError(f"{where}: [{key}] {msg}")

    data: dict[str, dict] = {}
    for section in raw:
        if section not in SCHEMA:
            fail(section, f"unknown section (known: {', '.join(SCHEMA)})")
        if not isinstance(raw[section], dict):
            fail(section, "must be a table")
    for section, defaults in SCHEMA.items():
        given = raw.get(section, {})
        if section == "engine_options":
            data[section] = copy.deepcopy(given)
            continue
        for key in given:
            if key not in defaults:
                fail(f"{section}.{key}", f"unknown key (known: {', '.join(defaults)})")
        values = {}
        for key, default in defaults.items():
            value = copy.deepcopy(given.get(key, default))
            values[key] = _check_type(f"{section}.{key}", value, default, fail)
        data[section] = values

    for (section, key), choices in CHOICES.items():
        if data[section][key] not in choices:
            fail(f"{section}.{key}", f"must be one of {list(choices)}, got {data[section][key]!r}")
    if data["grid"]["clip_method"] == data["sampler"]["method"]:
        data["grid"]["clip_method"] = ""  # [sampler]'s own method: clip settings as without the key
    for section, key in POSITIVE:
        if data[section][key] <= 0:
            fail(f"{section}.{key}", f"must be positive, got {data[section][key]}")
    if data["run"]["previews"] < 0:
        fail("run.previews", "must be >= 0")
    if data["metrics"]["reference_n"] < 0:
        fail("metrics.reference_n", "must be >= 0")
    if data["metrics"]["bootstrap"] < 0:
        fail("metrics.bootstrap", "must be >= 0")
    engine = data["models"]["engine"]
    if engine not in ("glide", "toy") and not re.fullmatch(r"python:[\w.]+:\w+", engine):
        fail("models.engine", f"must be 'glide', 'toy' or 'python:MODULE:FACTORY', got {engine!r}")
    for family in ("cfg", "clip"):
        scales = data["grid"][family]
        for s in scales:
            if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s) or s < 0:
                fail(f"grid.{family}", f"scales must be finite numbers >= 0, got {s!r}")
        if len(set(map(float, scales))) != len(scales):
            fail(f"grid.{family}", f"scales repeat: {scales}")
        data["grid"][family] = [float(s) for s in scales]
    _check_steps(data["grid"], fail)
    steps_n, shard_size = data["grid"]["steps_n"], data["run"]["shard_size"]
    if steps_n < 0:
        fail("grid.steps_n", f"must be >= 0 (0: all captions), got {steps_n}")
    if steps_n >= data["captions"]["n"]:
        data["grid"]["steps_n"] = 0  # all captions: the same sweep (and hash) as without the key
    elif steps_n % shard_size:
        fail("grid.steps_n", f"must be a multiple of [run] shard_size ({shard_size}) so that the steps "
                             f"settings' shards are the first shards of the others, got {steps_n}")
    if not (data["grid"]["unguided"] or data["grid"]["cfg"] or data["grid"]["clip"] or data["grid"]["steps"]):
        fail("grid", "no settings: set unguided = true or give cfg / clip scales or steps")
    for name in data["metrics"]["names"]:
        if name not in KNOWN_METRICS:
            fail("metrics.names", f"unknown metric {name!r} (known: {', '.join(KNOWN_METRICS)})")
    for key in ("base_respacing", "upsample_respacing"):
        try:
            count_steps(data["sampler"][key])
        except ValueError as e:
            fail(f"sampler.{key}", str(e))

    for (section, key), var in ENV_VARS.items():
        if (section, key) == ("models", "checkpoints") and data["models"]["engine"] == "toy":
            continue  # GLIDE_CHECKPOINTS names released GLIDE files, never the toy weights
        if not data[section][key] and os.environ.get(var):
            data[section][key] = os.environ[var]
    if resolve_paths:
        for section, key in PATH_KEYS:
            # outputs go where you run from; inputs are found next to the config file
            base = Path.cwd() if (section, key) == ("run", "output_dir") or source is None \
                else source.resolve().parent
            value = data[section][key]
            if value:
                data[section][key] = str((base / Path(value).expanduser()).resolve())
    return SweepConfig(data, source)


def _check_steps(grid: dict, fail) -> None:
    steps = [str(s) if isinstance(s, int) and not isinstance(s, bool) else s for s in grid["steps"]]
    for s in steps:
        if not isinstance(s, str):
            fail("grid.steps", f"must be respacing strings like \"50\", got {s!r}")
        try:
            count_steps(s)
        except ValueError as e:
            fail("grid.steps", str(e))
        if not re.fullmatch(r"[\w,]+", s):
            fail("grid.steps", f"respacing {s!r} has characters unfit for a setting name")
    if len(set(steps)) != len(steps):
        fail("grid.steps", f"respacings repeat: {steps}")
    grid["steps"] = steps
    methods = grid["steps_methods"]
    for m in methods:
        if m not in CHOICES[("sampler", "method")]:
            fail("grid.steps_methods", f"methods must be in {list(CHOICES[('sampler', 'method')])}, got {m!r}")
    if len(set(methods)) != len(methods) or (steps and not methods):
        fail("grid.steps_methods", f"must list distinct methods, got {methods}")
    try:
        parse_steps_guidance(grid["steps_guidance"])
    except ValueError as e:
        fail("grid.steps_guidance", str(e))


def _check_type(key, value, default, fail):
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        fail(key, f"must be {type(default).__name__}, got {type(value).__name__} {value!r}")
    return value


def count_steps(respacing: str) -> int:
    """Number of denoising steps of a respacing string: "250", "fast27", "ddim50", "10,10,5"."""
    text = str(respacing).strip()
    if text == "fast27":
        return 27
    if text.startswith("ddim") and text[4:].isdigit():
        return int(text[4:])
    parts = text.split(",")
    if all(p.strip().isdigit() and int(p) > 0 for p in parts):
        return sum(int(p) for p in parts)
    raise ValueError(f"respacing must be like '250', 'fast27', 'ddim50' or '10,10,5', got {respacing!r}")


def dump_toml(data: dict) -> str:
    """Write a two-level config dict (tables of scalars, lists and subtables) as TOML."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    def table(prefix, d, out):
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in d.items() if isinstance(v, dict)}
        out.append(f"[{prefix}]")
        out.extend(f"{json.dumps(k)} = {value(v)}" for k, v in scalars.items())
        out.append("")
        for k, v in tables.items():
            table(f"{prefix}.{json.dumps(k)}", v, out)

    out: list[str] = []
    for section, d in data.items():
        table(section, d, out)
    return "\n".join(out)

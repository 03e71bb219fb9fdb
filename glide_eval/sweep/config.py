"""Sweep configuration: a TOML file, validated into a `SweepConfig`.

Every key has a default (see `glide_eval/configs/default.toml` for a commented example).
Unknown keys and wrong types are errors that name the key, so a typo never silently
falls back to a default. Paths left empty are filled from the environment
(GLIDE_CHECKPOINTS, GLIDE_EVAL_INCEPTION, GLIDE_EVAL_CLIP, GLIDE_EVAL_COCO).

One rule for relative paths: every relative path -- written in the config file, given in an
environment variable or a command-line flag -- is relative to the current directory (the
folder you run glide-eval from), never to the config file's folder; `~` is expanded. The
resolved, absolute paths are written to RUN_DIR/config.toml.

`config_hash` covers every key except `output_dir` and `save_images`, and the input paths
(checkpoints, weights, captions, reference) only as whether they are set: what they hold
enters by content (the files' sha256 in the generation hash, the captions themselves in
the shard keys), so the same files under another folder resume the same run. The batch
size is in it: samples are seeded per sample index, but floating-point results can still
move in the last bits with the batch size, so resuming with another batch size needs
--force (which keeps the finished shards).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from metrics.names import CLIP_ROLE, DEFAULT_EXTRACTORS, DINOV2_ROLE, METRIC_NAMES, SELECTABLE_NAMES
from samplers.guidance_specs import is_unguided, setting_name, split_guidance
from samplers.sampling import SAMPLERS, check_sampler_options, min_steps
from samplers.schedules import count_steps
from storage import sha256_json


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and key."""


# One dataclass per TOML section; the field defaults are the config's defaults and their
# types the required types (ints are accepted where floats are expected; lists hold numbers
# or strings). `SCHEMA` below is read from them.


@dataclass(frozen=True)
class RunConfig:
    output_dir: str = "runs/sweep"
    seed: int = 0
    batch_size: int = 16
    shard_size: int = 256
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "float32"  # float32 | float16 | bfloat16 (the UNets converted once, norms float32)
    tf32: bool = False  # TF32 matmuls/convolutions on CUDA (off: float32 as on a CPU)
    previews: int = 4  # preview images kept from each shard
    save_images: str = "none"  # none | png | npz


@dataclass(frozen=True)
class ModelsConfig:
    engine: str = "glide"  # glide | toy | python:MODULE:FACTORY
    checkpoints: str = ""  # folder with the released base.pt, upsample.pt, clip_*_enc.pt


@dataclass(frozen=True)
class WeightsConfig:
    inception: str = ""
    clip: str = ""
    dinov2: str = ""  # official DINOv2 checkpoint (fd_dinov2, density, coverage)
    clip_image: str = ""  # OpenAI CLIP file of [metrics] clip_image_extractor (cmmd, fd_clip)
    # use an Inception file that is not torch-fidelity's (its numbers match no published one)
    allow_unknown_inception: bool = False


@dataclass(frozen=True)
class SamplerConfig:
    resolution: int = 64  # glide: 64 (base model) or 256 (+ upsampler); toy: 16 or 32
    method: str = "ancestral"  # a name of samplers.sampling.SAMPLERS
    base_respacing: str = "250"
    upsample_respacing: str = "fast27"
    upsample_temperature: float = 0.997


@dataclass(frozen=True)
class CaptionsConfig:
    source: str = "coco"  # coco | toy | file
    path: str = ""
    n: int = 30000
    seed: int = 0


@dataclass(frozen=True)
class GridConfig:
    """clip_method: the sampling method of the CLIP-guided settings ("": [sampler] method).
    steps: base respacings sampled with each of steps_methods at steps_guidance
    ("unguided" or "cfg:SCALE"), as extra settings of family "steps" (FID vs number of steps),
    on the first steps_n captions (0: all; else a multiple of [run] shard_size).
    steps_reference: the steps setting ("METHOD-RESPACING", e.g. "ancestral-250") each other
    steps setting is compared with by a paired FID difference ("": ancestral-250 when sampled).
    A reference named here that no other setting samples is a steps setting of its own (sampled
    on the steps_n captions), so a long reference costs one setting, not one per method."""

    unguided: bool = True
    cfg: list = field(default_factory=list)
    clip: list = field(default_factory=list)
    clip_method: str = ""
    steps: list = field(default_factory=list)
    steps_methods: list = field(default_factory=lambda: ["ancestral", "ddim"])
    steps_guidance: str = "cfg:3.0"
    steps_n: int = 0
    steps_reference: str = ""


@dataclass(frozen=True)
class MetricsConfig:
    names: list = field(default_factory=lambda: list(METRIC_NAMES))
    reference: str = ""  # cached reference statistics (.npz); built there when absent or stale
    reference_n: int = 0  # real images in the reference (0: the whole validation set)
    ci: bool = False  # intervals (influence functions); the shipped configs turn them on
    bootstrap: int = 200  # obsolete (intervals are no longer bootstrapped): accepted, not used
    dinov2_extractor: str = DEFAULT_EXTRACTORS[DINOV2_ROLE]  # of fd_dinov2, density, coverage
    clip_image_extractor: str = DEFAULT_EXTRACTORS[CLIP_ROLE]  # of cmmd, fd_clip


SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "models": ModelsConfig,
    "weights": WeightsConfig,
    "sampler": SamplerConfig,
    "captions": CaptionsConfig,
    "grid": GridConfig,
    "metrics": MetricsConfig,
}
FREE_FORM = "engine_options"  # free-form table passed to a python: engine factory
# [sampler_options.METHOD] tables: a sampler's options (its samplers.sampling.SamplerRecord's, e.g.
# unipc order / variant / corrector, ddim eta; lambda_min for every sampler), validated by
# samplers.sampling.check_sampler_options
SAMPLER_OPTIONS_SECTION = "sampler_options"


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


# section -> key -> default (the sections' dataclasses, in their order)
SCHEMA: dict[str, dict[str, object]] = {
    **{name: {f.name: _default(f) for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()},
    FREE_FORM: {},
    SAMPLER_OPTIONS_SECTION: {},
}

ENV_VARS = {
    ("models", "checkpoints"): "GLIDE_CHECKPOINTS",
    ("weights", "inception"): "GLIDE_EVAL_INCEPTION",
    ("weights", "clip"): "GLIDE_EVAL_CLIP",
    ("weights", "dinov2"): "GLIDE_EVAL_DINOV2",
    ("weights", "clip_image"): "GLIDE_EVAL_CLIP_IMAGE",
    ("captions", "path"): "GLIDE_EVAL_COCO",
}
FIXED_CHOICES = {
    ("run", "device"): ("auto", "cpu", "cuda"),
    ("run", "dtype"): ("float32", "float16", "bfloat16"),
    ("run", "save_images"): ("none", "png", "npz"),
    ("captions", "source"): ("coco", "toy", "file"),
}


def sampling_methods() -> tuple[str, ...]:
    """The sampling methods a config may name: whatever samplers' registry holds when it is
    validated (a sampler added to `samplers.sampling.SAMPLERS` needs no change here)."""
    return tuple(SAMPLERS)


def choices() -> dict[tuple[str, str], tuple]:
    """(section, key) -> the values it may take, in the order they are checked."""
    methods = sampling_methods()
    out = {k: v for k, v in FIXED_CHOICES.items() if k[0] == "run"}
    out.update({("sampler", "method"): methods, ("grid", "clip_method"): ("", *methods)})
    out[("captions", "source")] = FIXED_CHOICES[("captions", "source")]
    return out


POSITIVE = {("run", "batch_size"), ("run", "shard_size"), ("captions", "n"), ("sampler", "resolution")}
NON_NEGATIVE = (("run", "previews"), ("metrics", "reference_n"), ("metrics", "bootstrap"))
PATH_KEYS = {
    ("run", "output_dir"),
    ("models", "checkpoints"),
    ("weights", "inception"),
    ("weights", "clip"),
    ("weights", "dinov2"),
    ("weights", "clip_image"),
    ("captions", "path"),
    ("metrics", "reference"),
}
INPUT_PATH_KEYS = PATH_KEYS - {("run", "output_dir")}
GIVEN = "<given>"  # what the config hash holds of a set input path (its content is hashed instead)
# keys that do not change what a sweep produces
UNHASHED = {("run", "output_dir"), ("run", "save_images"), ("weights", "allow_unknown_inception")}
STEPS_KEYS = (
    "steps",
    "steps_methods",
    "steps_guidance",
    "steps_n",
    "steps_reference",
)  # hashed only when steps are given


class Sampling(NamedTuple):
    """What decides a setting's samples (`Setting.sampling`)."""

    guidance: tuple[str, float]
    method: str
    respacing: str


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
        return setting_name(self.family, self.scale)

    @property
    def guidance(self) -> tuple[str, float]:
        """What the sampler is given. CLIP scale 0 is the conditional model alone ("none"):
        the CLIP family's own unguided point when it samples with another method
        (`clip_method`) than the other settings. (Classifier-free scale 0 is the
        unconditional model, and stays a cfg setting.)"""
        if self.family == "clip" and self.scale == 0:
            return ("none", 0.0)
        return (self.guided_by or self.family, self.scale)

    def sampling(self, config: SweepConfig) -> Sampling:
        """How this setting samples: its guidance, and the method and base respacing (its own, else
        [sampler]'s). Settings with equal ones draw the same images."""
        return Sampling(
            self.guidance, self.method or config.sampler.method, self.respacing or config.sampler.base_respacing
        )


@dataclass
class SweepConfig:
    """A validated config: typed sections (`config.run.batch_size`, ...) over `data`, the
    resolved section -> key -> value dict that is hashed and written to config.toml.
    `config["section"]` gives a section's dict, for `python:` engine factories."""

    data: dict
    source: Path | None = None

    def __post_init__(self) -> None:
        self.run: RunConfig = RunConfig(**self.data["run"])
        self.models: ModelsConfig = ModelsConfig(**self.data["models"])
        self.weights: WeightsConfig = WeightsConfig(**self.data["weights"])
        self.sampler: SamplerConfig = SamplerConfig(**self.data["sampler"])
        self.captions: CaptionsConfig = CaptionsConfig(**self.data["captions"])
        self.grid: GridConfig = GridConfig(**self.data["grid"])
        self.metrics: MetricsConfig = MetricsConfig(**self.data["metrics"])
        self.engine_options: dict = self.data[FREE_FORM]
        self.sampler_options: dict = self.data[SAMPLER_OPTIONS_SECTION]

    def __getitem__(self, section: str) -> dict:
        return self.data[section]

    @property
    def output_dir(self) -> Path:
        return Path(self.run.output_dir)

    def n_samples(self, setting: Setting) -> int:
        """Samples of one setting: the first `[grid] steps_n` captions for a steps setting, else all."""
        n, steps_n = self.captions.n, self.grid.steps_n
        return steps_n if setting.family == "steps" and 0 < steps_n < n else n

    @property
    def clip_guided(self) -> bool:
        """Whether a setting needs the noised CLIP (a CLIP scale above 0)."""
        return any(s.guidance[0] == "clip" for s in self.settings)

    @property
    def settings(self) -> list[Setting]:
        grid = self.grid
        out = [Setting("none", 0.0)] if grid.unguided else []
        out += [Setting("cfg", float(s)) for s in grid.cfg]
        out += [Setting("clip", float(s), grid.clip_method or None) for s in grid.clip]
        guided_by, scale = parse_steps_guidance(grid.steps_guidance)
        out += [
            Setting("steps", scale, method, respacing, guided_by)
            for method in grid.steps_methods
            for respacing in grid.steps
        ]
        if grid.steps and grid.steps_reference:
            method, _, respacing = grid.steps_reference.partition("-")
            reference = Setting("steps", scale, method, respacing, guided_by)
            if all(s.sampling(self) != reference.sampling(self) for s in out):
                out.append(reference)
        return out

    def hashed_data(self) -> dict:
        d = copy.deepcopy(self.data)
        for section, key in UNHASHED:
            d[section].pop(key, None)
        for section, key in INPUT_PATH_KEYS:  # where the files are is not what they hold
            if d[section].get(key):
                d[section][key] = GIVEN
        if not d["grid"].get("steps"):  # configs without steps keep the hash they had before
            for key in STEPS_KEYS:
                d["grid"].pop(key, None)
        for key in ("clip_method", "steps_n", "steps_reference"):  # nor do configs without these keys
            if not d["grid"].get(key):
                d["grid"].pop(key, None)
        if not d.get(SAMPLER_OPTIONS_SECTION):  # nor configs without sampler options
            d.pop(SAMPLER_OPTIONS_SECTION, None)
        if not d["run"].get("tf32"):  # nor configs from before the key (TF32 off)
            d["run"].pop("tf32", None)
        for key in ("dinov2", "clip_image"):  # nor configs without the extractors beyond Inception
            if not d["weights"].get(key):
                d["weights"].pop(key, None)
        for key, role in (("dinov2_extractor", DINOV2_ROLE), ("clip_image_extractor", CLIP_ROLE)):
            if d["metrics"].get(key) == DEFAULT_EXTRACTORS[role]:
                d["metrics"].pop(key, None)
        return d

    @property
    def config_hash(self) -> str:
        return sha256_json(self.hashed_data())

    def with_overrides(self, **section_keys) -> SweepConfig:
        """A copy with e.g. run={"output_dir": ...} merged in, then validated again."""
        d = copy.deepcopy(self.data)
        for section, values in section_keys.items():
            d.setdefault(section, {}).update(values)
        return validate(d, self.source, resolve_paths=False)

    def to_toml(self) -> str:
        return dump_toml(self.data)


def parse_steps_guidance(text: str) -> tuple[str, float]:
    """("none", 0.0) for "unguided", ("cfg", s) for "cfg:s" (samplers.guidance_specs' grammar)."""
    if is_unguided(text):
        return ("none", 0.0)
    parsed = split_guidance(text)
    if parsed is None or parsed[0] != "cfg" or parsed[1] < 0:
        raise ValueError(f"must be 'unguided' or 'cfg:SCALE' (SCALE >= 0), got {text!r}")
    return ("cfg", parsed[1])


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


class _Failer:
    """Raises ConfigError naming the config file and the key."""

    def __init__(self, source: Path | None):
        self.where = f"{source}" if source else "config"

    def __call__(self, key: str, msg: str):
        raise ConfigError(f"{self.where}: [{key}] {msg}")


def validate(raw: dict, source: Path | None = None, resolve_paths: bool = True) -> SweepConfig:
    fail = _Failer(source)
    data = _read_sections(raw, fail)
    _check_values(data, fail)
    _check_grid(data, fail)
    _check_sampler_options(data, fail)
    _fill_from_environment(data)
    if resolve_paths:
        _resolve_paths(data)
    return SweepConfig(data, source)


def _read_sections(raw: dict, fail) -> dict[str, dict]:
    """Every section with every key (defaults filled in); unknown names and wrong types fail."""
    for section in raw:
        if section not in SCHEMA:
            fail(section, f"unknown section (known: {', '.join(SCHEMA)})")
        if not isinstance(raw[section], dict):
            fail(section, "must be a table")
    data: dict[str, dict] = {}
    for section, defaults in SCHEMA.items():
        given = raw.get(section, {})
        if section in (FREE_FORM, SAMPLER_OPTIONS_SECTION):
            data[section] = copy.deepcopy(given)
            continue
        for key in given:
            if key not in defaults:
                fail(f"{section}.{key}", f"unknown key (known: {', '.join(defaults)})")
        data[section] = {
            key: _check_type(f"{section}.{key}", copy.deepcopy(given.get(key, default)), default, fail)
            for key, default in defaults.items()
        }
    return data


def _check_values(data: dict, fail) -> None:
    for (section, key), allowed in choices().items():
        if data[section][key] not in allowed:
            fail(f"{section}.{key}", f"must be one of {list(allowed)}, got {data[section][key]!r}")
    if data["grid"]["clip_method"] == data["sampler"]["method"]:
        data["grid"]["clip_method"] = ""  # [sampler]'s own method: clip settings as without the key
    for section, key in POSITIVE:
        if data[section][key] <= 0:
            fail(f"{section}.{key}", f"must be positive, got {data[section][key]}")
    for section, key in NON_NEGATIVE:
        if data[section][key] < 0:
            fail(f"{section}.{key}", "must be >= 0")
    engine = data["models"]["engine"]
    if engine not in ("glide", "toy") and not re.fullmatch(r"python:[\w.]+:\w+", engine):
        fail("models.engine", f"must be 'glide', 'toy' or 'python:MODULE:FACTORY', got {engine!r}")
    for name in data["metrics"]["names"]:
        if name not in SELECTABLE_NAMES:
            fail("metrics.names", f"unknown metric {name!r} (known: {', '.join(SELECTABLE_NAMES)})")
    for key in ("base_respacing", "upsample_respacing"):
        try:
            count_steps(data["sampler"][key])
        except ValueError as e:
            fail(f"sampler.{key}", str(e))


def _check_grid(data: dict, fail) -> None:
    grid = data["grid"]
    for family in ("cfg", "clip"):
        scales = grid[family]
        for s in scales:
            if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s) or s < 0:
                fail(f"grid.{family}", f"scales must be finite numbers >= 0, got {s!r}")
        if len(set(map(float, scales))) != len(scales):
            fail(f"grid.{family}", f"scales repeat: {scales}")
        grid[family] = [float(s) for s in scales]
    _check_steps(grid, fail)
    steps_n, shard_size = grid["steps_n"], data["run"]["shard_size"]
    if steps_n < 0:
        fail("grid.steps_n", f"must be >= 0 (0: all captions), got {steps_n}")
    if steps_n >= data["captions"]["n"]:
        grid["steps_n"] = 0  # all captions: the same sweep (and hash) as without the key
    elif steps_n % shard_size:
        fail(
            "grid.steps_n",
            f"must be a multiple of [run] shard_size ({shard_size}) so that the steps "
            f"settings' shards are the first shards of the others, got {steps_n}",
        )
    if not (grid["unguided"] or grid["cfg"] or grid["clip"] or grid["steps"]):
        fail("grid", "no settings: set unguided = true or give cfg / clip scales or steps")


def _fill_from_environment(data: dict) -> None:
    for (section, key), var in ENV_VARS.items():
        if (section, key) == ("models", "checkpoints") and data["models"]["engine"] == "toy":
            continue  # GLIDE_CHECKPOINTS names released GLIDE files, never the toy weights
        if not data[section][key] and os.environ.get(var):
            data[section][key] = os.environ[var]


def _resolve_paths(data: dict) -> None:
    for section, key in PATH_KEYS:
        value = data[section][key]
        if value:  # relative to the current directory, wherever the value came from (module docstring)
            data[section][key] = resolve_path(value)


def resolve_path(value: str | os.PathLike) -> str:
    """The absolute form of a path from a config file, an environment variable or a flag: `~`
    expanded, a relative path taken from the current directory."""
    return str((Path.cwd() / Path(value).expanduser()).resolve())


def _check_steps(grid: dict, fail) -> None:
    steps = [str(s) if isinstance(s, int) and not isinstance(s, bool) else s for s in grid["steps"]]
    for s in steps:
        if not isinstance(s, str):
            fail("grid.steps", f'must be respacing strings like "50", got {s!r}')
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
    known = sampling_methods()
    for m in methods:
        if m not in known:
            fail("grid.steps_methods", f"methods must be in {list(known)}, got {m!r}")
    if len(set(methods)) != len(methods) or (steps and not methods):
        fail("grid.steps_methods", f"must list distinct methods, got {methods}")
    try:
        parse_steps_guidance(grid["steps_guidance"])
    except ValueError as e:
        fail("grid.steps_guidance", str(e))
    reference = grid["steps_reference"]
    if reference:
        method, _, respacing = reference.partition("-")
        if method not in known or not respacing:
            fail("grid.steps_reference", f'must be "METHOD-RESPACING" with METHOD in {list(known)}, got {reference!r}')
        try:
            count_steps(respacing)
        except ValueError as e:
            fail("grid.steps_reference", str(e))


DEFAULT_STEPS_REFERENCE = "ancestral-250"  # GLIDE's protocol (paper App. B.2)


def steps_reference(config: SweepConfig) -> str | None:
    """The setting the steps settings are compared with: the one sampled with `[grid] steps_reference`'s
    method and respacing at the steps guidance (a steps setting or a grid setting sampled alike);
    None when the sweep samples no such setting."""
    if not config.grid.steps:
        return None
    method, _, respacing = (config.grid.steps_reference or DEFAULT_STEPS_REFERENCE).partition("-")
    guided_by, scale = parse_steps_guidance(config.grid.steps_guidance)
    target = Setting("steps", scale, method, respacing, guided_by).sampling(config)
    return next((s.name for s in config.settings if s.sampling(config) == target), None)


def _check_sampler_options(data: dict, fail) -> None:
    """[sampler_options.METHOD] tables valid for their sampler, and every respacing a sampler is used
    with long enough for it (a multistep solver's order: samplers.sampling.min_steps)."""
    options = data[SAMPLER_OPTIONS_SECTION]
    known = sampling_methods()
    for method, table in options.items():
        key = f"{SAMPLER_OPTIONS_SECTION}.{method}"
        if method not in known:
            fail(key, f"unknown sampler {method!r} (known: {', '.join(known)})")
        if not isinstance(table, dict):
            fail(key, f"must be a table of the sampler's options, e.g. [{key}] with its keys, got {table!r}")
        try:
            check_sampler_options(method, table)
        except ValueError as e:
            fail(key, str(e))
    sampler, grid = data["sampler"], data["grid"]
    uses = [(sampler["method"], sampler["base_respacing"], "sampler.base_respacing")]
    if grid["clip"] and grid["clip_method"]:
        uses.append((grid["clip_method"], sampler["base_respacing"], "sampler.base_respacing"))
    uses += [(m, r, "grid.steps") for m in grid["steps_methods"] for r in grid["steps"]]
    if grid["steps"] and grid["steps_reference"]:
        uses.append((*grid["steps_reference"].partition("-")[::2], "grid.steps_reference"))
    for method, respacing, key in uses:
        need = min_steps(method, options.get(method))
        where = f", [{SAMPLER_OPTIONS_SECTION}.{method}]" if method in options else ""
        if count_steps(respacing) < need:
            fail(
                key,
                f"respacing {respacing!r} has {count_steps(respacing)} steps; sampler {method!r} needs at "
                f"least {need} (its multistep order{where})",
            )


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

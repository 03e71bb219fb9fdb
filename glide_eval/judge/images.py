"""The images a sweep saved (`glide-eval sweep CONFIG --save-images png|npz`), for judging.

A run directory holds config.toml (its settings and seed), captions.json (caption of sample
i) and, with --save-images, the images `RunDir.saved_images` lists (a png per sample id, or
npz files of one generation batch each). Sample i of every setting is drawn from caption i
with the seed (run seed, i), so two settings' images of one sample id differ only by the
setting: the sample id is the judgments' ``prompt_id``.

Model names in the judgments are those Figure 7 reads: ``unguided`` and ``FAMILY:SCALE``
(``cfg:3``, ``clip:4``); steps settings keep their setting name (``steps-ddim-50``). A name
found in two runs is prefixed with its run's folder name (``runB/cfg:3``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from glide_eval.sweep.config import ConfigError, Setting
from glide_eval.sweep.rundir import RunDir
from human_eval.judge.catalog import Catalog, ImageEntry
from storage import DamagedFile

HOW_TO = "make them with `glide-eval sweep CONFIG --save-images png` (or npz) and judge that run"


class JudgeImagesError(ValueError):
    """The run directories cannot be judged (the message names the file and says what to do)."""


@dataclass
class RunImages:
    run_dir: Path
    name: str
    seed: int
    captions: list[str]
    settings: dict[str, dict[int, ImageEntry]]  # setting name -> sample id -> image
    models: dict[str, str]  # setting name -> model name


def model_name(setting: Setting) -> str:
    """``unguided``, ``FAMILY:SCALE`` for guided settings, the setting name for steps settings."""
    if setting.family == "none":
        return "unguided"
    if setting.family == "steps":
        return setting.name
    return f"{setting.family}:{setting.scale:g}"


def setting_images(run: RunDir, run_name: str, setting: str, n_captions: int) -> dict[int, ImageEntry]:
    """Sample id -> image of one setting (empty when it saved none)."""
    out: dict[int, ImageEntry] = {}
    try:
        saved = run.saved_images(setting)
    except DamagedFile as e:
        raise JudgeImagesError(str(e)) from None
    for image in saved:
        sid = image.sample_id
        if not 0 <= sid < n_captions:
            raise JudgeImagesError(f"{image.path}: sample id {sid} has no caption ({n_captions} captions)")
        if sid in out:
            raise JudgeImagesError(
                f"{image.path.parent}: sample id {sid} saved twice ({out[sid].path.name}, {image.path.name})"
            )
        out[sid] = ImageEntry(f"{run_name}/{setting}/{sid:06d}", run.path, image.path, image.index)
    return out


def read_run_images(run_dir: str | Path, run_name: str | None = None) -> RunImages:
    """The saved images of one sweep run directory, per setting of its config."""
    run = RunDir(run_dir)
    name = run_name or run.path.resolve().name
    for required in (run.config_toml, run.captions_json):
        if not required.is_file():
            raise JudgeImagesError(f"{run.path}: no {required.name}; is it a sweep run directory?")
    try:
        config = run.load_config()
        captions = run.read_captions()
    except (ConfigError, DamagedFile) as e:
        raise JudgeImagesError(str(e)) from None
    known = {s.name: s for s in config.settings}
    stray = [folder for folder in run.saved_image_settings() if folder not in known]
    if stray:
        raise JudgeImagesError(
            f"{run.images_dir}: folder(s) {', '.join(stray)} are not settings of "
            f"{run.config_toml} (settings: {', '.join(known)})"
        )
    settings = {}
    for s in config.settings:
        found = setting_images(run, name, s.name, len(captions))
        if found:
            settings[s.name] = found
    if not settings:
        raise JudgeImagesError(f"{run.path}: the sweep saved no images (nothing in {run.images_dir}); {HOW_TO}")
    return RunImages(
        run.path, name, int(config.run.seed), captions, settings, {s: model_name(known[s]) for s in settings}
    )


def _check_same_samples(runs: list[RunImages]) -> None:
    first = runs[0]
    for run in runs[1:]:
        if run.seed != first.seed:
            raise JudgeImagesError(
                f"{first.run_dir} has [run] seed {first.seed} but {run.run_dir} has {run.seed}: "
                "their samples of one caption are not drawn from the same noise"
            )
        for k, (a, b) in enumerate(zip(first.captions, run.captions, strict=False)):
            if a != b:
                raise JudgeImagesError(
                    f"{first.run_dir} and {run.run_dir} have different captions at sample "
                    f"{k} ({a!r} vs {b!r}); judge runs sampled from the same captions"
                )


def _selected(runs: list[RunImages], wanted: list[str] | None) -> list[tuple[RunImages, str, str]]:
    """(run, setting, model name) of every setting to judge, names made unique across runs."""
    found = [(run, setting, run.models[setting]) for run in runs for setting in run.settings]
    counts: dict[str, int] = {}
    for _, _, model in found:
        counts[model] = counts.get(model, 0) + 1
    found = [(run, s, f"{run.name}/{m}" if counts[m] > 1 else m) for run, s, m in found]
    if wanted is None:
        return found
    names = {key: item for item in found for key in (item[1], item[2], f"{item[0].name}/{item[1]}")}
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise JudgeImagesError(
            f"--settings: unknown {', '.join(unknown)}; settings with saved images: "
            + ", ".join(f"{m} ({s})" for _, s, m in found)
        )
    chosen = []
    for w in wanted:
        if names[w] not in chosen:
            chosen.append(names[w])
    return chosen


def build_catalog(run_dirs: list[str | Path], settings: list[str] | None = None) -> Catalog:
    """Every saved image of the given runs (or only ``settings``, by setting or model name)."""
    if not run_dirs:
        raise JudgeImagesError("give at least one run directory")
    names: dict[str, int] = {}
    runs = []
    for d in run_dirs:
        base = Path(d).resolve().name
        names[base] = names.get(base, 0) + 1
        runs.append(read_run_images(d, base if names[base] == 1 else f"{base}-{names[base]}"))
    _check_same_samples(runs)
    chosen = _selected(runs, settings)
    if len(chosen) < 2:
        raise JudgeImagesError(
            f"need two settings with saved images to compare, found "
            f"{', '.join(m for _, _, m in chosen) or 'none'}; {HOW_TO}"
        )
    captions: dict[int, str] = {}
    for run in runs:
        captions.update(enumerate(run.captions))
    images = {model: run.settings[setting] for run, setting, model in chosen}
    try:
        return Catalog([m for _, _, m in chosen], images, captions, runs[0].seed)
    except ValueError as e:
        raise JudgeImagesError(str(e)) from None

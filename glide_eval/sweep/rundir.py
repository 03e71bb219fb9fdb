"""A sweep's run directory: the one place that knows its files, shard keys and records.

    RUN_DIR/config.toml                 resolved config (rerun with it to resume)
    RUN_DIR/run.json                    config hash, provenance, captions hash, sha256 of
                                        config.toml and captions.json, its own sha256
    RUN_DIR/captions.json               the N captions, by sample index
    RUN_DIR/shards/SETTING/NNNNN.npz    per-sample features, NaN counts, previews
    RUN_DIR/shards/SETTING/NNNNN.json   the shard's record: key, sha256 of the npz, timings
    RUN_DIR/images/SETTING/...          only with --save-images
    RUN_DIR/manifest.json               every finished shard and its sha256, and the sha256 of
                                        results, previews, captions and config (after merge)
    RUN_DIR/previews.npz                preview images per setting (after merge)
    RUN_DIR/results.parquet, .csv       one row per setting (after merge)
    RUN_DIR/.lock, lock.json            the lock of the process writing here, and who it is

Every file is written atomically (`glide_eval.files`). A shard counts as finished only when
its record exists, names the expected key and the npz on disk has the recorded sha256. The
record is written after the npz, so a process killed at any point leaves either a finished
shard or one that is redone. The sweep and the regression gate both read and write run
directories only through `RunDir`, and only while holding its lock (`RunDir.lock`, see
`glide_eval.sweep.lock`): one writer at a time, across processes and nodes.

Nothing is trusted unverified. Results are up to date only when manifest.json lists exactly
the expected shards and every file it names has its recorded sha256 (`stale_results`); a
missing or damaged one is rebuilt from the shards. run.json carries its own sha256; a
damaged one falls back to config.toml to tell which config made the directory, else is an
error naming it. config.toml and captions.json are rewritten from the config at every run;
a damaged config.toml that is itself the config being run is an error naming it. Temporary
files of killed writes (`glide_eval.files.TEMP_GLOB`) are removed by the next lock holder.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from glide_eval.files import (
    atomic_write_text,
    atomic_write_with,
    json_text,
    package_versions,
    read_json,
    remove_temp_files,
    save_npz,
    sha256_file,
    sha256_json,
    write_json,
)
from glide_eval.sweep.config import ConfigError, Setting, SweepConfig, load_config
from glide_eval.sweep.errors import SweepError
from glide_eval.sweep.lock import RunLock
from glide_eval.sweep.plan import Shard
from metrics.features import LOAD_ERRORS

FEATURE_PREFIX = "feat__"
# the names `RunDir.save_images` gives: NNNNNN.png per sample id, SSSSS_NNNNNN.npz per batch
_SAVED_PNG = re.compile(r"^(\d{6,})\.png$")
_SAVED_NPZ = re.compile(r"^\d{5,}_\d{6,}\.npz$")
# made by merge from the shards (differences.csv: paired differences between settings)
RESULT_FILES = ("results.parquet", "results.csv", "previews.npz", "differences.csv")
RUN_FILES = ("config.toml", "captions.json")  # written from the config at every run
TEMP_FOLDERS = ("shards", "images")  # where else the sweep writes (report/ is not the sweep's)
# keys that change the captions or the metrics but not a shard made from given captions
# (and the batch size: a --force run may finish a sweep with another batch size)
_NOT_IN_SHARD_KEY = {
    ("grid", None),
    ("captions", "n"),
    ("metrics", "reference"),
    ("metrics", "reference_n"),
    ("metrics", "ci"),
    ("metrics", "bootstrap"),
    ("run", "batch_size"),
}


MERGE_ONLY_METRICS = ("kid", "fid_infinity")
MERGE_ONLY_KEYS = ("ci", "bootstrap", "reference_n")  # [metrics] keys the merge alone uses


class DamagedFile(SweepError):
    """A run-directory file that fails its check; the message names it."""


@dataclass(frozen=True)
class WorkItem:
    """One shard to sample (or check) in a run directory, with the key its record must carry."""

    shard: Shard
    key: str
    captions: tuple[str, ...]  # the shard's captions, by sample index

    @property
    def setting(self) -> Setting:
        return self.shard.setting


def generation_hash(config: SweepConfig, provenance: dict) -> str:
    """Hash of everything that changes one sample's pixels or features."""
    d = config.hashed_data()
    d["metrics"]["names"] = sampled_metric_names(d["metrics"]["names"])
    for section, key in _NOT_IN_SHARD_KEY:
        if key is None:
            d.pop(section, None)
        else:
            d[section].pop(key, None)
    return sha256_json({"config": d, "files": provenance.get("files", {})})


def sampled_metric_names(names: list[str]) -> list[str]:
    """`names` without the metrics computed only from features every sweep stores (KID and FID-infinity
    need the pool features): adding them changes the merge, not the shards."""
    return [n for n in names if n not in MERGE_ONLY_METRICS]


def merge_only_change(old: dict, new: dict) -> bool:
    """Whether two configs' hashed data differ only in what the merge computes (not the samples)."""
    old, new = copy.deepcopy(old), copy.deepcopy(new)
    for d in (old, new):
        metrics, grid = d.get("metrics", {}), d.get("grid", {})
        for key in MERGE_ONLY_KEYS:
            metrics.pop(key, None)
        grid.pop("steps_reference", None)
        if "names" in metrics:
            metrics["names"] = sampled_metric_names(metrics["names"])
    return old == new


def shard_key(gen_hash: str, shard: Shard, captions: list[str] | tuple[str, ...]) -> str:
    """What a shard's record must name: generation hash, setting, sample range, captions."""
    setting = shard.setting
    key = [setting.family, setting.scale]
    if setting.method is not None:  # the sampler overrides; other settings keep their old keys
        key += [setting.method, setting.respacing, setting.guided_by]
    return sha256_json(
        {"generation": gen_hash, "setting": key, "sample_ids": [shard.start, shard.stop], "captions": list(captions)}
    )


def work_items(shards: list[Shard], gen_hash: str, captions: list[str]) -> list[WorkItem]:
    out = []
    for shard in shards:
        caps = tuple(captions[shard.start : shard.stop])
        out.append(WorkItem(shard, shard_key(gen_hash, shard, caps), caps))
    return out


@dataclass(frozen=True)
class SavedImage:
    """One image saved by `--save-images`: a png file, or entry `index` of an npz's ``images``."""

    sample_id: int
    path: Path
    index: int | None = None


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------ files

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def manifest_json(self) -> Path:
        return self.path / "manifest.json"

    @property
    def results_parquet(self) -> Path:
        return self.path / "results.parquet"

    def shard_paths(self, setting_name: str, index: int) -> tuple[Path, Path]:
        base = self.path / "shards" / setting_name / f"{index:05d}"
        return base.with_suffix(".npz"), base.with_suffix(".json")

    def read_run(self) -> dict | None:
        """run.json, or None when the directory holds no run yet; `DamagedFile` when it fails its check."""
        if not self.run_json.is_file():
            return None
        try:
            run = read_json(self.run_json)
        except (OSError, ValueError) as e:
            raise DamagedFile(f"{self.run_json} is damaged ({e})") from None
        if not isinstance(run, dict) or "config_hash" not in run:
            raise DamagedFile(f"{self.run_json} is damaged (not a run record)")
        # run.json written before its sha256 was recorded has none: trusted as it parses
        if "sha256" in run and run["sha256"] != sha256_json({k: v for k, v in run.items() if k != "sha256"}):
            raise DamagedFile(f"{self.run_json} is damaged (its content does not match its sha256)")
        return run

    def as_written(self, name: str, digest: str) -> bool:
        """Whether `digest` is the sha256 of the run file `name` as the last run wrote it (run.json's)."""
        try:
            run = self.read_run()
        except DamagedFile:
            return False
        return run is not None and run.get("files", {}).get(name) == digest

    def read_captions(self) -> list[str]:
        """captions.json, checked against the captions_sha256 of run.json."""
        path = self.path / "captions.json"
        run = self.read_run()
        try:
            captions = read_json(path)
        except (OSError, ValueError) as e:
            raise DamagedFile(f"{path} is damaged ({e})") from None
        if run is not None and sha256_json(captions) != run.get("captions_sha256"):
            raise DamagedFile(f"{path} is damaged (it does not match the captions_sha256 in {self.run_json})")
        return list(captions)

    def lock(self, purpose: str = "sweep") -> RunLock:
        """The directory's lock (not yet taken): one writer at a time (`glide_eval.sweep.lock`)."""
        return RunLock(self.path, purpose)

    def remove_temp_files(self) -> list[Path]:
        """Temporary files of killed writes; call only while holding `lock()`."""
        removed = remove_temp_files(self.path)
        for folder in TEMP_FOLDERS:
            removed += remove_temp_files(self.path / folder, recursive=True)
        return removed

    # ------------------------------------------------------------ config

    def check_config(self, config: SweepConfig, force: bool, log: Callable[[str], None] | None = None) -> None:
        """Refuse a directory made with another config (unless `force`), naming what changed."""
        if force:
            return
        try:
            old = self.read_run()
        except DamagedFile as e:
            old = self._run_from_config_toml(str(e))
            if log is not None:
                log(f"{e}; config.toml tells which config made {self.path}, run.json is rewritten")
        if old is None:
            return
        self._check_config_being_run(config, old)
        if old.get("config_hash") == config.config_hash:
            return
        if merge_only_change(old.get("config", {}), config.hashed_data()):
            if log is not None:
                log(
                    f"{self.path}: only the metrics changed in the config; the results are merged again from the shards"
                )
            return
        changed = []
        old_data = old.get("config", {})
        new_data = config.hashed_data()
        for section in sorted(set(old_data) | set(new_data)):
            a, b = old_data.get(section, {}), new_data.get(section, {})
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    changed.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
        raise SweepError(
            f"{self.path} holds a sweep made with another config ({'; '.join(changed) or 'hash differs'}). "
            "Use another run.output_dir, or --force to reuse the shards that are still valid."
        )

    def _run_from_config_toml(self, damage: str) -> dict:
        """What a damaged run.json said about the config, from config.toml; else an error naming both."""
        path = self.path / "config.toml"
        try:
            old = load_config(path)
        except (ConfigError, OSError) as e:
            raise DamagedFile(
                f"{damage}, and {path} cannot tell which config made {self.path} either ({e}). "
                "Rerun with --force to rewrite them (finished shards are kept where their keys match)."
            ) from None
        return {"config_hash": old.config_hash, "config": old.hashed_data()}

    def _check_config_being_run(self, config: SweepConfig, run: dict) -> None:
        """RUN_DIR/config.toml, when it is the config being run, must be the one run.json recorded."""
        path = self.path / "config.toml"
        recorded = run.get("files", {}).get("config.toml")
        if config.source is None or recorded is None or Path(config.source).resolve() != path.resolve():
            return
        if sha256_file(path) != recorded:
            raise DamagedFile(
                f"{path} is damaged (its sha256 differs from the one in {self.run_json}); "
                f"rerun with the config file it was made from ({run.get('source')})"
            )

    def write_run_files(
        self,
        config: SweepConfig,
        provenance: dict,
        captions: list[str],
        gen_hash: str,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """config.toml and captions.json (rewritten when they differ), then run.json naming their sha256."""
        texts = {"config.toml": config.to_toml(), "captions.json": json_text(captions)}
        for name, text in texts.items():
            path = self.path / name
            old = path.read_bytes() if path.is_file() else None
            if old == text.encode():
                continue
            # a file as the last run wrote it is rewritten silently (e.g. the same checkpoints in
            # another folder: another path in config.toml); only a damaged one is worth a word
            if old is not None and log is not None and not self.as_written(name, sha256_file(path)):
                log(f"{path} is damaged (its sha256 differs from the one in {self.run_json.name}); rewriting it")
            atomic_write_text(path, text)
        run = {
            "config_hash": config.config_hash,
            "generation_hash": gen_hash,
            "config": config.hashed_data(),
            "source": str(config.source) if config.source else None,
            "captions_sha256": sha256_json(captions),
            "files": {name: sha256_file(self.path / name) for name in texts},
            "provenance": provenance,
            "versions": package_versions(),
        }
        write_json(self.run_json, dict(run, sha256=sha256_json(run)))

    # ------------------------------------------------------------ shards

    def finished_record(self, item: WorkItem, need_images: str = "none") -> dict | None:
        """The shard's record if the shard is finished and intact, else None."""
        npz, record_path = self.shard_paths(item.setting.name, item.shard.index)
        if not record_path.is_file() or not npz.is_file():
            return None
        try:
            record = read_json(record_path)
        except (ValueError, OSError):
            return None
        if record.get("key") != item.key:
            return None
        if need_images != "none" and record.get("save_images") != need_images:
            return None
        if sha256_file(npz) != record.get("sha256"):
            return None
        return record

    def unfinished(self, items: list[WorkItem], need_images: str = "none") -> list[WorkItem]:
        return [item for item in items if self.finished_record(item, need_images) is None]

    def read_record(self, shard: Shard) -> dict:
        """A shard's record as written (not verified); OSError / ValueError when unreadable."""
        return read_json(self.shard_paths(shard.setting.name, shard.index)[1])

    def write_shard(self, item: WorkItem, arrays: dict, record: dict) -> dict:
        npz, record_path = self.shard_paths(item.setting.name, item.shard.index)
        save_npz(npz, arrays)
        record = dict(record, sha256=sha256_file(npz), file=str(npz.relative_to(self.path)))
        write_json(record_path, record)
        return record

    def load_shard(self, setting_name: str, index: int) -> dict:
        """The arrays of a shard file (not verified: see `finished_record`)."""
        npz, _ = self.shard_paths(setting_name, index)
        with np.load(npz) as f:
            return {k: f[k] for k in f.files}

    def load_features(self, shards: list[Shard], n: int | None = None) -> dict:
        """{"features": {name: [n, ...]}, "nan_count": int} of the shards' first n samples (all: None)."""
        parts, nan = [], 0
        for shard in shards:
            if n is not None and shard.start >= n:
                break
            data = self.load_shard(shard.setting.name, shard.index)
            keep = shard.n if n is None else n - shard.start
            parts.append({k[len(FEATURE_PREFIX) :]: v[:keep] for k, v in data.items() if k.startswith(FEATURE_PREFIX)})
            nan += int(data["nan_count"])
        return {"features": {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, "nan_count": nan}

    def save_images(self, item: WorkItem, sample_ids: list[int], images: np.ndarray, fmt: str) -> None:
        folder = self.path / "images" / item.setting.name
        if fmt == "npz":  # one file per batch, named by its first sample id
            save_npz(
                folder / f"{item.shard.index:05d}_{int(sample_ids[0]):06d}.npz",
                {"sample_ids": np.asarray(sample_ids), "images": images},
            )
            return
        for sid, img in zip(sample_ids, images, strict=False):

            def writer(tmp, img=img):
                Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(tmp, format="PNG")

            atomic_write_with(folder / f"{int(sid):06d}.png", writer)

    def saved_images(self, setting_name: str) -> list[SavedImage]:
        """The images `save_images` wrote for one setting, in file-name order (none: an empty list).
        Other files (the temp files of an interrupted write) are left out; an npz without
        ``sample_ids`` is a SweepError naming it."""
        folder = self.path / "images" / setting_name
        if not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.iterdir()):
            png = _SAVED_PNG.match(path.name)
            if png:
                out.append(SavedImage(int(png[1]), path))
            elif _SAVED_NPZ.match(path.name):
                try:
                    with np.load(path) as f:
                        ids = [int(i) for i in f["sample_ids"]]
                except LOAD_ERRORS as e:  # a truncated or damaged npz too, named
                    raise SweepError(f"{path}: not a saved-images npz ({type(e).__name__}: {e})") from None
                out += [SavedImage(sid, path, k) for k, sid in enumerate(ids)]
        return out

    def saved_image_settings(self) -> list[str]:
        """The setting folders under RUN_DIR/images (none: an empty list)."""
        folder = self.path / "images"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    # ------------------------------------------------------------ results

    def stale_results(self, manifest: dict) -> str | None:
        """None when the results are up to date: manifest.json lists exactly `manifest`'s shards and
        every result and run file has the sha256 it records; else what is wrong."""
        if not self.manifest_json.is_file():
            return "no results yet"
        try:
            recorded = read_json(self.manifest_json)
        except (OSError, ValueError):
            return f"{self.manifest_json} is damaged"
        if not isinstance(recorded, dict) or {k: recorded.get(k) for k in manifest} != manifest:
            if isinstance(recorded, dict) and recorded.get("shards") == manifest.get("shards"):
                return "the config changed since the last merge (what the merge computes)"
            return "the shards changed since the last merge"
        hashes = recorded.get("files")
        if not isinstance(hashes, dict):
            return f"{self.manifest_json} was written by an older glide-eval (no sha256 of the results)"
        for name in RESULT_FILES + RUN_FILES:
            path = self.path / name
            if not path.is_file():
                return f"{path} is missing"
            digest = sha256_file(path)
            if hashes.get(name) != digest:
                if name in RUN_FILES and self.as_written(name, digest):
                    return f"{path} was rewritten for this run since the last merge (e.g. a file's folder changed)"
                return f"{path} is damaged (its sha256 differs from the one in {self.manifest_json.name})"
        return None

    def damaged_results(self) -> str | None:
        """For readers of finished results (the report): what is wrong with the result files
        manifest.json records, or None (also for a manifest of older code, which records none)."""
        if not self.manifest_json.is_file():
            return None
        try:
            hashes = read_json(self.manifest_json).get("files", {})
        except (OSError, ValueError, AttributeError):
            return f"{self.manifest_json} is damaged"
        for name in RESULT_FILES:
            path = self.path / name
            if name in hashes and (not path.is_file() or sha256_file(path) != hashes[name]):
                return f"{path} is {'damaged' if path.is_file() else 'missing'}"
        return None

    def write_results(
        self,
        rows: list[dict],
        previews: dict[str, np.ndarray],
        captions: list[str],
        manifest: dict,
        differences: pd.DataFrame,
    ) -> Path:
        """previews.npz, differences.csv, results.csv, results.parquet, then manifest.json with their
        sha256 and those of config.toml and captions.json (last: it marks the results up to date)."""
        n_prev = min((len(p) for p in previews.values()), default=0)
        save_npz(
            self.path / "previews.npz",
            {
                **{f"setting__{k}": v[:n_prev] for k, v in previews.items()},
                "captions": np.asarray(captions[:n_prev]),
                "sample_ids": np.arange(n_prev),
            },
        )
        atomic_write_with(self.path / "differences.csv", lambda tmp: differences.to_csv(tmp, index=False))
        df = pd.DataFrame(rows)
        atomic_write_with(self.path / "results.csv", lambda tmp: df.to_csv(tmp, index=False))
        atomic_write_with(self.results_parquet, lambda tmp: df.to_parquet(tmp, index=False))
        files = {name: sha256_file(self.path / name) for name in RESULT_FILES + RUN_FILES}
        write_json(self.manifest_json, dict(manifest, files=files))
        return self.results_parquet

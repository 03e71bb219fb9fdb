"""A sweep's run directory: the one place that knows its files, shard keys and records.

    RUN_DIR/config.toml                 resolved config (rerun with it to resume)
    RUN_DIR/run.json                    config hash, provenance, captions hash
    RUN_DIR/captions.json               the N captions, by sample index
    RUN_DIR/shards/SETTING/NNNNN.npz    per-sample features, NaN counts, previews
    RUN_DIR/shards/SETTING/NNNNN.json   the shard's record: key, sha256 of the npz, timings
    RUN_DIR/images/SETTING/...          only with --save-images
    RUN_DIR/manifest.json               every finished shard and its sha256 (after merge)
    RUN_DIR/previews.npz                preview images per setting (after merge)
    RUN_DIR/results.parquet, .csv       one row per setting (after merge)

Every file is written atomically (`glide_eval.files`). A shard counts as finished only when
its record exists, names the expected key and the npz on disk has the recorded sha256. The
record is written after the npz, so a process killed at any point leaves either a finished
shard or one that is redone. The sweep and the regression gate both read and write run
directories only through `RunDir`.

What a run directory must guarantee lives here, so it can grow in one place: a lock
around `run_sweep`'s use of it, sha256 of results / previews / captions / config in the
manifest (`write_results` writes it, `results_up_to_date` checks it), and removing stale
temporary files (`glide_eval.files.TEMP_GLOB`) before a run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from glide_eval.files import (
    atomic_write_text,
    atomic_write_with,
    package_versions,
    read_json,
    save_npz,
    sha256_file,
    sha256_json,
    write_json,
)
from glide_eval.sweep.config import Setting, SweepConfig
from glide_eval.sweep.errors import SweepError
from glide_eval.sweep.plan import Shard

FEATURE_PREFIX = "feat__"
# the names `RunDir.save_images` gives: NNNNNN.png per sample id, SSSSS_NNNNNN.npz per batch
_SAVED_PNG = re.compile(r"^(\d{6,})\.png$")
_SAVED_NPZ = re.compile(r"^\d{5,}_\d{6,}\.npz$")
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
    for section, key in _NOT_IN_SHARD_KEY:
        if key is None:
            d.pop(section, None)
        else:
            d[section].pop(key, None)
    return sha256_json({"config": d, "files": provenance.get("files", {})})


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
        """run.json, or None when the directory holds no run yet."""
        return read_json(self.run_json) if self.run_json.is_file() else None

    def read_captions(self) -> list[str]:
        return list(read_json(self.path / "captions.json"))

    # ------------------------------------------------------------ config

    def check_config(self, config: SweepConfig, force: bool) -> None:
        """Refuse a directory made with another config (unless `force`), naming what changed."""
        old = self.read_run()
        if old is None or old.get("config_hash") == config.config_hash or force:
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

    def write_run_files(self, config: SweepConfig, provenance: dict, captions: list[str], gen_hash: str) -> None:
        atomic_write_text(self.path / "config.toml", config.to_toml())
        write_json(self.path / "captions.json", captions)
        write_json(
            self.run_json,
            {
                "config_hash": config.config_hash,
                "generation_hash": gen_hash,
                "config": config.hashed_data(),
                "source": str(config.source) if config.source else None,
                "captions_sha256": sha256_json(captions),
                "provenance": provenance,
                "versions": package_versions(),
            },
        )

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
                except (OSError, KeyError, ValueError) as e:
                    raise SweepError(f"{path}: not a saved-images npz ({e})") from None
                out += [SavedImage(sid, path, k) for k, sid in enumerate(ids)]
        return out

    def saved_image_settings(self) -> list[str]:
        """The setting folders under RUN_DIR/images (none: an empty list)."""
        folder = self.path / "images"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    # ------------------------------------------------------------ results

    def results_up_to_date(self, manifest: dict) -> bool:
        """Whether results.parquet exists and manifest.json lists exactly these shards."""
        return (
            self.results_parquet.is_file()
            and self.manifest_json.is_file()
            and read_json(self.manifest_json) == manifest
        )

    def write_results(
        self, rows: list[dict], previews: dict[str, np.ndarray], captions: list[str], manifest: dict
    ) -> Path:
        """previews.npz, results.csv, results.parquet, then manifest.json (which marks them up to date)."""
        n_prev = min((len(p) for p in previews.values()), default=0)
        save_npz(
            self.path / "previews.npz",
            {
                **{f"setting__{k}": v[:n_prev] for k, v in previews.items()},
                "captions": np.asarray(captions[:n_prev]),
                "sample_ids": np.arange(n_prev),
            },
        )
        df = pd.DataFrame(rows)
        atomic_write_with(self.path / "results.csv", lambda tmp: df.to_csv(tmp, index=False))
        atomic_write_with(self.results_parquet, lambda tmp: df.to_parquet(tmp, index=False))
        write_json(self.manifest_json, manifest)  # last: marks the results up to date
        return self.results_parquet

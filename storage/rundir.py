"""A sweep's run directory: the only module that spells its file names, key prefixes and schemas.

    RUN_DIR/config.toml                 resolved config (rerun with it to resume)
    RUN_DIR/run.json                    config hash, provenance, captions hash, sha256 of
                                        config.toml and captions.json, its own sha256
    RUN_DIR/captions.json               the N captions, by sample index
    RUN_DIR/shards/SETTING/NNNNN.npz    per-sample features (``feat__NAME``), NaN counts, previews
    RUN_DIR/shards/SETTING/NNNNN.json   the shard's record: key, sha256 of the npz, timings
    RUN_DIR/images/SETTING/...          only with --save-images: NNNNNN.png per sample id, or
                                        SSSSS_NNNNNN.npz per generation batch (``sample_ids``, ``images``)
    RUN_DIR/manifest.json               every finished shard and its sha256, and the sha256 of
                                        results, previews, differences, captions and config (after merge)
    RUN_DIR/previews.npz                preview images per setting (``setting__NAME``), ``captions``,
                                        ``sample_ids`` (after merge)
    RUN_DIR/results.parquet, .csv       one row per setting (after merge)
    RUN_DIR/differences.csv             paired differences between settings (after merge)
    RUN_DIR/.lock, lock.json            the lock of the process writing here, and who it is
    RUN_DIR/report/                     what `glide-eval report` writes

`RunFiles` reads and writes these files, each atomically (`storage.files`), and checks what
it reads: run.json against its own sha256, captions.json against run.json, a shard against
its record, and every result file against the sha256 manifest.json records for it. A file
that fails its check is a `DamagedFile` naming it. What the files mean to a sweep (shard keys,
config checks, the lock) is `glide_eval.sweep.rundir.RunDir`'s, built on this class.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from storage.errors import LOAD_ERRORS, DamagedFile
from storage.files import atomic_write_text, atomic_write_with, json_text, read_json, remove_temp_files, save_npz
from storage.files import write_json as _write_json
from storage.hashing import sha256_file, sha256_json

CONFIG_TOML, RUN_JSON, CAPTIONS_JSON, MANIFEST_JSON = "config.toml", "run.json", "captions.json", "manifest.json"
RESULTS_PARQUET, RESULTS_CSV = "results.parquet", "results.csv"
PREVIEWS_NPZ, DIFFERENCES_CSV = "previews.npz", "differences.csv"
SHARDS_DIR, IMAGES_DIR, REPORT_DIR = "shards", "images", "report"
LOCK_NAME, HOLDER_NAME = ".lock", "lock.json"
FEATURE_PREFIX = "feat__"  # shard npz: per-sample features of one extractor output
PREVIEW_PREFIX = "setting__"  # previews.npz: the preview images of one setting
# made by merge from the shards (differences.csv: paired differences between settings)
RESULT_FILES = (RESULTS_PARQUET, RESULTS_CSV, PREVIEWS_NPZ, DIFFERENCES_CSV)
RUN_FILES = (CONFIG_TOML, CAPTIONS_JSON)  # written from the config at every run
TEMP_FOLDERS = (SHARDS_DIR, IMAGES_DIR)  # where else the sweep writes (report/ is not the sweep's)
# the names `RunFiles.store_images` gives: NNNNNN.png per sample id, SSSSS_NNNNNN.npz per batch
_SAVED_PNG = re.compile(r"^(\d{6,})\.png$")
_SAVED_NPZ = re.compile(r"^\d{5,}_\d{6,}\.npz$")


@dataclass(frozen=True)
class SavedImage:
    """One image saved by `--save-images`: a png file, or entry `index` of an npz's ``images``."""

    sample_id: int
    path: Path
    index: int | None = None


def feature_arrays(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A shard's feature arrays under their npz keys."""
    return {FEATURE_PREFIX + k: v for k, v in features.items()}


def shard_features(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feature arrays of a shard's npz, by feature name."""
    return {k[len(FEATURE_PREFIX) :]: v for k, v in arrays.items() if k.startswith(FEATURE_PREFIX)}


def captions_text(captions: list[str]) -> str:
    """The text of captions.json."""
    return json_text(captions)


class _Entry:
    """A file or folder of the run directory as an attribute of `RunFiles`: its path."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, run: RunFiles | None, owner=None):
        return self if run is None else run.path / self.name


class RunFiles:
    """The files of one run directory, read and written checked (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    run_json = _Entry(RUN_JSON)
    manifest_json = _Entry(MANIFEST_JSON)
    results_parquet = _Entry(RESULTS_PARQUET)
    config_toml = _Entry(CONFIG_TOML)
    captions_json = _Entry(CAPTIONS_JSON)
    previews_npz = _Entry(PREVIEWS_NPZ)
    differences_csv = _Entry(DIFFERENCES_CSV)
    images_dir = _Entry(IMAGES_DIR)
    report_dir = _Entry(REPORT_DIR)

    def has_shards(self) -> bool:
        return (self.path / SHARDS_DIR).is_dir()

    def shard_paths(self, setting_name: str, index: int) -> tuple[Path, Path]:
        """The npz and the record of one shard."""
        base = self.path / SHARDS_DIR / setting_name / f"{index:05d}"
        return base.with_suffix(".npz"), base.with_suffix(".json")

    def remove_temp_files(self) -> list[Path]:
        """Temporary files of killed writes; call only while holding the directory's lock."""
        removed = remove_temp_files(self.path)
        for folder in TEMP_FOLDERS:
            removed += remove_temp_files(self.path / folder, recursive=True)
        return removed

    # ------------------------------------------------------------ run.json, config.toml, captions.json

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

    def write_run(self, run: dict) -> None:
        """run.json with its own sha256."""
        _write_json(self.run_json, dict(run, sha256=sha256_json(run)))

    def read_captions(self) -> list[str]:
        """captions.json, checked against the captions_sha256 of run.json (when there is one)."""
        path = self.captions_json
        run = self.read_run()
        try:
            captions = read_json(path)
        except (OSError, ValueError) as e:
            raise DamagedFile(f"{path} is damaged ({e})") from None
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise DamagedFile(f"{path} is damaged (not a list of caption strings)")
        if run is not None and sha256_json(captions) != run.get("captions_sha256"):
            raise DamagedFile(f"{path} is damaged (it does not match the captions_sha256 in {self.run_json})")
        return list(captions)

    def checked_config(self) -> Path:
        """config.toml, checked against the sha256 run.json records for it (when it records one);
        its path, for the config parser."""
        run = self.read_run()
        if not self.config_toml.is_file():
            raise DamagedFile(f"{self.config_toml} is missing")
        recorded = (run or {}).get("files", {}).get(CONFIG_TOML)
        if recorded is not None and sha256_file(self.config_toml) != recorded:
            raise DamagedFile(f"{self.config_toml} is damaged (its sha256 differs from the one in {self.run_json})")
        return self.config_toml

    def write_run_texts(self, texts: dict[str, str], log: Callable[[str], None] | None = None) -> dict[str, str]:
        """Files of `RUN_FILES` from their texts (rewritten only when they differ); their sha256."""
        for name, text in texts.items():
            path = self.path / name
            old = path.read_bytes() if path.is_file() else None
            if old == text.encode():
                continue
            if old is not None and log is not None:
                log(f"{path} differs from the one this config gives (damaged, or its source changed); rewriting it")
            atomic_write_text(path, text)
        return {name: sha256_file(self.path / name) for name in texts}

    # ------------------------------------------------------------ shards

    def read_shard_record(self, setting_name: str, index: int) -> dict:
        """A shard's record as written (not verified); OSError / ValueError when unreadable."""
        return read_json(self.shard_paths(setting_name, index)[1])

    def verified_record(self, setting_name: str, index: int, key: str, need_images: str = "none") -> dict | None:
        """The shard's record if the shard is finished and intact: the record names `key` (and
        `need_images` when asked) and the npz has the recorded sha256; else None."""
        npz, record_path = self.shard_paths(setting_name, index)
        if not record_path.is_file() or not npz.is_file():
            return None
        try:
            record = read_json(record_path)
        except (ValueError, OSError):
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        if need_images != "none" and record.get("save_images") != need_images:
            return None
        if sha256_file(npz) != record.get("sha256"):
            return None
        return record

    def save_shard(self, setting_name: str, index: int, arrays: dict, record: dict) -> dict:
        """The shard's npz, then its record naming the npz's sha256 (the record marks it finished)."""
        npz, record_path = self.shard_paths(setting_name, index)
        save_npz(npz, arrays)
        record = dict(record, sha256=sha256_file(npz), file=str(npz.relative_to(self.path)))
        _write_json(record_path, record)
        return record

    def load_shard(self, setting_name: str, index: int) -> dict:
        """The arrays of a shard file (not verified: see `verified_record`)."""
        npz, _ = self.shard_paths(setting_name, index)
        with np.load(npz) as f:
            return {k: f[k] for k in f.files}

    # ------------------------------------------------------------ saved images

    def store_images(self, setting_name: str, shard_index: int, sample_ids: list[int], images, fmt: str) -> None:
        """uint8 [N,3,H,W] images: a png per sample id, or (`fmt` "npz") one npz per batch."""
        folder = self.images_dir / setting_name
        if fmt == "npz":  # one file per batch, named by its first sample id
            save_npz(
                folder / f"{shard_index:05d}_{int(sample_ids[0]):06d}.npz",
                {"sample_ids": np.asarray(sample_ids), "images": images},
            )
            return
        for sid, img in zip(sample_ids, images, strict=False):

            def writer(tmp, img=img):
                Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(tmp, format="PNG")

            atomic_write_with(folder / f"{int(sid):06d}.png", writer)

    def saved_images(self, setting_name: str) -> list[SavedImage]:
        """The images `store_images` wrote for one setting, in file-name order (none: an empty list).
        Other files (the temp files of an interrupted write) are left out; an npz without
        ``sample_ids`` is a `DamagedFile` naming it."""
        folder = self.images_dir / setting_name
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
                    raise DamagedFile(f"{path}: not a saved-images npz ({type(e).__name__}: {e})") from None
                out += [SavedImage(sid, path, k) for k, sid in enumerate(ids)]
        return out

    def saved_image_settings(self) -> list[str]:
        """The setting folders under RUN_DIR/images (none: an empty list)."""
        folder = self.images_dir
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
            if hashes.get(name) != sha256_file(path):
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
            self.path / PREVIEWS_NPZ,
            {
                **{f"{PREVIEW_PREFIX}{k}": v[:n_prev] for k, v in previews.items()},
                "captions": np.asarray(captions[:n_prev]),
                "sample_ids": np.arange(n_prev),
            },
        )
        atomic_write_with(self.path / DIFFERENCES_CSV, lambda tmp: differences.to_csv(tmp, index=False))
        df = pd.DataFrame(rows)
        atomic_write_with(self.path / RESULTS_CSV, lambda tmp: df.to_csv(tmp, index=False))
        atomic_write_with(self.results_parquet, lambda tmp: df.to_parquet(tmp, index=False))
        files = {name: sha256_file(self.path / name) for name in RESULT_FILES + RUN_FILES}
        _write_json(self.manifest_json, dict(manifest, files=files))
        return self.results_parquet

    def _checked(self, name: str) -> Path | None:
        """RUN_DIR/name when it exists (None when not), checked against manifest.json's sha256 for it."""
        path = self.path / name
        if not path.is_file():
            return None
        if self.manifest_json.is_file():
            try:
                recorded = read_json(self.manifest_json).get("files", {}).get(name)
            except (OSError, ValueError, AttributeError):
                raise DamagedFile(f"{self.manifest_json} is damaged") from None
            if recorded is not None and sha256_file(path) != recorded:
                raise DamagedFile(f"{path} is damaged (its sha256 differs from the one in {self.manifest_json})")
        return path

    def read_results(self) -> tuple[pd.DataFrame, Path] | None:
        """results.parquet (else results.csv) and the file read; None when the run has neither."""
        for name, read in ((RESULTS_PARQUET, pd.read_parquet), (RESULTS_CSV, pd.read_csv)):
            path = self._checked(name)
            if path is not None:
                try:
                    return read(path), path
                except (OSError, ValueError) as e:
                    raise DamagedFile(f"{path} cannot be read ({type(e).__name__}: {e})") from None
        return None

    def read_previews(self) -> tuple[dict[str, np.ndarray], list[str]]:
        """Preview images by setting and their captions ({} and [] when the run has no previews.npz)."""
        path = self._checked(PREVIEWS_NPZ)
        if path is None:
            return {}, []
        try:
            with np.load(path) as f:
                previews = {k[len(PREVIEW_PREFIX) :]: f[k] for k in f.files if k.startswith(PREVIEW_PREFIX)}
                captions = [str(c) for c in f["captions"]]
        except LOAD_ERRORS as e:
            raise DamagedFile(f"{path} cannot be read ({type(e).__name__}: {e})") from None
        return previews, captions

    def read_differences(self) -> pd.DataFrame | None:
        """differences.csv as written; None when the run has none (older run directories)."""
        path = self._checked(DIFFERENCES_CSV)
        if path is None:
            return None
        try:
            return pd.read_csv(path)
        except (OSError, ValueError) as e:  # pandas' EmptyDataError is a ValueError
            raise DamagedFile(f"{path}: cannot be read ({e})") from None

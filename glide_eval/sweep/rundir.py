"""A sweep's run directory: what its files mean to a sweep (shard keys, config checks, the lock).

The files themselves (names, key prefixes, schemas, checked readers and writers) are
`storage.rundir.RunFiles`'s, which `RunDir` extends. A shard counts as finished only when
its record exists, names the expected key and the npz on disk has the recorded sha256. The
record is written after the npz, so a process killed at any point leaves either a finished
shard or one that is redone. The sweep, the regression gate, the report and the judging
page read run directories only through `RunDir`; the sweep and the gate write them only
while holding its lock (`RunDir.lock`, see `glide_eval.sweep.lock`): one writer at a time,
across processes and nodes.

Nothing is trusted unverified. Results are up to date only when manifest.json lists exactly
the expected shards and every file it names has its recorded sha256 (`stale_results`); a
missing or damaged one is rebuilt from the shards. run.json carries its own sha256; a
damaged one falls back to config.toml to tell which config made the directory, else is an
error naming it. config.toml and captions.json are rewritten from the config at every run;
a damaged config.toml that is itself the config being run is an error naming it. Temporary
files of killed writes (`storage.files.TEMP_GLOB`) are removed by the next lock holder.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glide_eval.sweep.config import ConfigError, SweepConfig, load_config
from glide_eval.sweep.errors import SweepError
from glide_eval.sweep.lock import RunLock
from glide_eval.sweep.plan import Shard
from storage import DamagedFile, package_versions, sha256_file, sha256_json
from storage.rundir import (
    CAPTIONS_JSON,
    CONFIG_TOML,
    FEATURE_PREFIX,
    RunFiles,
    SavedImage,
    captions_text,
    shard_features,
)

__all__ = ["FEATURE_PREFIX", "DamagedFile", "RunDir", "SavedImage", "KeyedShard", "generation_hash", "shard_key"]

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


@dataclass(frozen=True)
class KeyedShard(Shard):
    """A shard with the key its record must carry and its captions (by sample index)."""

    key: str
    captions: tuple[str, ...]


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


def keyed_shards(shards: list[Shard], gen_hash: str, captions: list[str]) -> list[KeyedShard]:
    out = []
    for shard in shards:
        caps = tuple(captions[shard.start : shard.stop])
        out.append(
            KeyedShard(shard.setting, shard.index, shard.start, shard.stop, shard_key(gen_hash, shard, caps), caps)
        )
    return out


class RunDir(RunFiles):
    """A run directory as a sweep sees it: `RunFiles` plus shard keys, config checks and the lock."""

    def lock(self, purpose: str = "sweep") -> RunLock:
        """The directory's lock (not yet taken): one writer at a time (`glide_eval.sweep.lock`)."""
        return RunLock(self.path, purpose)

    def load_config(self) -> SweepConfig:
        """The config that made the directory: config.toml, checked against run.json's sha256 of it."""
        return load_config(self.checked_config())

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
                toml, run = self.config_toml.name, self.run_json.name
                log(f"{e}; {toml} tells which config made {self.path}, {run} is rewritten")
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
        path = self.config_toml
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
        path = self.config_toml
        recorded = run.get("files", {}).get(CONFIG_TOML)
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
        files = self.write_run_texts({CONFIG_TOML: config.to_toml(), CAPTIONS_JSON: captions_text(captions)}, log)
        run = {
            "config_hash": config.config_hash,
            "generation_hash": gen_hash,
            "config": config.hashed_data(),
            "source": str(config.source) if config.source else None,
            "captions_sha256": sha256_json(captions),
            "files": files,
            "provenance": provenance,
            "versions": package_versions(),
        }
        self.write_run(run)

    # ------------------------------------------------------------ shards

    def finished_record(self, shard: KeyedShard, need_images: str = "none") -> dict | None:
        """The shard's record if the shard is finished and intact, else None."""
        return self.verified_record(shard.setting.name, shard.index, shard.key, need_images)

    def unfinished(self, shards: list[KeyedShard], need_images: str = "none") -> list[KeyedShard]:
        return [shard for shard in shards if self.finished_record(shard, need_images) is None]

    def read_record(self, shard: Shard) -> dict:
        """A shard's record as written (not verified); OSError / ValueError when unreadable."""
        return self.read_shard_record(shard.setting.name, shard.index)

    def write_shard(self, shard: KeyedShard, arrays: dict, record: dict) -> dict:
        return self.save_shard(shard.setting.name, shard.index, arrays, record)

    def load_features(self, shards: list[Shard], n: int | None = None) -> dict:
        """{"features": {name: [n, ...]}, "nan_count": int} of the shards' first n samples (all: None)."""
        parts, nan = [], 0
        for shard in shards:
            if n is not None and shard.start >= n:
                break
            data = self.load_shard(shard.setting.name, shard.index)
            keep = shard.n if n is None else n - shard.start
            parts.append({k: v[:keep] for k, v in shard_features(data).items()})
            nan += int(data["nan_count"])
        return {"features": {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, "nan_count": nan}

    def save_images(self, shard: KeyedShard, sample_ids: list[int], images: np.ndarray, fmt: str) -> None:
        self.store_images(shard.setting.name, shard.index, sample_ids, images, fmt)

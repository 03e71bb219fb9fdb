"""Unreadable statistics and feature files (issue 18, item 3): a cache is rebuilt with one warning
line, a file the user named is an error naming it; temporary files of killed builds go away.

The statistics are of random features, so the truth is numpy's mean and covariance of them.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from damage import flip, truncate

from glide_eval.cli import main
from glide_eval.sweep.errors import MissingComponentError
from glide_eval.sweep.references import reference_stats
from metrics import CorruptFileError, FeatureAccumulator, ReferenceStats
from metrics.reference import cached_reference, reference_from_accumulator

FEATURES = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)


DAMAGE = {"truncate": truncate, "flip": flip}


def accumulator(logits: bool = False) -> FeatureAccumulator:
    acc = FeatureAccumulator(meta={"extractor": "fake", "extractor_sha256": "0" * 64})
    acc.add_features(FEATURES, np.log(np.full((40, 3), 1 / 3)) if logits else None)
    return acc


def build() -> ReferenceStats:
    return reference_from_accumulator(accumulator(), {"dataset": "random"}, k=3)


EXPECTED = {"extractor": "fake", "dataset": "random"}


def assert_true_statistics(stats: ReferenceStats) -> None:
    x = FEATURES.astype(np.float64)
    np.testing.assert_allclose(stats.mu, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(x, rowvar=False), rtol=1e-10)


@pytest.mark.parametrize("damage", DAMAGE)
def test_an_unreadable_reference_cache_is_rebuilt_with_one_warning(tmp_path, damage):
    path = tmp_path / "references" / "ref.npz"
    path.parent.mkdir()
    build().save(path)
    DAMAGE[damage](path)
    with pytest.raises(CorruptFileError, match=f"cannot read reference statistics {path}") as info:
        ReferenceStats.load(path)
    assert isinstance(info.value.__cause__, zipfile.BadZipFile)  # what used to escape: BadZipFile / Bad CRC-32
    logs, builds = [], []

    def counted_build():
        builds.append(1)
        return build()

    stats = cached_reference(path, EXPECTED, counted_build, log=logs.append)
    assert len(builds) == 1 and len(logs) == 1 and "\n" not in logs[0]
    assert logs[0].startswith(f"warning: cannot read reference statistics {path}") and "rebuilding" in logs[0]
    assert_true_statistics(stats)
    assert_true_statistics(ReferenceStats.load(path))  # the rebuilt file reads back
    assert cached_reference(path, EXPECTED, counted_build, log=logs.append).n == 40 and len(builds) == 1


@pytest.mark.parametrize("damage", DAMAGE)
def test_an_unreadable_user_reference_is_an_error_naming_it(tmp_path, damage):
    path = tmp_path / "mine.npz"
    build().save(path)
    DAMAGE[damage](path)
    damaged = path.read_bytes()
    with pytest.raises(CorruptFileError, match=str(path)):
        cached_reference(path, EXPECTED, build, log=print, rebuild_unreadable=False)
    assert path.read_bytes() == damaged  # the user's file is left as it was

    # the sweep: [metrics] reference = the damaged file is an error naming it, and left as it was
    with pytest.raises(MissingComponentError, match=rf"\[metrics.reference\] cannot read reference statistics {path}"):
        reference_stats(str(path), tmp_path / "cache.npz", EXPECTED, build, log=print)
    assert path.read_bytes() == damaged and not (tmp_path / "cache.npz").exists()
    # the same damaged file as the sweep's own cache ([metrics] reference empty): rebuilt
    logs = []
    assert_true_statistics(reference_stats("", path, EXPECTED, build, log=logs.append))
    assert len(logs) == 1 and "rebuilding" in logs[0]


def test_a_killed_builds_temp_files_are_removed_and_no_others(tmp_path):
    path = tmp_path / "ref.npz"
    mine, other = tmp_path / ".ref.npz.k1l2m3n4.tmp", tmp_path / ".other.npz.k1l2m3n4.tmp"
    for p in (mine, other):
        p.write_bytes(b"half")
    assert_true_statistics(cached_reference(path, EXPECTED, build, log=print))
    assert not mine.exists() and other.exists()


@pytest.mark.parametrize("damage", DAMAGE)
def test_an_unreadable_feature_state_names_the_file(tmp_path, damage):
    path = tmp_path / "feats.npz"
    accumulator().save(path)
    DAMAGE[damage](path)
    with pytest.raises(CorruptFileError, match=f"cannot read feature state {path}"):
        FeatureAccumulator.load(path)


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("kind", ["features", "images"])
def test_metrics_gen_bad_npz_is_an_error_naming_it(tmp_path, kind, damage):
    path = tmp_path / "gen.npz"
    if kind == "features":
        accumulator(logits=True).save(path)
    else:  # generated images as arr_0 (compressed: a flipped byte breaks the deflate stream or its CRC)
        images = np.random.default_rng(1).integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
        np.savez_compressed(path, arr_0=images)
    if kind == "features":  # the undamaged file works: IS of uniform logits is exactly 1
        ok = CliRunner().invoke(main, ["metrics", "--gen", str(path), "--isc", "--json"])
        assert ok.exit_code == 0 and json.loads(ok.output)["is"] == pytest.approx(1.0, abs=1e-12), ok.output
    DAMAGE[damage](path)
    result = CliRunner().invoke(main, ["metrics", "--gen", str(path), "--isc"])
    assert result.exit_code == 1, result.output
    named = [f"--gen {path}: cannot be read (", f"--gen: cannot read feature state {path}: "]
    assert any(text in result.output for text in named), result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)

"""The metrics registries refuse a duplicate name unless asked to replace it (issue 25 item 2),
and an entry-point plugin loaded twice, or its module reloaded, does not trip that."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from functools import partial

import numpy as np
import pytest

from metrics import DuplicateNameError, calculate_metrics, create_extractor, list_extractors, register_extractor
from metrics.calculate import METRICS, NAMES, register_metric
from metrics.extractors import _REGISTRY, INCEPTION, InceptionExtractor
from metrics.names import HIGHER_IS_BETTER, register_direction

PLUGIN = """
from metrics.extractors import register_extractor


class TwiceExtractor:
    kind, name, weights_sha256 = "image", "twice-test", None

    def __init__(self, weights_path=None, device="cpu"):
        pass


register_extractor("twice-test", TwiceExtractor)
"""


class _Other:
    def __init__(self, weights_path=None, device="cpu"):
        self.kind, self.name, self.weights_sha256 = "image", "other", None


def test_extractor_registry_refuses_a_duplicate_unless_replace():
    with pytest.raises(DuplicateNameError, match="'inception-v3-compat' is already registered.*replace=True"):
        register_extractor(INCEPTION, _Other)
    assert _REGISTRY[INCEPTION] is InceptionExtractor
    register_extractor(INCEPTION, InceptionExtractor)  # the same factory again: no error, no change
    try:
        register_extractor(INCEPTION, _Other, replace=True)
        assert isinstance(create_extractor(INCEPTION), _Other)
    finally:
        register_extractor(INCEPTION, InceptionExtractor, replace=True)
    assert _REGISTRY[INCEPTION] is InceptionExtractor
    # partials of one class with equal arguments are the same factory; other arguments are not
    register_extractor("partial-test", partial(_Other, device="cpu"))
    try:
        register_extractor("partial-test", partial(_Other, device="cpu"))
        with pytest.raises(DuplicateNameError):
            register_extractor("partial-test", partial(_Other, device="cuda"))
    finally:
        _REGISTRY.pop("partial-test")
    # two lambdas share a qualified name but are not the same factory
    register_extractor("lambda-test", lambda weights_path=None, device="cpu": 1)
    try:
        with pytest.raises(DuplicateNameError):
            register_extractor("lambda-test", lambda weights_path=None, device="cpu": 2)
    finally:
        _REGISTRY.pop("lambda-test")


def test_plugin_loaded_twice_and_reloaded_is_not_a_duplicate(tmp_path, monkeypatch):
    (tmp_path / "twice_plugin_mod.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = importlib.metadata.EntryPoint("twice", "twice_plugin_mod", "metrics.extractors")

    def entry_points(group=None):
        return [entry, entry] if group == "metrics.extractors" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    try:
        assert "twice-test" in list_extractors()  # loads the plugin (twice)
        assert "twice-test" in list_extractors()  # and again
        module = importlib.reload(sys.modules["twice_plugin_mod"])  # new class objects, same names
        assert _REGISTRY["twice-test"] is module.TwiceExtractor
        with pytest.raises(DuplicateNameError, match="twice_plugin_mod.TwiceExtractor"):
            register_extractor("twice-test", _Other)
    finally:
        _REGISTRY.pop("twice-test", None)
        sys.modules.pop("twice_plugin_mod", None)


def _mean(g, r, o):
    return {"pool_mean2": float(g.pool.mean())}, {}


def _max(g, r, o):
    return {"pool_mean2": float(g.pool.max())}, {}


def test_metric_registry_refuses_a_duplicate_unless_replace():
    pool = np.arange(12.0).reshape(4, 3)
    with pytest.raises(DuplicateNameError, match="'fid' is already registered"):
        register_metric("fid", _mean, False, ("fid",))
    with pytest.raises(DuplicateNameError, match="already reported by other metrics.*'precision': 'prc'"):
        register_metric("my_precision", _mean, False, ("precision",))
    assert "my_precision" not in METRICS and NAMES["precision"] == "prc"
    register_metric("pool_mean2", _mean, False, ("pool_mean2",), higher_is_better=True)
    try:
        register_metric("pool_mean2", _mean, False, ("pool_mean2",), higher_is_better=True)  # same: no error
        with pytest.raises(DuplicateNameError, match="'pool_mean2' is already registered"):
            register_metric("pool_mean2", _max, False, ("pool_mean2",))
        with pytest.raises(DuplicateNameError, match="higher_is_better=True"):
            register_direction("pool_mean2", False)
        assert calculate_metrics({"pool": pool}, names=["pool_mean2"])["pool_mean2"] == pool.mean()
        register_metric("pool_mean2", _max, False, ("pool_mean2",), higher_is_better=False, replace=True)
        assert calculate_metrics({"pool": pool}, names=["pool_mean2"])["pool_mean2"] == pool.max()
        assert HIGHER_IS_BETTER["pool_mean2"] is False
    finally:
        METRICS.pop("pool_mean2")
        NAMES.pop("pool_mean2")
        HIGHER_IS_BETTER.pop("pool_mean2")

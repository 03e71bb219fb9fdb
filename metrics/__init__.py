"""Image-generation metrics: FID, Inception Score, precision/recall, CLIP score.

Takes uint8 images and captions; knows nothing of samplers or sweeps. Public API:

- `create_extractor` / `register_extractor` / `list_extractors` (metrics.extractors);
- `FeatureAccumulator`: streaming, saveable, mergeable per-shard feature state;
- `ReferenceStats`, `build_reference`, `cached_reference`: cached reference statistics;
- `calculate_metrics(gen, ref, names=[...], ci=True)`: FID, IS, precision/recall, CLIP score,
  KID, FID∞ (a registry: `register_metric`), each with an interval from influence values;
- `paired_differences(gen_a, gen_b, ref, names)`: differences between two settings whose
  samples are paired row by row, with paired intervals;
- `CorruptFileError`: a statistics or feature file that cannot be read (`storage`'s, re-exported).

Files are written and hashed through `storage` (atomic writes, sha256), the floor below.
"""

from metrics.calculate import NAMES, calculate_metrics, register_metric
from metrics.extractors import (
    CLIP_B16,
    INCEPTION,
    ExtractorError,
    create_extractor,
    list_extractors,
    register_extractor,
)
from metrics.features import FeatureAccumulator, FeatureError
from metrics.paired import paired_differences
from metrics.reference import ReferenceStats, build_reference, cached_reference, expected_meta
from storage import CorruptFileError  # re-exported: callers catch it as metrics.CorruptFileError

__all__ = [
    "calculate_metrics",
    "register_metric",
    "NAMES",
    "paired_differences",
    "create_extractor",
    "register_extractor",
    "list_extractors",
    "INCEPTION",
    "CLIP_B16",
    "CorruptFileError",
    "ExtractorError",
    "FeatureAccumulator",
    "FeatureError",
    "ReferenceStats",
    "build_reference",
    "cached_reference",
    "expected_meta",
]

"""Image-generation metrics: FID, Inception Score, precision/recall, CLIP score.

Takes uint8 images and captions; knows nothing of samplers or sweeps. Public API:

- `create_extractor` / `register_extractor` / `list_extractors` (metrics.extractors);
- `FeatureAccumulator`: streaming, saveable, mergeable per-shard feature state;
- `ReferenceStats`, `build_reference`, `cached_reference`: cached reference statistics;
- `calculate_metrics(gen, ref, fid=..., isc=..., prc=..., clip_score=...)`.
"""
from metrics.calculate import calculate_metrics
from metrics.extractors import (
                                CLIP_B16,
                                INCEPTION,
                                ExtractorError,
                                create_extractor,
                                list_extractors,
                                register_extractor,
)
from metrics.features import CorruptFileError, FeatureAccumulator, FeatureError
from metrics.reference import ReferenceStats, build_reference, cached_reference, expected_meta

__all__ = [
    "calculate_metrics", "create_extractor", "register_extractor", "list_extractors", "INCEPTION", "CLIP_B16",
    "CorruptFileError", "ExtractorError", "FeatureAccumulator", "FeatureError", "ReferenceStats", "build_reference",
    "cached_reference", "expected_meta",
]

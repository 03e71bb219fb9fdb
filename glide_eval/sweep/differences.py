"""Paired differences between a sweep's settings: RUN_DIR/differences.csv.

Every setting samples caption i with the noise of sample index i, so two settings' first n
samples are paired row by row and `metrics.paired_differences` gives intervals of their
difference far tighter than two separate intervals. Compared are (`reports.intervals.comparison_pairs`)
each guidance family's adjacent scales and, across the cfg and CLIP families, the settings
nearest in CLIP score -- with Bonferroni-corrected intervals over all of these comparisons --
and every `steps` setting with the steps reference (`[grid] steps_reference`, default
ancestral-250 when sampled) on the steps settings' captions: "steps-reference" rows, each a
plain 95% interval (one question per solver setting: is it distinguishable from the reference?).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from glide_eval.sweep.components import Components
from glide_eval.sweep.config import SweepConfig, steps_reference
from glide_eval.sweep.errors import SweepError
from metrics.calculate import METRICS, NAMES
from metrics.paired import difference_rows
from reports.intervals import DIFFERENCE_COLUMNS, comparison_pairs

COLUMNS = [*DIFFERENCE_COLUMNS, "n_samples", "comparisons"]
STEPS_KIND = "steps-reference"


def metric_keys(names: list[str]) -> list[str]:
    """The metric keys `names` give (precision and recall come together)."""
    entries = dict.fromkeys(NAMES[n] for n in names)
    return [key for entry in entries for key in METRICS[entry].keys]


def difference_pairs(config: SweepConfig, rows: list[dict]) -> list[tuple[str, str, str]]:
    """(setting_a, setting_b, kind): the guidance comparisons, then each steps setting vs the reference."""
    results = pd.DataFrame(rows)
    pairs = comparison_pairs(results[results["family"] != "steps"]) if len(results) else []
    reference = steps_reference(config)
    if reference is not None:
        pairs += [
            (reference, r["setting"], STEPS_KIND)
            for r in rows
            if r["family"] == "steps" and reference not in (r["setting"], r.get("samples_from"))
        ]
    return pairs


def measure_differences(
    config: SweepConfig,
    components: Components,
    rows: list[dict],
    features: Callable[[str, int], dict],
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """The differences table (columns COLUMNS; no rows when the engine has no `compute_differences`).

    `features(setting, n)`: the setting's features of its first n samples, read when a comparison
    needs them. Only the two settings of one comparison are held at a time (the next comparison
    keeps the one it shares), so the memory does not grow with the number of settings."""
    if components.compute_differences is None:
        return pd.DataFrame(columns=COLUMNS)
    pairs = difference_pairs(config, rows)
    guidance = sum(kind != STEPS_KIND for _, _, kind in pairs) * len(metric_keys(config.metrics.names))
    sizes = {r["setting"]: r["n_samples"] for r in rows}
    out, held = [], {}
    for a, b, kind in pairs:
        n = min(sizes[a], sizes[b])
        wanted = [(a, n), (b, n)]
        held = {key: held[key] for key in wanted if key in held}  # the others go before a load
        for key in wanted:
            if key not in held:
                held[key] = features(*key)
        comparisons = 1 if kind == STEPS_KIND else guidance
        try:
            result = components.compute_differences(held[(a, n)], held[(b, n)], comparisons)
        except (ValueError, RuntimeError) as e:
            raise SweepError(f"{b} - {a}: computing the paired differences failed: {e}") from e
        for row in difference_rows(result):
            out.append(
                {
                    "setting_a": a,
                    "setting_b": b,
                    "kind": kind,
                    "n_samples": n,
                    "comparisons": comparisons,
                    **{k: row[k] for k in ("metric", "a", "b", "difference", "se", "ci_low", "ci_high")},
                }
            )
    log(f"paired differences: {len(pairs)} comparisons of settings")
    return pd.DataFrame(out, columns=COLUMNS)

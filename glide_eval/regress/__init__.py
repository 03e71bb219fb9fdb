"""`glide-eval regress`: a CI gate that compares a candidate checkpoint with a baseline sweep.

The candidate is sampled under the baseline run's exact protocol: the baseline's captions
(captions.json), the same per-sample seeds (run.seed, sample index), sampler, steps,
guidance settings, dtype and engine, for the first N sample ids (N rounded up to the end
of a generation batch, so every sample is made in the same batch as in the baseline and
an identical checkpoint gives bit-identical results). The baseline's per-sample features
for those ids are read from its shards; nothing of the baseline is recomputed.

Comparison, per (setting, metric). Both sides' metrics come from the same metric code
(the engine's `compute_metrics`, reference statistics fixed). The difference is
``d = candidate - baseline``; its worsening is ``w = d`` for FID (lower is better) and
``w = -d`` for IS, precision, recall and CLIP score (higher is better). The interval is
``w ± z·SE``, SE the paired standard error from per-sample influence values
(`metrics.paired_differences` through the engine's `compute_differences`; the toy and glide
engines) or, for an engine without it, the standard deviation of a paired bootstrap (each
replicate resamples the same sample indices on both sides, `metrics.paired_bootstrap`,
`--bootstrap` rounds), z the two-sided normal
quantile at `level` (default 0.95) Bonferroni-corrected over all m compared
(setting, metric) pairs, i.e. at 1 - 0.05/m each. With tolerance t >= 0 (absolute, or a
percentage of the baseline value; default 0):

- **regression**: ``w - z·SE > t``; the whole interval says the candidate is worse by more
  than the tolerance;
- **possible regression**: ``w > t`` but the interval reaches into ``<= t`` (sampling noise
  cannot be ruled out; the gate passes);
- **better**: ``w + z·SE < 0``; **identical**: ``d == 0`` and SE == 0; **ok** otherwise.

Sampling NaN/inf steps are compared too: a regression when the candidate has more than the
baseline had over the baseline shards that cover the N samples (plus the nan_count tolerance).

Protocol (exit 2 when it differs, listing every difference): run.seed, run.dtype, engine,
engine_options, sampler.*, captions (the candidate config's captions must equal the
baseline's first N), guidance settings (a subset of the baseline's). The batch size and
device may differ (then the numerics may move in the last bits). The evaluation files in
the provenance (feature extractors) must have the baseline's sha256, and the candidate run
must load at least one file of the candidate folder: an engine that ignores
[models.checkpoints] would otherwise compare the baseline with itself and pass.

Exit status: 0 no regression, 1 at least one regression, 2 could not evaluate (missing
files or shards, protocol mismatch, N beyond the baseline); the message names what differs.

Output folder (--out): candidate/ is a run directory in the sweep's layout (`glide_eval.sweep.rundir`)
and resumes like a sweep; baseline-images/ holds regenerated baseline images (--images,
when the baseline did not save them); regress.json and regress.md are the report.

Modules: `baseline` (the baseline run and its features), `protocol` (the candidate's config
and what must match), `candidate` (sampling the candidate into a run directory), `compare`
(paired bootstrap and verdicts), `images` (--images), `report` (regress.json / .md), and
`gate` (the whole comparison, `regress()`).
"""

"""One entry point for every metric (torch-fidelity style): `calculate_metrics`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from metrics.clip_score import clip_cosines  # noqa: F401  (re-exported for callers)
from metrics.cmmd import SCALE as CMMD_SCALE
from metrics.cmmd import SIGMA as CMMD_SIGMA
from metrics.cmmd import cmmd
from metrics.density_coverage import DEFAULT_K as DC_K
from metrics.density_coverage import density_coverage
from metrics.features import FeatureAccumulator, FeatureError, FeatureSets
from metrics.fid import frechet_distance
from metrics.fid_infinity import fid_infinity
from metrics.inception_score import inception_score
from metrics.influence import fid_influence, inception_score_influence, interval, mean_influence
from metrics.kid import DEFAULT_SEED, DEFAULT_SUBSET_SIZE, DEFAULT_SUBSETS, kid
from metrics.names import EXTRACTOR_ROLE, INCEPTION_ROLE, register_direction
from metrics.prc import DEFAULT_BATCH, DEFAULT_K, knn_radii, precision_recall_hits
from metrics.recall_interval import recall_interval
from metrics.reference import ReferenceStats


@dataclass
class _Side:
    n: int
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    pool: np.ndarray | None = None
    radii: np.ndarray | None = None
    radii_meta: tuple | None = None  # (k, block size) the cached radii were made with
    logits: np.ndarray | None = None
    clip_scores: np.ndarray | None = None
    n_nan: int = 0
    n_truncated: int = 0
    extractor: str | None = None
    extractor_sha256: str | None = None
    protocol: str | None = None  # the extractor's preprocessing protocol (metrics.extractors)
    label: str = ""
    dc_radii: np.ndarray | None = None  # cached density/coverage radii (reference)
    dc_k: int | None = None
    cmmd_term: dict | None = None  # cached CMMD reference term {"sigma", "unbiased", "value"}


def _side(x, label: str) -> _Side:
    if isinstance(x, _Side):
        return x
    if isinstance(x, ReferenceStats):
        return _Side(
            n=x.n,
            mu=x.mu,
            sigma=x.sigma,
            pool=x.pool,
            radii=x.radii,
            label=label,
            radii_meta=(x.meta.get("k"), x.meta.get("prc_batch_size")),
            extractor=x.meta.get("extractor"),
            extractor_sha256=x.meta.get("extractor_sha256"),
            protocol=x.meta.get("protocol"),
            dc_radii=x.dc_radii,
            dc_k=x.meta.get("dc_k"),
            cmmd_term=x.meta.get("cmmd_reference_term"),
        )
    if isinstance(x, dict):
        acc = FeatureAccumulator(
            meta={k: x.get(k) for k in ("extractor", "extractor_sha256", "protocol") if x.get(k) is not None}
        )
        acc.add_features(x["pool"], x.get("logits_unbiased"), x.get("clip_scores"), x.get("n_truncated", 0))
        x = acc
    if isinstance(x, FeatureAccumulator):
        mu = sigma = None
        if x.n >= 2:
            mu, sigma = x.statistics()
        return _Side(
            n=x.n,
            mu=mu,
            sigma=sigma,
            pool=x.pool,
            logits=x.logits,
            clip_scores=x.clip_scores,
            n_nan=x.n_nan,
            n_truncated=x.n_truncated,
            extractor=x.meta.get("extractor"),
            extractor_sha256=x.meta.get("extractor_sha256"),
            protocol=x.meta.get("protocol"),
            label=label,
        )
    raise TypeError(f"{label}: expected FeatureAccumulator, ReferenceStats or feature dict, got {type(x).__name__}")


def _need(value, what: str, side: _Side):
    if value is None:
        raise FeatureError(f"{side.label}: {what} not available")
    return value


@dataclass
class Options:
    """Every metric's settings (see `calculate_metrics`)."""

    k: int = DEFAULT_K
    prc_batch_size: int = DEFAULT_BATCH
    isc_splits: int = 10
    isc_convention: str = "torch-fidelity"
    isc_seed: int = 2020
    kid_subsets: int = DEFAULT_SUBSETS
    kid_subset_size: int = DEFAULT_SUBSET_SIZE
    kid_seed: int = DEFAULT_SEED
    fid_infinity_points: int = 15
    fid_infinity_seed: int = 0
    recall_seed: int = 0  # which halves (the same for paired settings)
    dc_k: int = DC_K  # density / coverage (Naeem et al.: k = 5)
    cmmd_sigma: float = CMMD_SIGMA
    cmmd_scale: float = CMMD_SCALE


# A metric: fn(generated _Side, reference _Side or None, Options) -> (values {key: float},
# influence {metric key: psi [n_gen]}); `needs_ref`: it needs the reference.
@dataclass
class Metric:
    fn: Callable
    needs_ref: bool
    keys: tuple[str, ...]
    # which extractor's features (metrics.names.EXTRACTOR_ROLE); None: the first of a FeatureSets
    # (the CLIP score's scores ride with whichever extractor the scorer was attached to)
    role: str | None = INCEPTION_ROLE


def frechet(key: str):
    """The Fréchet distance of the role's features as metric `key` (FID, FD_DINOv2, FD_CLIP),
    with its delta-method influence values."""

    def fd(g: _Side, r: _Side, o: Options):
        mu_g, sig_g = _need(g.mu, "statistics (>= 2 samples)", g), g.sigma
        mu_r, sig_r = _need(r.mu, "statistics", r), r.sigma
        if mu_g.shape != mu_r.shape:
            raise FeatureError(f"{key}: feature dims differ: generated {mu_g.shape[0]} vs reference {mu_r.shape[0]}")
        value = frechet_distance(mu_r, sig_r, mu_g, sig_g)

        def psi():
            pool = _need(g.pool, f"per-sample pool features (for the {key} interval)", g)
            return fid_influence(pool, mu_g, sig_g, mu_r, sig_r)

        return {key: value}, {key: psi}

    return fd


def _isc(g: _Side, r, o: Options):
    logits = _need(g.logits, "logits_unbiased (for the Inception Score)", g)
    value, std = inception_score(logits, o.isc_splits, True, o.isc_seed, o.isc_convention)
    return {"is": value, "is_std": std}, {
        "is": lambda: inception_score_influence(logits, o.isc_splits, True, o.isc_seed, o.isc_convention)
    }


def _prc_pools(g: _Side, r: _Side, o: Options):
    gen_pool = _need(g.pool, "per-sample pool features (for precision/recall)", g)
    ref_pool = _need(r.pool, "per-sample pool features (for precision/recall)", r)
    if gen_pool.shape[1] != ref_pool.shape[1]:
        raise FeatureError(f"feature dims differ: generated {gen_pool.shape[1]} vs reference {ref_pool.shape[1]}")
    ref_radii = r.radii
    if r.radii_meta is not None and r.radii_meta != (o.k, o.prc_batch_size):
        ref_radii = None  # cached for another k or block size
    if ref_radii is None:
        ref_radii = knn_radii(ref_pool, o.k, o.prc_batch_size)
    return gen_pool, ref_pool, ref_radii


def _prc(g: _Side, r: _Side, o: Options, influence: bool = False):
    gen_pool, ref_pool, ref_radii = _prc_pools(g, r, o)
    if influence:  # the same decisions, plus the recall jackknife (no extra distance pass)
        gen_hit, real_hit, recall_psi = recall_interval(
            gen_pool, ref_pool, ref_radii, o.k, o.prc_batch_size, seed=o.recall_seed
        )
    else:
        gen_hit, real_hit = precision_recall_hits(gen_pool, ref_pool, None, ref_radii, o.k, o.prc_batch_size)
        recall_psi = None
    values = {"precision": float(gen_hit.mean()), "recall": float(real_hit.mean())}
    return values, {"precision": lambda: mean_influence(gen_hit), "recall": lambda: recall_psi}


def _clip(g: _Side, r, o: Options):
    scores = _need(g.clip_scores, "CLIP scores", g)
    return (
        {"clip_score": float(np.mean(scores)), "clip_truncated": g.n_truncated},
        {"clip_score": lambda: mean_influence(scores)},
    )


def _kid(g: _Side, r: _Side, o: Options):
    gen_pool = _need(g.pool, "per-sample pool features (for KID)", g)
    ref_pool = _need(r.pool, "per-sample pool features (for KID)", r)
    out = kid(gen_pool, ref_pool, o.kid_subsets, min(o.kid_subset_size, g.n, r.n), seed=o.kid_seed)
    return {"kid": out["kid"], "kid_std": out["kid_std"]}, {"kid": lambda: out["psi"]}


def _fid_infinity(g: _Side, r: _Side, o: Options):
    pool = _need(g.pool, "per-sample pool features (for FID∞)", g)
    mu_r = _need(r.mu, "statistics", r)
    out = fid_infinity(pool, mu_r, r.sigma, o.fid_infinity_points, seed=o.fid_infinity_seed)
    return {"fid_infinity": out["fid_infinity"]}, {"fid_infinity": lambda: out["psi"]}


def _cmmd(g: _Side, r: _Side, o: Options):
    gen_pool = _need(g.pool, "per-sample embeddings (for CMMD)", g)
    ref_pool = _need(r.pool, "per-sample embeddings (for CMMD)", r)
    cached = r.cmmd_term or {}
    term = cached.get("value") if (cached.get("sigma"), cached.get("unbiased")) == (o.cmmd_sigma, True) else None
    out = cmmd(gen_pool, ref_pool, o.cmmd_sigma, o.cmmd_scale, ref_term=term)
    return {"cmmd": out["cmmd"]}, {"cmmd": lambda: out["psi"]}


def _density_coverage(g: _Side, r: _Side, o: Options):
    gen_pool = _need(g.pool, "per-sample features (for density/coverage)", g)
    ref_pool = _need(r.pool, "per-sample features (for density/coverage)", r)
    radii = r.dc_radii if r.dc_radii is not None and r.dc_k == o.dc_k else None
    out = density_coverage(gen_pool, ref_pool, radii, o.dc_k)
    return {"density": out["density"], "coverage": out["coverage"]}, {
        "density": lambda: out["density_psi"],
        "coverage": lambda: out["coverage_hits"],
    }


_fid = frechet("fid")

METRICS: dict[str, Metric] = {
    "fid": Metric(_fid, True, ("fid",)),
    "is": Metric(_isc, False, ("is",)),
    "prc": Metric(_prc, True, ("precision", "recall")),
    "clip_score": Metric(_clip, False, ("clip_score",), None),
    "kid": Metric(_kid, True, ("kid",)),
    "fid_infinity": Metric(_fid_infinity, True, ("fid_infinity",)),
    "fd_dinov2": Metric(frechet("fd_dinov2"), True, ("fd_dinov2",), EXTRACTOR_ROLE["fd_dinov2"]),
    "fd_clip": Metric(frechet("fd_clip"), True, ("fd_clip",), EXTRACTOR_ROLE["fd_clip"]),
    "cmmd": Metric(_cmmd, True, ("cmmd",), EXTRACTOR_ROLE["cmmd"]),
    "dc": Metric(_density_coverage, True, ("density", "coverage"), EXTRACTOR_ROLE["density"]),
}
# names accepted in `names` -> registry entry: each entry's metric keys (their directions:
# `metrics.names.HIGHER_IS_BETTER`, which holds every one of them)
NAMES = {key: entry for entry, metric in METRICS.items() for key in metric.keys}


def register_metric(
    name: str,
    fn: Callable,
    needs_ref: bool,
    keys: tuple[str, ...],
    higher_is_better: bool | None = None,
    role: str = INCEPTION_ROLE,
) -> None:
    """Add a metric `name`: fn(generated, reference, Options) -> (values, {key: () -> psi}),
    computed on the features of extractor `role`. With `higher_is_better`, its keys' direction
    is recorded in `metrics.names` (Pareto fronts, the regression gate and difference tables need it)."""
    METRICS[name] = Metric(fn, needs_ref, tuple(keys), role)
    NAMES.update({key: name for key in (name, *keys)})
    if higher_is_better is not None:
        for key in keys:
            register_direction(key, higher_is_better)


def _entries(names) -> list[str]:
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise ValueError(f"unknown metric name(s) {unknown}; known: {sorted(NAMES)}")
    return sorted({NAMES[n] for n in names}, key=list(METRICS).index)


def _pick(x, role: str, label: str):
    """The role's features of `x`: its entry when `x` is a `FeatureSets`, else `x` itself."""
    if not isinstance(x, FeatureSets):
        return x
    if role is None:
        return next(iter(x.values()))
    if role not in x:
        raise FeatureError(f"{label}: no {role} features (have: {', '.join(x) or 'none'})")
    return x[role]


def _sides(gen, ref, role: str, entries: list[str], allow_nan: bool) -> tuple[_Side, _Side | None]:
    g = _side(_pick(gen, role, "generated"), "generated")
    r = _side(_pick(ref, role, "reference"), "reference") if ref is not None else None
    if g.n_nan and not allow_nan:
        raise FeatureError(f"generated: {g.n_nan} of {g.n + g.n_nan} samples have NaN/inf features")
    needs = [e for e in entries if METRICS[e].needs_ref]
    if needs and r is None:
        raise FeatureError(f"{', '.join(needs)} need(s) a reference")
    if (
        r is not None
        and r.extractor
        and g.extractor
        and (r.extractor, r.extractor_sha256) != (g.extractor, g.extractor_sha256)
    ):
        raise FeatureError(
            f"generated features come from {g.extractor} ({g.extractor_sha256}) but the "
            f"reference from {r.extractor} ({r.extractor_sha256})"
        )
    if r is not None and r.protocol and g.protocol and r.protocol != g.protocol:
        raise FeatureError(
            f"generated {g.extractor} features were made with preprocessing protocol {g.protocol!r} but the "
            f"reference's with {r.protocol!r}: values of different protocols are not comparable; rebuild the reference"
        )
    return g, r


def evaluate(
    gen, ref, names, options: Options | None = None, influence: bool = False, allow_nan: bool = False
) -> tuple[dict, dict[str, np.ndarray]]:
    """(values, {metric: influence values psi [n_gen] or HalfSamples} when `influence`) for metric `names`."""
    o = options or Options()
    entries = _entries(names)
    roles = list(dict.fromkeys(METRICS[e].role for e in entries))
    sides = {role: _sides(gen, ref, role, [e for e in entries if METRICS[e].role == role], allow_nan) for role in roles}
    g, r = sides[roles[0]]
    values: dict = {"n_gen": g.n, "n_nan": g.n_nan}
    if r is not None:
        values["n_ref"] = r.n
    psis: dict[str, np.ndarray] = {}
    for e in entries:
        metric = METRICS[e]
        g, r = sides[metric.role]
        got, lazy = metric.fn(g, r, o, influence) if e == "prc" else metric.fn(g, r, o)
        values.update(got)
        if influence:
            psis.update({key: fn() for key, fn in lazy.items()})
    return values, psis


def calculate_metrics(
    gen,
    ref=None,
    fid: bool = True,
    isc: bool = True,
    prc: bool = True,
    clip_score: bool = False,
    k: int = DEFAULT_K,
    prc_batch_size: int = DEFAULT_BATCH,
    isc_splits: int = 10,
    isc_convention: str = "torch-fidelity",
    isc_seed: int = 2020,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    allow_nan: bool = False,
    names=None,
    ci: bool = False,
    **options,
) -> dict:
    """Metrics of generated features `gen` against reference `ref`.

    gen: `FeatureAccumulator` (merged shards) or dict {"pool", "logits_unbiased", "clip_scores"};
    ref: `ReferenceStats` (cached, with k-NN radii), `FeatureAccumulator` or dict; FID, FID∞, KID
    and precision/recall need it. `names` (e.g. ["fid", "is", "kid", "fid_infinity"], see `NAMES`)
    replaces the fid/isc/prc/clip_score switches. Returns {"fid", "is", "is_std", "precision",
    "recall", "clip_score", "clip_truncated", "kid", "kid_std", "fid_infinity", "n_gen", "n_ref",
    "n_nan"} for the requested metrics and, with `ci` (or `bootstrap` > 0, kept for old callers;
    its count is not used), "<metric>_se", "<metric>_ci_low", "<metric>_ci_high": value ± z·SE at
    `level` from per-sample influence values (metrics/README.md says what each covers).
    `options`: further `Options` fields (kid_subsets, kid_subset_size, kid_seed,
    fid_infinity_points; fid_infinity_seed defaults to `seed`).
    """
    if names is None:
        names = [n for n, on in (("fid", fid), ("is", isc), ("precision", prc), ("clip_score", clip_score)) if on]
    options.setdefault("fid_infinity_seed", seed)
    o = Options(
        k=k,
        prc_batch_size=prc_batch_size,
        isc_splits=isc_splits,
        isc_convention=isc_convention,
        isc_seed=isc_seed,
        **options,
    )
    want_ci = ci or bootstrap > 0
    values, psis = evaluate(gen, ref, names, o, influence=want_ci, allow_nan=allow_nan)
    for key, psi in psis.items():
        iv = interval(values[key], psi, level)
        values[f"{key}_se"], values[f"{key}_ci_low"], values[f"{key}_ci_high"] = iv["se"], iv["low"], iv["high"]
    return values

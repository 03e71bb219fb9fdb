"""The regression test's protocol: the candidate's config, and what must equal the baseline's."""

from __future__ import annotations

from pathlib import Path

from glide_eval.regress.baseline import Baseline, RegressError
from glide_eval.sweep.captions import load_captions
from glide_eval.sweep.config import SweepConfig, load_config
from glide_eval.sweep.errors import MissingComponentError
from glide_eval.toy.models import FILES as TOY_FILES
from samplers.model_configs import OFFICIAL_FILES
from storage import cached_sha256

# file names a checkpoint folder may hold besides the ones a run loads (a 64px run leaves
# upsample.pt, the inpainting models and the noised CLIP unread)
RELEASED_NAMES = frozenset(OFFICIAL_FILES.values()) | frozenset(TOY_FILES.values())

# config keys that define the protocol and must equal the baseline's (captions are compared by content)
PROTOCOL_KEYS = [
    ("run", "seed"),
    ("run", "dtype"),
    ("models", "engine"),
    ("captions", "source"),
    ("captions", "seed"),
    ("sampler", "resolution"),
    ("sampler", "method"),
    ("sampler", "base_respacing"),
    ("sampler", "upsample_respacing"),
    ("sampler", "upsample_temperature"),
]


def candidate_config(baseline: Baseline, candidate_dir: Path, config_path: Path | None, out_dir: Path) -> SweepConfig:
    """The config the candidate is sampled with: --config (or the baseline's), pointed at the
    candidate checkpoints and OUT/candidate, with the baseline's shard layout."""
    source = load_config(config_path) if config_path else baseline.config
    return source.with_overrides(
        models={"checkpoints": str(Path(candidate_dir).resolve())},
        run={
            "output_dir": str(Path(out_dir).resolve() / "candidate"),
            "shard_size": baseline.config.run.shard_size,
            "save_images": "none",
        },
        captions={"n": baseline.config.captions.n},
    )


def protocol_differences(base: SweepConfig, cand: SweepConfig) -> list[str]:
    diffs = []
    for section, key in PROTOCOL_KEYS:
        a, b = getattr(getattr(base, section), key), getattr(getattr(cand, section), key)
        if a != b:
            diffs.append(f"{section}.{key}: baseline {a!r}, candidate {b!r}")
    if base.engine_options != cand.engine_options:
        diffs.append(f"engine_options: baseline {base.engine_options!r}, candidate {cand.engine_options!r}")
    extra = [s.name for s in cand.settings if s not in base.settings]
    if extra:
        diffs.append(f"grid: settings {extra} are not in the baseline (baseline has {[s.name for s in base.settings]})")
    return diffs


def caption_difference(baseline: Baseline, config: SweepConfig, n: int) -> str | None:
    """Why the captions of `config` differ from the baseline's first n, or None."""
    try:
        captions = load_captions(config)
    except MissingComponentError as e:
        return f"captions: cannot load the candidate config's captions: {e}"
    for i in range(n):
        if i >= len(captions) or captions[i] != baseline.captions[i]:
            other = captions[i] if i < len(captions) else "<none>"
            return (
                f"captions: sample {i} is {other!r} under the candidate config but "
                f"{baseline.captions[i]!r} in the baseline"
            )
    return None


def suspicious_unused(unused: list[str], candidate_dir: Path, baseline_dir: str, used: set[str]) -> list[str]:
    """Unused files of the candidate folder that suggest the engine ignored the folder: a file of
    another name than the released ones (`RELEASED_NAMES`), or one whose namesake in the
    baseline's checkpoint folder was loaded instead."""
    base = Path(baseline_dir) if baseline_dir else None
    out = []
    for name in unused:
        namesake = base / name if base is not None else None
        loaded_namesake = namesake is not None and namesake.is_file() and cached_sha256(namesake) in used
        if name not in RELEASED_NAMES or loaded_namesake:
            out.append(name)
    return out


def check_files(base_files: dict, cand_files: dict, candidate_dir: Path, baseline_dir: str) -> None:
    """Refuse when the candidate run would not use the candidate folder (an engine that ignores
    [models.checkpoints] would compare the baseline with itself and pass), or when provenance
    files other than checkpoints from that folder differ (e.g. the feature extractor: the
    baseline's features would not be comparable). Files are compared by content (sha256): the
    baseline's own files copied to another folder are a valid candidate, and so is a folder
    also holding released files the run does not load (upsample.pt for a 64px run). Files the
    candidate run does not load at all (the noised CLIP of a --config without CLIP settings)
    are not compared."""
    candidate_dir = Path(candidate_dir).resolve()
    in_folder = {cached_sha256(p): p.name for p in sorted(candidate_dir.iterdir()) if p.is_file()}
    used = set(cand_files.values())
    ignores = "does the engine read [models.checkpoints]?"
    if not used & set(in_folder):
        raise RegressError(
            f"the engine loads none of the files in the candidate folder {candidate_dir} (its provenance: "
            f"{', '.join(f'{k}={v[:12]}' for k, v in sorted(cand_files.items())) or 'no files'}); {ignores}"
        )
    unused = sorted(name for sha, name in in_folder.items() if sha not in used)
    same_folder = baseline_dir and Path(baseline_dir).resolve() == candidate_dir
    suspicious = suspicious_unused(unused, candidate_dir, baseline_dir, used)
    if all(base_files.get(k) == v for k, v in cand_files.items()) and suspicious and not same_folder:
        raise RegressError(
            f"the candidate run would load exactly the baseline's files, although {candidate_dir} holds "
            f"other files ({', '.join(suspicious)}); {ignores}"
        )
    differing = sorted(k for k in cand_files if base_files.get(k) != cand_files[k])
    diffs = [
        f"{label}: baseline sha256 {base_files.get(label)}, candidate {cand_files.get(label)}"
        for label in differing
        if cand_files.get(label) not in in_folder
    ]
    if diffs:
        raise RegressError(
            "the candidate run would use other evaluation files than the baseline "
            "(features not comparable):\n  " + "\n  ".join(diffs)
        )

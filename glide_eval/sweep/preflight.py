"""Pre-flight: open every file a sweep config names before the first sample is drawn.

`glide-eval sweep CONFIG --check` runs it alone; every sweep runs it before sampling. It
checks, and reports every problem at once (one line per file or key):

- the output folder can be created and written;
- each GLIDE checkpoint the sweep loads: memory-mapped (nothing is copied into memory) and
  its keys and shapes compared with the official model built on the meta device, its sha256
  computed (recorded in the run's provenance);
- the feature extractors' weight files (Inception, CLIP) load, and the toy / python: engine
  builds;
- the captions load ([captions.n] of them);
- the reference statistics are loaded, or built now (for MS-COCO: every reference image
  decoded; unreadable images are listed by name).

`--dry-run` checks none of this: it only prints the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from glide_eval.sweep.captions import load_captions
from glide_eval.sweep.components import Components, needs_reference
from glide_eval.sweep.config import SweepConfig
from glide_eval.sweep.engines import build_components, glide_checkpoints
from glide_eval.sweep.errors import MissingComponentError, SweepError
from samplers.checkpoints import CheckpointMismatchError, CheckpointReadError, check_checkpoint_file
from samplers.model_configs import OFFICIAL_FILES
from storage import unwritable_folder


@dataclass(frozen=True)
class Problem:
    where: str  # the file or config key ("": the message names it)
    what: str


class PreflightError(SweepError):
    """One or more of the config's files cannot be used; the message lists each one."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p.where}: {p.what}" if p.where else f"  - {p.what}" for p in problems)
        super().__init__(
            f"{len(problems)} problem{'s' if len(problems) > 1 else ''} with the files this sweep uses "
            f"(found before sampling; nothing was sampled):\n{lines}"
        )


@dataclass
class Ready:
    """What the pre-flight opened, for the sweep to use."""

    components: Components
    captions: list[str]
    checkpoints: dict[str, str]  # label -> sha256 of the GLIDE checkpoints checked


def output_problems(path: Path) -> list[Problem]:
    """[] when `path` is (or can be made) a folder this process can write files in."""
    problem = unwritable_folder(path)
    return [Problem("[run.output_dir]", problem)] if problem else []


def checkpoint_problems(config: SweepConfig) -> tuple[dict[str, str], list[Problem]]:
    """({label: sha256}, problems) of the GLIDE checkpoints the sweep will load (glide engine)."""
    folder = config.models.checkpoints
    if config.models.engine != "glide" or not folder:
        return {}, []  # no checkpoints, or the engine reports the unset folder itself
    hashes, problems = {}, []
    for label, name in glide_checkpoints(config).items():
        path = Path(folder) / OFFICIAL_FILES[name]
        if not path.is_file():
            continue  # listed by the engine with the other missing files
        try:
            hashes[label] = check_checkpoint_file(name, path)
        except (CheckpointMismatchError, CheckpointReadError) as e:
            problems.append(Problem(str(path), str(e).removeprefix(f"{path}: ").removeprefix(f"{path} ")))
        except OSError as e:
            problems.append(Problem(str(path), f"cannot read it ({e.strerror or e})"))
    return hashes, problems


def _lines(error: Exception) -> list[Problem]:
    """One problem per line of an error's message; a heading line ("N unreadable images:") is
    put in front of each line below it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return [Problem("", f"{lines[0]} {line}") for line in lines[1:]]
    return [Problem("", line) for line in lines]


def preflight(config: SweepConfig, device: str, *, reference: bool = True) -> Ready:
    """Open every file the config names (see the module docstring); PreflightError listing every
    problem. `reference=False` skips the reference statistics (ranks other than 0)."""
    problems = output_problems(config.output_dir)
    checkpoints, found = checkpoint_problems(config)
    problems += found
    components = captions = None
    try:
        components = build_components(config, device)
    except MissingComponentError as e:
        problems += _lines(e)
    try:
        captions = load_captions(config)
        if len(captions) != config.captions.n:
            problems.append(
                Problem("[captions.n]", f"the caption source gave {len(captions)} captions, not {config.captions.n}")
            )
    except MissingComponentError as e:
        problems += _lines(e)
    if reference and components is not None and components.reference is not None and needs_reference(config):
        try:
            components.reference()
        except MissingComponentError as e:
            problems += _lines(e)
    if problems:
        raise PreflightError(problems)
    return Ready(components, captions, checkpoints)

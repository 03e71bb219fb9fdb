"""`glide-eval sweep CONFIG` (see `glide_eval.sweep`)."""

from __future__ import annotations

import click

from glide_eval.cli import echo_json
from glide_eval.sweep.components import resolve_device
from glide_eval.sweep.config import ConfigError, load_config, resolve_path
from glide_eval.sweep.describe import describe_plan, format_plan
from glide_eval.sweep.errors import MissingComponentError, SweepError
from glide_eval.sweep.preflight import preflight
from glide_eval.sweep.run import run_sweep
from reports.build import build_report
from samplers.checkpoints import CheckpointMismatchError, CheckpointReadError
from storage import DamagedFile

# flag -> (section, key) it overrides; relative paths are taken from the current directory
PATH_FLAGS = {
    "output_dir": ("run", "output_dir"),
    "checkpoints": ("models", "checkpoints"),
    "coco": ("captions", "path"),
    "inception_weights": ("weights", "inception"),
    "clip_weights": ("weights", "clip"),
}
USER_ERRORS = (
    ConfigError,
    SweepError,
    DamagedFile,
    MissingComponentError,
    CheckpointMismatchError,
    CheckpointReadError,
)


def path_overrides(values: dict) -> dict:
    """{section: {key: absolute path}} of the path flags given."""
    out: dict = {}
    for flag, (section, key) in PATH_FLAGS.items():
        if values.get(flag):
            out.setdefault(section, {})[key] = resolve_path(values[flag])
    return out


def os_error_message(e: OSError) -> str:
    """One paragraph for a file-system error (permissions, a file where a folder should be, a full disk)."""
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e} -- check that the path exists, is a folder where one is needed, and is writable"


@click.command("sweep")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--output-dir", type=click.Path(file_okay=False), help="Override [run.output_dir].")
@click.option("--checkpoints", type=click.Path(file_okay=False), help="Override [models.checkpoints].")
@click.option("--coco", type=click.Path(file_okay=False), help="Override [captions.path] (the MS-COCO folder).")
@click.option("--inception-weights", type=click.Path(dir_okay=False), help="Override [weights.inception].")
@click.option("--clip-weights", type=click.Path(dir_okay=False), help="Override [weights.clip].")
@click.option(
    "--allow-unknown-inception",
    is_flag=True,
    help="Use an Inception weights file that is not torch-fidelity's (sets [weights] allow_unknown_inception).",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the plan (settings, shards, model evaluations) and stop; opens no file."
)
@click.option(
    "--check",
    is_flag=True,
    help="Open every file the config names (checkpoints, weights, captions, MS-COCO images, reference "
    "statistics), report every problem, and stop. Every sweep does this before sampling.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Run even if RUN_DIR was made with another config: shards still valid under the new "
    "config are kept, the others redone, and the metrics recomputed.",
)
@click.option(
    "--save-images",
    type=click.Choice(["none", "png", "npz"]),
    default=None,
    help="Also keep every generated image (default: [run.save_images]).",
)
@click.option(
    "--report", "make_report", is_flag=True, help="Then build the reports (Figure 6, Table 2, HTML) in RUN_DIR/report."
)
@click.option(
    "--wait",
    is_flag=True,
    help="If another process holds RUN_DIR's lock, wait for it instead of stopping (and then resume).",
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def sweep_command(
    config_path,
    output_dir,
    checkpoints,
    coco,
    inception_weights,
    clip_weights,
    allow_unknown_inception,
    dry_run,
    check,
    force,
    save_images,
    make_report,
    wait,
    no_progress,
    as_json,
):
    """Sample every guidance setting of CONFIG, measure it, and write results.parquet.

    Rerunning resumes: finished shards are verified and skipped, and missing or damaged
    results are rebuilt from them. One process at a time writes a run directory (a second
    one stops, naming the first, or waits with --wait). Under
    `torchrun --nproc-per-node N -m glide_eval sweep CONFIG` shards are spread over ranks.
    """
    flags = dict(
        output_dir=output_dir,
        checkpoints=checkpoints,
        coco=coco,
        inception_weights=inception_weights,
        clip_weights=clip_weights,
    )
    try:
        overrides = path_overrides(flags)
        if allow_unknown_inception:
            overrides.setdefault("weights", {})["allow_unknown_inception"] = True
        config = load_config(config_path, overrides)
        if dry_run:
            plan = describe_plan(config, config.output_dir)
            echo_json(plan) if as_json else click.echo(format_plan(plan))
            return
        if check:
            ready = preflight(config, resolve_device(config))
            summary = {"ok": True, "checkpoints": ready.checkpoints, "provenance": ready.components.provenance}
            echo_json(summary) if as_json else click.echo(f"{config_path}: every file opened without a problem")
            return

        def report(summary: dict) -> None:  # on rank 0, still holding the run directory's lock
            summary["report"] = str(build_report(config.output_dir)["html"])

        summary = run_sweep(
            config,
            force=force,
            save_images=save_images,
            progress=not no_progress,
            log=lambda msg: click.echo(msg, err=True),
            wait=wait,
            after_merge=report if make_report else None,
        )
    except USER_ERRORS as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(os_error_message(e)) from None
    if as_json:
        echo_json(summary)
    else:
        for key in ("results", "report"):
            if key in summary:
                click.echo(f"{key}: {summary[key]}")

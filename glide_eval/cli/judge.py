"""`glide-eval judge RUN_DIR ... --out judgments.csv`: a local web page where raters compare
two settings' images of one caption; every answer goes straight into the CSV that
`glide-eval elo` reads (see docs/judgments.md, "Judging session")."""

from __future__ import annotations

import click

from glide_eval.judge.images import JudgeImagesError, build_catalog
from human_eval.judge.app import QUESTIONS, JudgeApp, run_server
from human_eval.judge.store import JudgmentStore, StoreError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise click.BadParameter("give at least one name")
    return names


@click.command("judge")
@click.argument(
    "run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False)
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Judgments CSV: created, or appended to when it exists (a restarted session).",
)
@click.option(
    "--questions",
    default="photorealism,caption",
    show_default=True,
    help="Comma-separated questions to ask: photorealism, caption.",
)
@click.option(
    "--settings",
    default=None,
    help="Comma-separated settings to judge (setting or model names, e.g. cfg-3 or cfg:3; default: all "
    "with saved images).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option(
    "--adaptive",
    is_flag=True,
    help="Choose the next pair to shrink the widest Elo interval (default: balanced over pairs).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the pair, prompt and side choice.")
@click.option(
    "--target",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Judgments the progress bar counts up to.",
)
def judge_command(run_dirs, out_path, questions, settings, host, port, adaptive, seed, target):
    """Serve a judging page for the images sweeps saved in RUN_DIR(s) (`--save-images png|npz`).

    A rater compares two settings' images of the same caption and seed (GLIDE appendix A.1:
    photorealism and caption similarity, ties allowed). Every answer is appended to --out at
    once (fsynced); fit it with `glide-eval elo OUT`."""
    asked = list(dict.fromkeys(_names(questions)))
    unknown = [q for q in asked if q not in QUESTIONS]
    if unknown:
        raise click.BadParameter(
            f"unknown {', '.join(unknown)}; known: {', '.join(QUESTIONS)}", param_hint="--questions"
        )
    try:
        catalog = build_catalog(list(run_dirs), _names(settings))
        store = JudgmentStore(out_path)
    except (JudgeImagesError, StoreError) as e:
        raise click.ClickException(str(e)) from None
    with store:
        session = JudgeApp(catalog, store, asked, adaptive=adaptive, seed=seed, target=target)
        if store.repaired_bytes:
            click.echo(
                f"{out_path}: removed an unfinished last record ({store.repaired_bytes} bytes) left by a killed server",
                err=True,
            )
        pairs = len(session.scheduler.pairs)
        click.echo(
            f"judging {len(catalog.models)} settings ({', '.join(catalog.models)}), {pairs} pairs, "
            f"{len(catalog.captions)} captions; {len(store)} judgments already in {out_path}",
            err=True,
        )
        if host not in LOCAL_HOSTS:
            click.echo(f"warning: listening on {host}: anyone who can reach it can submit judgments", err=True)
        click.echo(f"open http://{host}:{port}/  (Elo table: /elo; Ctrl-C stops)", err=True)
        run_server(session, host, port)

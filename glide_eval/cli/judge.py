"""`glide-eval judge RUN_DIR ... --out judgments.csv`: a web page where raters compare two
settings' images of one caption, blind; every answer goes straight into the CSV that
`glide-eval elo` reads (see README "Judging" and docs/judgments.md, "Judging session")."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
from pathlib import Path

import click
from tqdm import tqdm

from glide_eval.cli.options import out_file_option
from glide_eval.judge.images import JudgeImagesError, build_catalog
from human_eval.judge.access import ADMIN, Access, AccessError
from human_eval.judge.app import QUESTIONS, JudgeApp, bind, run_server
from human_eval.judge.store import JudgmentStore, StoreError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
ANY = ("0.0.0.0", "::")
SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise click.BadParameter("give at least one name")
    return names


def _raters(text: str | None) -> list[str] | None:
    """Names from ``--raters``: a comma-separated list, or a file with one name a line (# comments)."""
    if text is None:
        return None
    if os.path.isfile(text):
        try:
            lines = Path(text).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise click.BadParameter(f"{text}: cannot read: {e}", param_hint="--raters") from None
        names = [line.split("#")[0].strip() for line in lines]
        return [n for n in names if n] or _names("")
    return _names(text)


def machine_addresses() -> list[str]:
    """The machine's own non-loopback addresses (IPv4 of every interface, then those its name resolves to)."""
    found = []
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue
            found.append(socket.inet_ntoa(packed[20:24]))
    try:
        found += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM)]
    except OSError:
        pass
    out = []
    for address in found:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified) and str(ip) not in out:
            out.append(str(ip))
    return out


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def served_hosts(host: str, port: int) -> tuple[list[str], list[str]]:
    """(Host header values the server accepts, base URLs to print first-best)."""
    if host in ANY:
        addresses = machine_addresses()
        hosts = [_host_port(a, port) for a in addresses]
        hosts += [f"{socket.gethostname()}:{port}"] + [_host_port(a, port) for a in LOOPBACK]
        return hosts, [f"http://{h}" for h in hosts[: len(addresses)] or hosts]
    if host in LOOPBACK:
        hosts = [_host_port(a, port) for a in LOOPBACK]
        first = _host_port(host, port)
        return hosts, [f"http://{first}"]
    return [_host_port(host, port)], [f"http://{_host_port(host, port)}"]


def _check_out(out_path: str, run_dirs: list[str]) -> None:
    out = os.path.realpath(out_path)
    for run in run_dirs:
        root = os.path.realpath(run)
        if os.path.commonpath([root, out]) == root:
            raise click.BadParameter(
                f"{out_path} is inside the run directory {run}; write the judgments (and the session's "
                "secrets beside them) elsewhere",
                param_hint="--out",
            )


def _share_of_trials_option(flag: str, what: str):
    """A quality-control rate: the share of trials (0 to 0.5, default 0) that `what`."""
    return click.option(
        flag, type=click.FloatRange(0, 0.5), default=0.0, show_default=True, help=f"Share of trials that {what}"
    )


@click.command("judge")
@click.argument(
    "run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False)
)
@out_file_option("Judgments CSV: created, or appended to when it exists (a restarted session).")
@click.option(
    "--raters",
    default=None,
    help="Rater names, comma-separated, or a file with one name a line: one private link each "
    "(default: one rater named 'local'; required with a non-loopback --host).",
)
@click.option("--new-links", is_flag=True, help="Replace every link (old rater and admin links stop working).")
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
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: every address of this machine, for raters on the LAN).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: a free port.")
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
    help="Answers per rater the progress bar counts up to.",
)
@_share_of_trials_option("--attention-rate", "show one image on both sides (the right answer is a tie).")
@_share_of_trials_option("--repeat-rate", "repeat one of the rater's earlier pairs, sides swapped.")
def judge_command(
    run_dirs,
    out_path,
    raters,
    new_links,
    questions,
    settings,
    host,
    port,
    adaptive,
    seed,
    target,
    attention_rate,
    repeat_rate,
):
    """Serve a blind judging page for the images sweeps saved in RUN_DIR(s) (`--save-images png|npz`).

    A rater compares two settings' images of the same caption and seed (GLIDE appendix A.1:
    photorealism and caption similarity, ties allowed) without learning which settings they are.
    Each rater gets a private link; the admin link shows progress, rater statistics and Elo.
    Every answer is appended to --out at once (fsynced); fit it with `glide-eval elo OUT`."""
    asked = list(dict.fromkeys(_names(questions)))
    unknown = [q for q in asked if q not in QUESTIONS]
    if unknown:
        raise click.BadParameter(
            f"unknown {', '.join(unknown)}; known: {', '.join(QUESTIONS)}", param_hint="--questions"
        )
    names = _raters(raters)
    if names is None:
        if host not in LOOPBACK:
            raise click.BadParameter(
                f"listening on {host} needs --raters (one private link per rater)", param_hint="--raters"
            )
        names = ["local"]
    _check_out(out_path, list(run_dirs))
    try:
        catalog = build_catalog(list(run_dirs), _names(settings))
        store = JudgmentStore(out_path)
    except (JudgeImagesError, StoreError) as e:
        raise click.ClickException(str(e)) from None
    with store:
        try:
            access = Access.open(f"{out_path}.raters.json", names, new_links)
            sock = bind(host, port)
        except (AccessError, OSError) as e:
            raise click.ClickException(str(e)) from None
        port = sock.getsockname()[1]
        hosts, bases = served_hosts(host, port)

        def progress(items):
            return tqdm(items, desc="checking images", unit="image", leave=False)

        try:
            session = JudgeApp(
                catalog,
                store,
                asked,
                access,
                hosts,
                adaptive=adaptive,
                seed=seed,
                target=target,
                attention_rate=attention_rate,
                repeat_rate=repeat_rate,
                progress=progress,
            )
        except (ValueError, StoreError) as e:
            raise click.ClickException(str(e)) from None
        with session:
            _announce(session, store, out_path, access, bases, host)
            run_server(session, sock)


def _announce(session, store, out_path, access, bases, host) -> None:
    catalog = session.catalog
    if store.repaired_bytes:
        click.echo(
            f"{out_path}: removed an unfinished last record ({store.repaired_bytes} bytes) left by a killed server",
            err=True,
        )
    for message in session.refused:
        click.echo(f"left out: {message}", err=True)
    if session.refused:
        click.echo(f"{len(session.refused)} image(s) left out before the first trial (see above)", err=True)
    click.echo(
        f"judging {len(catalog.models)} settings ({', '.join(catalog.models)}), {len(session.scheduler.pairs)} "
        f"pairs, {len(catalog.captions)} captions; {len(store)} judgments already in {out_path}",
        err=True,
    )
    if host not in LOOPBACK:
        click.echo(f"listening on {host}: reachable as {', '.join(bases)}", err=True)
    base = bases[0]
    for name in access.raters:
        if name in access.issued:
            click.echo(f"rater {name}: {base}/r/{access.issued[name]}")
        else:
            click.echo(f"rater {name}: link issued before (lost it? restart with --new-links)")
    if ADMIN in access.issued:
        click.echo(f"admin (progress, rater statistics, Elo; keep it to yourself): {base}/admin/{access.issued[ADMIN]}")
    else:
        click.echo("admin: link issued before (lost it? restart with --new-links)")
    click.echo("send each rater their own link; Ctrl-C stops", err=True)

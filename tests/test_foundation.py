import subprocess
import sys

from click.testing import CliRunner

import torchvision_compat as compat
from glide_eval.cli import main


def test_torch_fidelity_and_open_clip_import():
    import open_clip
    import torch_fidelity

    assert hasattr(torch_fidelity, "calculate_metrics")
    assert "ViT-B-16" in open_clip.list_models()


def test_compat_is_a_noop_once_torchvision_loads():
    import torchvision

    before = compat._library
    compat.ensure_torchvision()  # torchvision is importable now: nothing may change
    assert compat._library is before
    assert sys.modules["torchvision"] is torchvision


def test_compat_reraises_other_errors(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def failing(name, *args, **kwargs):
        if name == "torchvision":
            raise RuntimeError("something else entirely")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing)
    try:
        compat.ensure_torchvision()
    except RuntimeError as error:
        assert "something else" in str(error)
    else:
        raise AssertionError("an unrelated torchvision error was swallowed")


def test_cli_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "glide-eval" in result.output or "Usage" in result.output


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "glide_eval", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout


def test_cli_help_lists_each_commands_own_help_without_importing_it():
    """`glide-eval --help` lists the one-line help of every command from `COMMANDS`, equal to what
    the command itself says (at any width), and imports none of the command modules (nor torch)."""
    import click

    from glide_eval.cli import COMMANDS

    for name in COMMANDS:
        command = main.get_command(None, name)
        for limit in (30, 45, 80, 10_000):
            listed = click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit)
            assert listed == command.get_short_help_str(limit), name
    code = (
        "import sys; from click.testing import CliRunner; from glide_eval.cli import main; "
        "out = CliRunner().invoke(main, ['--help']).output; "
        "print(sorted(m for m in sys.modules if m.startswith('glide_eval.cli.') or m == 'torch')); "
        "print(all(n in out for n in " + repr(sorted(COMMANDS)) + "))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "True"]

import subprocess
import sys

from click.testing import CliRunner

from glide_eval import compat
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

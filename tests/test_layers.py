"""The layering of issue 17, measured from the code's own imports and definitions (tools/layers.py),
checked against a small project built here with known circles, upward and function-level imports."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("layers_tool", ROOT / "tools" / "layers.py")
layers = importlib.util.module_from_spec(_spec)
sys.modules["layers_tool"] = layers  # dataclasses look their module up
_spec.loader.exec_module(layers)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_tool_finds_known_circles_upward_and_function_level_imports(tmp_path):
    """A made-up tree with one circle (a <-> b, one edge inside a function), one library module
    importing glide_eval, one domain module importing the CLI, and a 90-line function."""
    body = "\n".join(f"    x{i} = {i}" for i in range(88))
    _write(
        tmp_path,
        {
            "glide_eval/__init__.py": "",
            "glide_eval/a.py": "from glide_eval import b\n",
            "glide_eval/b.py": "def f():\n    from glide_eval.a import thing\n    return thing\n",
            "glide_eval/c.py": "from glide_eval.cli import echo\n",
            "glide_eval/cli/__init__.py": "import glide_eval.a\n",
            "glide_eval/long.py": f"def long():\n{body}\n    return 0\n",
            "metrics/__init__.py": "",
            "metrics/x.py": "import glide_eval.a\nfrom metrics import y\n",
            "metrics/y.py": "",
            "reports/__init__.py": "",
            "samplers/__init__.py": "",
            "human_eval/__init__.py": "",
            "torchvision_compat/__init__.py": "",
        },
    )
    m = layers.measure(tmp_path)
    assert m["circles"] == [["glide_eval.a", "glide_eval.b"]]
    assert sorted(u.split(":")[0] for u in m["upward_imports"]) == ["glide_eval.c", "metrics.x"]
    assert m["function_level_imports"] == ["glide_eval.b:2 -> glide_eval.a"]
    assert m["modules_in_glide_eval"] == ["__init__.py", "a.py", "b.py", "c.py", "long.py"]
    assert m["longest_glide_eval_function_lines"] == 90


def test_the_layers_are_the_import_linter_contract(tmp_path):
    """tools/layers.py reads the layers from pyproject.toml's import-linter contract, not its own list:
    a contract written here decides what counts as upward (and `a | b` siblings may not import each other)."""
    project = layers.contract_layers()
    assert set(project) == {
        "glide_eval",
        "reports",
        "human_eval",
        "metrics",
        "samplers",
        "storage",
        "torchvision_compat",
    }
    assert project["glide_eval"][0] > project["reports"][0] > project["metrics"][0] > project["samplers"][0]
    assert project["samplers"][0] > project["storage"][0] == project["torchvision_compat"][0]
    assert project["metrics"] == project["human_eval"] == (project["metrics"][0], True)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[[tool.importlinter.contracts]]\nname = "inside"\ntype = "layers"\ncontainers = ["x"]\nlayers = ["a", "b"]\n'
        '[[tool.importlinter.contracts]]\nname = "top"\ntype = "layers"\nlayers = ["top", "left | right", "base"]\n'
    )
    assert layers.contract_layers(pyproject) == {
        "top": (2, False),
        "left": (1, True),
        "right": (1, True),
        "base": (0, False),
    }
    upward = layers.Import("samplers.x", "metrics.y", 1, False)
    sibling = layers.Import("metrics.x", "human_eval.y", 1, False)
    down = layers.Import("metrics.x", "storage.files", 1, False)
    assert layers.is_upward(upward) and layers.is_upward(sibling) and not layers.is_upward(down)


def test_the_project_keeps_its_layers():
    """Issue 17's limits: no circles, no upward imports, <= 15 function-level imports of project
    modules, <= 8 modules directly in glide_eval/, no glide_eval function over 80 lines."""
    m = layers.measure(ROOT)
    assert m["circles"] == []
    assert m["upward_imports"] == []
    assert len(m["function_level_imports"]) <= 15, m["function_level_imports"]
    assert len(m["modules_in_glide_eval"]) <= 8, m["modules_in_glide_eval"]
    assert m["longest_glide_eval_function_lines"] <= 80, m["longest_glide_eval_functions"]


def test_the_tool_runs_as_a_script():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "layers.py")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "import circles: 0" in out.stdout and "upward imports: 0" in out.stdout

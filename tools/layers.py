"""Measure the layering of the project from its own imports and definitions (issue 17).

    python tools/layers.py [--json]

Prints: import circles among project modules, upward imports (a package importing one of a
higher layer), function-level imports of project modules, modules directly in glide_eval/,
and the longest function in glide_eval. tests/test_layers.py asserts the limits.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = "glide_eval.cli"  # the top of glide_eval: nothing else in glide_eval imports it


def contract_layers(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, tuple[int, bool]]:
    """Top-level package -> (layer, independent) from the import-linter layers contract over the top-level
    packages in pyproject.toml (the one source of truth): higher layers may import lower ones, never the other
    way; packages of one layer written ``a | b`` are independent (neither imports the other)."""
    config = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers" and "containers" not in c)
    out = {}
    for rank, layer in enumerate(reversed(contract["layers"])):
        independent = "|" in layer
        for package in layer.replace(":", "|").split("|"):
            out[package.strip()] = (rank, independent)
    return out


LAYERS = contract_layers()


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    function_level: bool


def module_files(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest project module that `name` (a dotted import target) starts with."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    out: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(child, module, path.name == "__init__.py"):
                    imported = _resolve(target, modules)
                    if imported is not None and imported != module:
                        out.append(Import(module, imported, child.lineno, in_function))
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, nested)

    visit(tree, False)
    return out


def circles(edges: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, set()).add(e.imported)
        graph.setdefault(e.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def is_upward(e: Import) -> bool:
    """An import of a higher layer, of an independent sibling package, or of the CLI from outside it."""
    importer, imported = e.importer.split(".")[0], e.imported.split(".")[0]
    (low, independent), (high, _) = LAYERS[importer], LAYERS[imported]
    if low < high or (low == high and importer != imported and independent):
        return True
    in_cli = e.importer == CLI or e.importer.startswith(CLI + ".")
    return (
        not in_cli and e.importer != "glide_eval.__main__" and (e.imported == CLI or e.imported.startswith(CLI + "."))
    )


def longest_functions(package: str = "glide_eval", root: Path = ROOT, top: int = 5) -> list[tuple[int, str]]:
    """(lines from `def` to the last line, qualified name) of the longest functions."""
    found = []
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{path.relative_to(root)}:{node.lineno} {node.name}"
                found.append((node.end_lineno - node.lineno + 1, name))
    return sorted(found, reverse=True)[:top]


def measure(root: Path = ROOT) -> dict:
    modules = module_files(root)
    edges = [e for m, p in modules.items() for e in imports_of(m, p, modules)]
    # one per import statement (`from x import a, b` of two modules counts once)
    function_level = list({(e.importer, e.line): e for e in edges if e.function_level}.values())
    longest = longest_functions(root=root)
    return {
        "circles": circles(edges),
        "upward_imports": [f"{e.importer}:{e.line} -> {e.imported}" for e in edges if is_upward(e)],
        "function_level_imports": [f"{e.importer}:{e.line} -> {e.imported}" for e in function_level],
        "modules_in_glide_eval": sorted(p.name for p in (root / "glide_eval").glob("*.py")),
        "longest_glide_eval_functions": [f"{n} lines: {name}" for n, name in longest],
        "longest_glide_eval_function_lines": longest[0][0] if longest else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    m = measure(args.root)
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"import circles: {len(m['circles'])}")
    for c in m["circles"]:
        print("  " + " <-> ".join(c))
    print(f"upward imports: {len(m['upward_imports'])}")
    for u in m["upward_imports"]:
        print("  " + u)
    print(f"function-level imports of project modules: {len(m['function_level_imports'])}")
    for f in m["function_level_imports"]:
        print("  " + f)
    modules = m["modules_in_glide_eval"]
    print(f"modules directly in glide_eval/: {len(modules)} ({', '.join(modules)})")
    print(f"longest glide_eval function: {m['longest_glide_eval_function_lines']} lines")
    for f in m["longest_glide_eval_functions"]:
        print("  " + f)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The import rules of ARCHITECTURE.md: no package imports one above it, checkpoint/ and formats/ never import
each other (function-level imports included)."""
from __future__ import annotations

import ast
from pathlib import Path

import marlin_convert

ROOT = Path(marlin_convert.__file__).parent
FLOOR = {"_version", "_lazy", "errors", "dtypes", "tensor_spec", "stage_timers", "_malloc", "_gc", "gemm_backends"}
ROOM_OF = {**{m: "floor" for m in FLOOR}, "cli_render": "cli", "_transformers_hook": "runtime"}
MAY_IMPORT = {
    "floor": set(),
    "layout": {"floor"},
    "formats": {"floor", "layout"},
    "checkpoint": {"floor"},
    "runtime": {"floor", "layout", "formats", "checkpoint"},
    "pipeline": {"floor", "layout", "formats", "checkpoint", "runtime"},
    "cli": {"floor", "pipeline", "checkpoint"},
}


def _room(parts: list[str]) -> str:
    return ROOM_OF.get(parts[0], parts[0])


def _imports(path: Path) -> list[tuple[int, list[str]]]:
    """(line, module path inside marlin_convert) of every import of the package from `path`."""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                found.append((node.lineno, base + node.module.split(".")))
            else:
                found += [(node.lineno, base + [a.name]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("marlin_convert."):
            found.append((node.lineno, node.module.split(".")[1:]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[1:]) for a in node.names if a.name.startswith("marlin_convert.")]
    return found


def test_no_import_goes_upward_or_across():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts in (["__init__"], ["__main__"]):
            continue  # the package root only re-exports
        me = _room(parts)
        for line, target in _imports(path):
            other = _room(target) if target else "package root"
            if other != me and other not in MAY_IMPORT[me]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {me} imports {'.'.join(target) or other}")
    assert not bad, "\n".join(bad)

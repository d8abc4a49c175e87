"""The project's import graph, read from the source (no import is executed): which module imports which."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE_ROOTS = {"botify": REPO_ROOT, "sim": REPO_ROOT, "botify_lab": REPO_ROOT / "src"}


def module_file(module: str) -> Path | None:
    """The file of a project module (package __init__ or module), or None for anything outside the project."""
    root = PACKAGE_ROOTS.get(module.split(".")[0])
    if root is None:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    for package, root in PACKAGE_ROOTS.items():
        if path.is_relative_to(root / package):
            parts = path.relative_to(root).with_suffix("").parts
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(f"{path} is not in a project package")


def imports_in_source(source: str, package: str | None = None) -> set[str]:
    """Every module named by an import statement (absolute, or relative to `package`), at any depth of the code."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def project_imports(path: Path) -> set[str]:
    """Project modules imported by one file (names that are not modules, like functions, are dropped)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return {module for module in imports_in_source(path.read_text(), package) if module_file(module)}


def notebook_imports(path: Path) -> set[str]:
    cells = json.loads(path.read_text())["cells"]
    source = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    return {module for module in imports_in_source(source) if module_file(module)}


def closure(modules: set[str]) -> set[str]:
    """The modules reachable from these, themselves included, with every parent package (imported on the way)."""
    seen: set[str] = set()
    pending = list(modules)
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]
        pending += project_imports(module_file(module))
    return seen

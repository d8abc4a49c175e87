"""The rooms of the project stay apart: research code cannot see the simulator's world or start a service.

Models may learn only from the service's log and the public catalog. The research core (`botify_lab.research`) and
the shared formats therefore import nothing from `sim` (the hidden world), `botify` (the service) or the
orchestration that starts both (`botify_lab.pipeline`, `.stages`, `.inprocess`, `.tools`); the service and the
simulator import neither each other nor the research code; the stages' shared infrastructure imports no stage.
Adding such an import fails here.
"""

from __future__ import annotations

import pytest

from tests.architecture.import_graph import PACKAGE_ROOTS, closure, module_name, project_imports

# The orchestration: what starts the service and the simulator, and what runs them.
ORCHESTRATION = ("botify_lab.pipeline", "botify_lab.stages", "botify_lab.inprocess", "botify_lab.tools")
FORBIDDEN = {
    "botify_lab.research": ("sim", "botify", *ORCHESTRATION),
    "botify_lab.formats": ("sim", "botify", "botify_lab.research", *ORCHESTRATION),
    "botify": ("sim", "botify_lab.research", *ORCHESTRATION),
    "sim": ("botify", "botify_lab.research", *ORCHESTRATION),
    # shared infrastructure never reaches up into a stage or a tool
    "botify_lab.pipeline": ("botify_lab.stages", "botify_lab.tools"),
}


def modules_under(prefix: str) -> list[str]:
    root = PACKAGE_ROOTS[prefix.split(".")[0]].joinpath(*prefix.split("."))
    files = sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]
    return [module_name(path) for path in files]


def inside(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_never_reaches_a_forbidden_one(room):
    modules = modules_under(room)
    assert modules, f"no modules found for {room}"
    reached = closure(set(modules))
    bad = sorted(module for module in reached for forbidden in FORBIDDEN[room] if inside(module, forbidden))
    assert not bad, f"{room} reaches {bad}"


def test_the_check_sees_a_forbidden_import(tmp_path, monkeypatch):
    """The graph reader itself: a research module that imports the simulator is caught."""
    from tests.architecture import import_graph

    fake_src = tmp_path / "src"
    (fake_src / "botify_lab" / "research").mkdir(parents=True)
    (fake_src / "botify_lab" / "__init__.py").write_text("")
    (fake_src / "botify_lab" / "research" / "__init__.py").write_text("")
    leaky = fake_src / "botify_lab" / "research" / "leaky.py"
    leaky.write_text("def peek():\n    from sim.world import World\n    return World\n")
    monkeypatch.setitem(import_graph.PACKAGE_ROOTS, "botify_lab", fake_src)
    assert "sim.world" in project_imports(leaky)

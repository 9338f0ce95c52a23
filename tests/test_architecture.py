"""The layout's rules, read from the code itself: arrows point down (cli -> concerns -> repository, processes,
settings, errors), concerns use each other only as the MAY_USE table says, the repository model imports nothing
else of the project, and no import cycle exists."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import paths

PACKAGES = ("tools", "dashboards")
BASE = {"tools.repository", "tools.settings", "tools.errors", "tools.processes"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(paths.PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """Project modules imported by the file (`from a import b` counts `a.b` when that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & MODULES.keys()
            # `from package import submodule` is an edge to the submodule (the package is already importing).
            found |= submodules or {node.module}
    return {name for name in found if name.split(".")[0] in PACKAGES and name in MODULES}


MODULES: dict[str, Path] = {_module_name(path): path for package in PACKAGES
                            for path in (paths.PROJECT_ROOT / package).rglob("*.py")}


def test_the_repository_model_imports_nothing_else_of_the_project():
    assert _imports(MODULES["tools.repository"], top_level_only=False) == set()


@pytest.mark.parametrize("module", sorted(BASE - {"tools.repository"}))
def test_the_base_layer_imports_only_the_base_layer(module):
    assert _imports(MODULES[module], top_level_only=False) <= BASE | {"tools"}


def test_only_the_cli_imports_the_cli_and_nothing_imports_the_tests():
    for name, path in MODULES.items():
        imported = _imports(path, top_level_only=False)
        if not name.startswith("tools.cli") and name != "tools.__main__":
            assert not {m for m in imported if m.startswith("tools.cli")}, name
        assert not any(line.lstrip().startswith(("from tests", "import tests"))
                       for line in path.read_text().splitlines()), name


def test_only_the_cli_imports_the_dashboards_which_import_their_queries_from_monitoring():
    assert "tools.monitoring.queries" in _imports(MODULES["dashboards.overview"], top_level_only=False)
    for name, path in MODULES.items():
        if name.startswith("tools.") and not name.startswith("tools.cli"):
            assert not {m for m in _imports(path, top_level_only=False) if m.startswith("dashboards")}, name


def test_no_import_cycle_at_import_time():
    graph = {name: {m for m in _imports(path, top_level_only=True) if m != name} for name, path in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


# Which concern may use which, besides the base layer: the architecture as a table. A new arrow is a decision to
# make here, in review, not a side effect of an import.
CONCERNS = ("cli", "serving", "validation", "loadtest", "bench", "monitoring", "deploy", "rollout", "tune", "gateway")
MAY_USE = {
    "serving": set(),
    "monitoring": set(),
    "validation": {"serving"},  # the --server check loads models in a real tritonserver
    "loadtest": {"serving", "monitoring"},  # clients, and Triton's view of a run
    "bench": {"serving", "loadtest"},  # clients, and the load-test corpus
    "deploy": {"validation"},  # validate before deploying
    "rollout": {"serving", "validation", "loadtest"},  # the repository API, validate and write, canary texts
    # a real server and its repository API, Prometheus, Locust, the validator before every change
    "tune": {"serving", "monitoring", "loadtest", "validation"},
    "gateway": {"serving"},  # the gRPC client, its refusals, the model-control key's header
}


def _concern(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tools" and len(parts) > 1 and parts[1] in CONCERNS else None


@pytest.mark.parametrize("concern", sorted(MAY_USE))
def test_each_concern_uses_only_the_base_layer_and_the_concerns_it_may(concern):
    used = {_concern(imported) for name, path in MODULES.items() if _concern(name) == concern
            for imported in _imports(path, top_level_only=False)} - {None, concern}
    assert used <= MAY_USE[concern], f"tools.{concern} uses {sorted(used - MAY_USE[concern])}"

"""The import graph shows the architecture (docs/development.md#layout), read from the source with `ast`:

* only the host package (nodes/host/) imports ComfyUI, and each of its modules touches ComfyUI (imports
  a ComfyUI module, or the package's `comfyui` module that holds the ComfyUI imports and the fallback);
* vace_core never imports the nodes, and the product (the pack's __init__, nodes/, vace_core/)
  never imports the test scaffolding in vace_core/testing/;
* routes on the host's server are registered only where the pack is assembled (nodes/__init__.py),
  never as a side effect of importing a node module;
* the dtype names are written in one table (vace_core/precision.py);
* the product's modules import each other without a cycle (imports inside functions count too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vace_core.precision import DTYPE_NAMES

ROOT = Path(__file__).resolve().parents[1]
# top-level modules of a ComfyUI checkout that a custom node may import
COMFYUI_MODULES = {"comfy", "comfy_api", "comfy_execution", "comfy_extras", "comfyui_version", "folder_paths",
                   "latent_preview", "node_helpers", "server", "execution"}
PRODUCT = [ROOT / "__init__.py", *sorted((ROOT / "nodes").rglob("*.py")),
           *sorted(p for p in (ROOT / "vace_core").rglob("*.py") if "testing" not in p.relative_to(ROOT).parts)]
HOST = ROOT / "nodes" / "host"
HOST_COMFYUI = "nodes.host.comfyui"  # the host package's module of ComfyUI imports and fallback


def import_statements(path: Path) -> list[tuple[str, list[str]]]:
    """Every import of `path` as (absolute dotted name of the module it names, the names it takes
    from it): `import a.b` gives ("a.b", []), `from .x import y, z` ("<package>.x", ["y", "z"])."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]  # a module's package, or an __init__'s own
    statements = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            statements.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = list(package[:len(package) - node.level + 1])
                base = ".".join(parent + ([node.module] if node.module else []))
            else:
                base = node.module
            statements.append((base, [alias.name for alias in node.names]))
    return statements


def imported_modules(path: Path) -> set[str]:
    """Absolute dotted names (from the repository root) of everything `path` imports."""
    names = set()
    for base, taken in import_statements(path):
        names.add(base)
        names.update(f"{base}.{name}" for name in taken)
    return names


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_resolver_reads_relative_and_absolute_imports():
    """Guards the checks below: a planted import of each kind is found."""
    assert "vace_core.testing.fixtures" in imported_modules(ROOT / "scripts" / "bench" / "bench_common.py")
    assert "vace_core.latents.LATENT_CHANNELS" in imported_modules(ROOT / "nodes" / "common.py")
    assert "nodes.host.comfyui.model_management" in imported_modules(ROOT / "nodes" / "host" / "memory.py")
    assert "folder_paths" in imported_modules(ROOT / "nodes" / "host" / "comfyui.py")


def comfyui_imports(path: Path) -> set[str]:
    return {name for name in imported_modules(path) if name.split(".")[0] in COMFYUI_MODULES}


@pytest.mark.parametrize("path", PRODUCT, ids=relative)
def test_only_the_host_package_imports_comfyui(path):
    if path.is_relative_to(HOST):
        return
    assert not comfyui_imports(path), f"{relative(path)} imports {sorted(comfyui_imports(path))}"


@pytest.mark.parametrize("path", sorted(HOST.glob("*.py")), ids=relative)
def test_every_module_of_the_host_package_touches_comfyui(path):
    """The host package holds only the ComfyUI adapter: what imports no ComfyUI lives with the nodes."""
    touches = comfyui_imports(path) | {n for n in imported_modules(path) if n.startswith(HOST_COMFYUI)}
    assert touches, f"{relative(path)} neither imports ComfyUI nor the host's {HOST_COMFYUI}"


def calls_to(path: Path, name: str) -> list[int]:
    """Lines of `path` that call a function or method named `name`."""
    return [node.lineno for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) == name]


def test_routes_are_registered_where_the_pack_is_assembled():
    registering = {relative(p) for p in PRODUCT if calls_to(p, "add_json_post_route")}
    assert registering == {"nodes/__init__.py"}


def test_dtype_names_are_written_in_one_table():
    """A string that is a dtype name ("bf16", "fp8_e4m3fn_fast", ...; "auto" names other choices
    too) appears only in vace_core/precision.py; everything else reads its table."""
    precision = ROOT / "vace_core" / "precision.py"
    names = set(DTYPE_NAMES) - {"auto"}
    found = {f"{relative(p)}:{node.lineno}": node.value for p in PRODUCT if p != precision
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names}
    assert not found


@pytest.mark.parametrize("path", PRODUCT, ids=relative)
def test_the_product_never_imports_the_test_scaffolding(path):
    names = imported_modules(path)
    assert not [n for n in names if n.startswith("vace_core.testing")], relative(path)
    if path.is_relative_to(ROOT / "vace_core"):
        assert not [n for n in names if n.split(".")[0] == "nodes"], f"{relative(path)} imports the nodes"


def test_comfyui_is_imported_in_the_host_package():
    """The check above is not vacuous: the host package does import ComfyUI."""
    host = [p for p in PRODUCT if p.is_relative_to(HOST)]
    assert any(comfyui_imports(p) for p in host)


def module_name(path: Path) -> str:
    """"vace_core.plan" for vace_core/plan.py, "nodes.host" for nodes/host/__init__.py."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(paths: list[Path]) -> dict[str, set[str]]:
    """Each module of `paths` -> the modules of `paths` it imports: `from pkg import module` is an
    edge to the module (the package runs first, as the parent of every module, and is no edge);
    `from pkg import name` to the package."""
    modules = {module_name(p): p for p in paths}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for base, taken in import_statements(path):
            submodules = {f"{base}.{t}" for t in taken if f"{base}.{t}" in modules}
            targets |= submodules
            if len(submodules) < len(taken) or not taken:
                targets.add(base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once all it reaches is searched
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    """Guards the check below: a cycle through three modules is found, a diamond is not one."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None


def test_the_product_imports_without_a_cycle():
    graph = import_graph(PRODUCT)
    assert graph["vace_core.sampler"] >= {"vace_core.plan", "vace_core.passes"}  # the graph is read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)

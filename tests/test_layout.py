"""The import graph shows the architecture (DESIGN.md §2), read from the source with `ast`:

* only the host package (nodes/host/) imports ComfyUI, and each of its modules touches ComfyUI (imports
  a ComfyUI module, or the package's `comfyui` module that holds the ComfyUI imports and the fallback);
* vace_core never imports the nodes, and the product (the pack's __init__, nodes/, vace_core/)
  never imports the test scaffolding in vace_core/testing/;
* routes on the host's server are registered only where the pack is assembled (nodes/__init__.py),
  never as a side effect of importing a node module;
* the dtype names are written in one table (vace_core/precision.py).
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


def imported_modules(path: Path) -> set[str]:
    """Absolute dotted names (from the repository root) of everything `path` imports."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]  # a module's package, or an __init__'s own
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = list(package[:len(package) - node.level + 1])
                base = ".".join(parent + ([node.module] if node.module else []))
            else:
                base = node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_resolver_reads_relative_and_absolute_imports():
    """Guards the checks below: a planted import of each kind is found."""
    assert "vace_core.testing.fixtures" in imported_modules(ROOT / "scripts" / "bench_lowvram.py")
    assert "vace_core.encoding.LATENT_CHANNELS" in imported_modules(ROOT / "nodes" / "common.py")
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

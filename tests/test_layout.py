"""The import graph shows the architecture (DESIGN.md §2), read from the source with `ast`:

* only the host package (nodes/host/) imports ComfyUI;
* vace_core never imports the nodes, and the product (the pack's __init__, nodes/, vace_core/)
  never imports the test scaffolding in vace_core/testing/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# top-level modules of a ComfyUI checkout that a custom node may import
COMFYUI_MODULES = {"comfy", "comfy_api", "comfy_execution", "comfy_extras", "comfyui_version", "folder_paths",
                   "latent_preview", "node_helpers", "server", "execution"}
PRODUCT = [ROOT / "__init__.py", *sorted((ROOT / "nodes").rglob("*.py")),
           *sorted(p for p in (ROOT / "vace_core").rglob("*.py") if "testing" not in p.relative_to(ROOT).parts)]


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
    assert "vace_core.testing.fixtures" in imported_modules(ROOT / "scripts" / "bench" / "bench_common.py")
    assert "vace_core.encoding.LATENT_CHANNELS" in imported_modules(ROOT / "nodes" / "common.py")
    assert "nodes.host.comfyui.model_management" in imported_modules(ROOT / "nodes" / "host" / "memory.py")
    assert "folder_paths" in imported_modules(ROOT / "nodes" / "host" / "comfyui.py")


@pytest.mark.parametrize("path", PRODUCT, ids=relative)
def test_only_the_host_package_imports_comfyui(path):
    comfy = {name for name in imported_modules(path) if name.split(".")[0] in COMFYUI_MODULES}
    if path.is_relative_to(ROOT / "nodes" / "host"):
        return
    assert not comfy, f"{relative(path)} imports {sorted(comfy)}"


@pytest.mark.parametrize("path", PRODUCT, ids=relative)
def test_the_product_never_imports_the_test_scaffolding(path):
    names = imported_modules(path)
    assert not [n for n in names if n.startswith("vace_core.testing")], relative(path)
    if path.is_relative_to(ROOT / "vace_core"):
        assert not [n for n in names if n.split(".")[0] == "nodes"], f"{relative(path)} imports the nodes"


def test_comfyui_is_imported_in_the_host_package():
    """The check above is not vacuous: the host package does import ComfyUI."""
    host = [p for p in PRODUCT if p.is_relative_to(ROOT / "nodes" / "host")]
    assert any(n.split(".")[0] in COMFYUI_MODULES for p in host for n in imported_modules(p))

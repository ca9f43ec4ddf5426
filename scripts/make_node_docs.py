#!/usr/bin/env python3
"""Write the node tables of README.md and docs/nodes.md from the nodes' INPUT_TYPES.

The tooltips, defaults and choices in INPUT_TYPES are the one source of what a node takes: the
editor shows them, scripts/make_workflows.py builds the workflows from them, and this script writes
them into two marked blocks (between `<!-- generated: NAME ... -->` and `<!-- end: NAME -->`):

- README.md, block `node-table`: one row per node, its inputs with their defaults, its outputs;
- docs/nodes.md, block `node-reference`: per node its description and a table of every input with
  its type, range or choices, default and tooltip.

The nodes are read as the standalone host builds them, with the model folders holding exactly the
files the README lists, so a file choice shows the default a user with those files sees.
tests/test_docs.py reads both tables back, compares them with INPUT_TYPES and fails when they differ.

    python3 scripts/make_node_docs.py            # rewrite the two blocks
    python3 scripts/make_node_docs.py --check    # exit 1 when a block is stale
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_workflows as mw  # noqa: E402  (the pack as the workflow generator loads it; the model files)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NODE_REFERENCE = ROOT / "docs" / "nodes.md"
BLOCKS = {README: "node-table", NODE_REFERENCE: "node-reference"}


@dataclass(frozen=True)
class Input:
    name: str
    type: str  # "INT", ..., "COMBO" (a list of choices) or a socket type ("IMAGE", "LONGLIVE_MODEL", ...)
    settings: dict[str, Any]  # the options dict of INPUT_TYPES (default, min, max, step, tooltip, ...)
    choices: tuple[str, ...] = ()  # a COMBO's choices
    folder: str | None = None  # a COMBO of model files: the model folder they are listed from
    optional: bool = False

    @property
    def tooltip(self) -> str:
        return self.settings.get("tooltip", "")

    @property
    def has_default(self) -> bool:
        return "default" in self.settings


@dataclass(frozen=True)
class Node:
    class_name: str
    display_name: str
    description: str
    inputs: tuple[Input, ...]
    outputs: tuple[tuple[str, str], ...]  # (name, type)


@contextmanager
def model_folders_with_the_readme_files() -> Iterator[None]:
    """The standalone host's model folders, holding (empty) files named as the README's model files."""
    before = os.environ.get("LONGLIVE_MODELS_DIR")
    with tempfile.TemporaryDirectory() as models:
        for model in mw.MODEL_FILES.values():
            (Path(models) / model.folder).mkdir(exist_ok=True)
            (Path(models) / model.folder / model.name).touch()
        os.environ["LONGLIVE_MODELS_DIR"] = models
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("LONGLIVE_MODELS_DIR", None)
            else:
                os.environ["LONGLIVE_MODELS_DIR"] = before


def file_folder(choices: tuple[str, ...]) -> str | None:
    """The model folder a list of choices comes from, when it lists one of the README's model files."""
    folders = {m.folder for m in mw.MODEL_FILES.values() if m.name in choices}
    return folders.pop() if len(folders) == 1 else None


def read_input(name: str, spec: tuple, optional: bool) -> Input:
    kind, settings = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, (list, tuple)):
        choices = tuple(str(c) for c in kind)
        return Input(name, "COMBO", settings, choices, file_folder(choices), optional)
    return Input(name, kind, settings, optional=optional)


def read_nodes() -> list[Node]:
    """Every registered node, in the pack's order, as INPUT_TYPES describes it."""
    pack = mw.load_pack()
    nodes = []
    with model_folders_with_the_readme_files():
        for class_name, cls in pack.NODE_CLASS_MAPPINGS.items():
            types = cls.INPUT_TYPES()
            inputs = [read_input(name, spec, section == "optional")
                      for section in ("required", "optional") for name, spec in types.get(section, {}).items()]
            names = getattr(cls, "RETURN_NAMES", None) or tuple(t.lower() for t in cls.RETURN_TYPES)
            nodes.append(Node(class_name, pack.NODE_DISPLAY_NAME_MAPPINGS.get(class_name, class_name),
                              getattr(cls, "DESCRIPTION", ""), tuple(inputs),
                              tuple(zip(names, cls.RETURN_TYPES))))
    return nodes


def shown(value: Any) -> str:
    """A default as the docs write it: booleans as the editor's true/false, the rest as text."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def cell(text: str) -> str:
    """Text for a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


# ---------------------------------------------------------------------------------------------
# README: one row per node


def file_choice(port: Input) -> str:
    """A choice of model files, with the fixed choices the node adds to the list ('none')."""
    files = {m.name for m in mw.MODEL_FILES.values()}
    fixed = [c for c in port.choices if c not in files]
    return " or ".join([f"a file in models/{port.folder}", *fixed])


def brief(port: Input) -> str:
    """`name` and its default: bold among the choices, after the name for a value, none for a link."""
    if port.folder:
        return f"`{port.name}` ({file_choice(port)})"
    if port.type == "COMBO":
        default = port.settings.get("default")
        return f"`{port.name}` " + " / ".join(f"**{c}**" if c == default else c for c in port.choices)
    if port.has_default:
        return f"`{port.name}` {shown(port.settings['default'])}"
    return f"`{port.name}`"


def outputs_text(node: Node) -> str:
    return ", ".join(kind for _, kind in node.outputs) or "— (output node)"


def node_table(nodes: list[Node]) -> list[str]:
    lines = ["| node | inputs (a default: the bold choice, or the value after the name) | output |",
             "|---|---|---|"]
    for node in nodes:
        required = ", ".join(brief(p) for p in node.inputs if not p.optional)
        optional = ", ".join(brief(p) for p in node.inputs if p.optional)
        inputs = required + (f"; optional: {optional}" if optional else "")
        lines.append(f"| **{node.display_name}** | {cell(inputs)} | {outputs_text(node)} |")
    return lines


# ---------------------------------------------------------------------------------------------
# docs/nodes.md: every input with its tooltip


def kind_text(port: Input) -> str:
    if port.folder:
        return file_choice(port)
    if port.type == "COMBO":
        return " / ".join(port.choices)
    if port.type in ("INT", "FLOAT") and "min" in port.settings:
        step = port.settings.get("step", 1)
        return f"{port.type} {port.settings['min']}–{port.settings['max']}" + (f", step {step}" if step != 1 else "")
    if port.type == "STRING":
        return "text (several lines)" if port.settings.get("multiline") else "text"
    return port.type


def node_reference(nodes: list[Node]) -> list[str]:
    lines: list[str] = []
    for node in nodes:
        outputs = ", ".join(f"`{name}` {kind}" for name, kind in node.outputs) or "none (an output node)"
        lines += [f"### {node.display_name}", "",
                  f"`{node.class_name}`. {' '.join(node.description.split())}", "", f"Outputs: {outputs}.", "",
                  "| input | type | default | tooltip |", "|---|---|---|---|"]
        for port in node.inputs:
            name = f"`{port.name}`" + (" (optional)" if port.optional else "")
            default = f"`{cell(shown(port.settings['default']))}`" if port.has_default else ""
            lines.append(f"| {name} | {cell(kind_text(port))} | {default} | {cell(port.tooltip)} |")
        lines.append("")
    return lines[:-1]


# ---------------------------------------------------------------------------------------------
# the marked blocks


def begin_marker(block: str) -> str:
    return f"<!-- generated: {block} (scripts/make_node_docs.py, from the nodes' INPUT_TYPES; do not edit) -->"


def end_marker(block: str) -> str:
    return f"<!-- end: {block} -->"


def replace_block(text: str, block: str, lines: list[str]) -> str:
    pattern = re.compile(re.escape(begin_marker(block)) + r"\n.*?" + re.escape(end_marker(block)), re.S)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"expected one block {block!r} between {begin_marker(block)} and {end_marker(block)}")
    return pattern.sub(lambda _: "\n".join([begin_marker(block), *lines, end_marker(block)]), text)


def rendered() -> dict[Path, str]:
    """Each file with its block as the nodes describe it now."""
    nodes = read_nodes()
    contents = {README: node_table(nodes), NODE_REFERENCE: node_reference(nodes)}
    return {path: replace_block(path.read_text(encoding="utf-8"), BLOCKS[path], lines)
            for path, lines in contents.items()}


def stale_files() -> list[Path]:
    return [path for path, text in rendered().items() if path.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run: python3 scripts/make_node_docs.py)")
        return 1 if stale else 0
    for path, text in rendered().items():
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The documentation against the code: the node tables (README.md, docs/nodes.md) against the nodes'
INPUT_TYPES, the presets and options tables of docs/ against vace_core and the settings node, the
library page's example against the library's signatures, every relative link of README.md and
docs/*.md, and every document or section the pack's files cite.

Each table is read back from the Markdown and compared with INPUT_TYPES here, independently of the
generator (scripts/make_node_docs.py) that writes it; each check is also shown to catch a broken
copy of its table, so none of them can pass vacuously.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from pathlib import Path

import pytest

from helpers import load_script
from vace_core.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
MARKDOWN = [ROOT / "README.md", *DOCS]
gen = load_script("make_node_docs")


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def cells(row: str) -> list[str]:
    """The cells of a Markdown table row, `\\|` read as a literal bar."""
    parts = re.split(r"(?<!\\)\|", row.strip())[1:-1]
    return [part.strip().replace("\\|", "|") for part in parts]


def block(text: str, name: str) -> str:
    """The generated block `name` of a document (between its markers)."""
    match = re.search(rf"<!-- generated: {name} .*?-->\n(.*?)<!-- end: {name} -->", text, re.S)
    assert match, f"no generated block {name!r}"
    return match.group(1)


def node_inputs() -> dict[str, dict]:
    """Display name -> {"class", "required", "optional", "outputs"} as the nodes define them, with the
    README's model files in the model folders (the generator's setting: a file choice shows its default)."""
    pack = gen.mw.load_pack()
    nodes = {}
    with gen.model_folders_with_the_readme_files():
        for class_name, cls in pack.NODE_CLASS_MAPPINGS.items():
            types = cls.INPUT_TYPES()
            nodes[pack.NODE_DISPLAY_NAME_MAPPINGS[class_name]] = {
                "class": class_name, "required": types.get("required", {}), "optional": types.get("optional", {}),
                "outputs": list(cls.RETURN_TYPES), "description": getattr(cls, "DESCRIPTION", "")}
    return nodes


NODES = node_inputs()


VALUE_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")  # widgets; every other type is a socket


def default_text(value) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def settings_of(spec: tuple) -> dict:
    return spec[1] if len(spec) > 1 else {}


def is_file_choice(spec: tuple) -> bool:
    return isinstance(spec[0], (list, tuple)) and any(
        m.name in spec[0] for m in gen.mw.MODEL_FILES.values())


# ---------------------------------------------------------------------------------------------
# the README's node table: every node, its inputs in order, their defaults and choices, its outputs


def readme_table_disagreements(table: str) -> list[str]:
    rows = [cells(line) for line in table.splitlines() if line.startswith("| **")]
    found = [row[0].strip("*") for row in rows]
    problems = [] if found == list(NODES) else [f"nodes: the table has {found}, the pack {list(NODES)}"]
    for display, inputs_cell, outputs_cell in rows:
        node = NODES.get(display.strip("*"))
        if node is None:
            continue
        required, _, optional = inputs_cell.partition("; optional: ")
        for part, section in ((required, "required"), (optional, "optional")):
            names = re.findall(r"`([^`]+)`", part)
            if names != list(node[section]):
                problems.append(f"{display} {section}: the table has {names}, INPUT_TYPES {list(node[section])}")
                continue
            segments = re.split(r"`[^`]+`", part)[1:]  # the text after each input's name
            for (name, spec), segment in zip(node[section].items(), segments):
                problems += [f"{display}.{name}: {p}" for p in input_disagreements(spec, segment)]
        expected = ", ".join(node["outputs"]) or "— (output node)"
        if outputs_cell != expected:
            problems.append(f"{display} outputs: the table has {outputs_cell!r}, RETURN_TYPES give {expected!r}")
    return problems


def input_disagreements(spec: tuple, segment: str) -> list[str]:
    settings = settings_of(spec)
    if is_file_choice(spec):
        return [] if "a file in models/" in segment else [f"{segment!r} does not say it is a model file"]
    if isinstance(spec[0], (list, tuple)):
        problems = [f"choice {c!r} missing from {segment!r}" for c in spec[0] if str(c) not in segment]
        if "default" in settings and f"**{settings['default']}**" not in segment:
            problems.append(f"default {settings['default']!r} not shown in bold in {segment!r}")
        return problems
    if "default" in settings and not segment.startswith(f" {default_text(settings['default'])}"):
        return [f"default {default_text(settings['default'])!r}, the table says {segment!r}"]
    return []


def test_the_readme_node_table_matches_input_types():
    table = block(read(ROOT / "README.md"), "node-table")
    assert readme_table_disagreements(table) == []


def test_a_readme_table_that_disagrees_with_input_types_fails():
    """Each kind of disagreement is caught: a default, an input's name, a dropped node, an output."""
    table = block(read(ROOT / "README.md"), "node-table")
    broken = {
        "a default": table.replace("`lora_strength` 1.0", "`lora_strength` 0.5"),
        "a choice's default": table.replace("**auto** / bf16", "auto / **bf16**"),
        "an input's name": table.replace("`vace_scale_at_end`", "`vace_scale_end`"),
        "an optional input made required": table.replace("`lora_strength` 1.0, ", "`lora_strength` 1.0, `compile` false, ", 1),
        "a node": "\n".join(line for line in table.splitlines() if "**LongLive Extra LoRA**" not in line),
        "an output": table.replace("| VACE_CONTEXT, LATENT |", "| VACE_CONTEXT |"),
    }
    for what, text in broken.items():
        assert text != table, what
        assert readme_table_disagreements(text), f"a changed {what} was not caught"


# ---------------------------------------------------------------------------------------------
# docs/nodes.md: every input with its type, default and tooltip


def reference_disagreements(text: str) -> list[str]:
    sections = re.split(r"^### ", text, flags=re.M)[1:]
    found = [section.splitlines()[0] for section in sections]
    problems = [] if found == list(NODES) else [f"nodes: docs/nodes.md has {found}, the pack {list(NODES)}"]
    for section in sections:
        display = section.splitlines()[0]
        node = NODES.get(display)
        if node is None:
            continue
        if f"`{node['class']}`. {' '.join(node['description'].split())}" not in section:
            problems.append(f"{display}: the description differs from DESCRIPTION")
        rows = [cells(line) for line in section.splitlines() if line.startswith("| `")]
        expected = [(name, spec, section_name == "optional")
                    for section_name in ("required", "optional") for name, spec in node[section_name].items()]
        names = [row[0] for row in rows]
        wanted = [f"`{name}`" + (" (optional)" if optional else "") for name, _, optional in expected]
        if names != wanted:
            problems.append(f"{display}: inputs {names}, INPUT_TYPES {wanted}")
            continue
        for (name, spec, _), (_, kind, default, tooltip) in zip(expected, rows):
            settings = settings_of(spec)
            if tooltip != " ".join(settings.get("tooltip", "").split()):
                problems.append(f"{display}.{name}: the tooltip differs")
            want_default = f"`{default_text(settings['default'])}`" if "default" in settings else ""
            if default != want_default:
                problems.append(f"{display}.{name}: default {default!r}, INPUT_TYPES {want_default!r}")
            if isinstance(spec[0], (list, tuple)):
                problems += [f"{display}.{name}: choice {c!r} missing" for c in spec[0]
                             if not is_file_choice(spec) and str(c) not in kind]
            elif "min" in settings and f"{settings['min']}–{settings['max']}" not in kind:
                problems.append(f"{display}.{name}: range {kind!r}, INPUT_TYPES {settings['min']}–{settings['max']}")
            elif spec[0] not in VALUE_TYPES and kind != spec[0]:  # a socket: its type
                problems.append(f"{display}.{name}: type {kind!r}, INPUT_TYPES {spec[0]!r}")
    return problems


def test_the_node_reference_matches_input_types():
    assert reference_disagreements(block(read(ROOT / "docs" / "nodes.md"), "node-reference")) == []


def test_a_node_reference_that_disagrees_with_input_types_fails():
    text = block(read(ROOT / "docs" / "nodes.md"), "node-reference")
    broken = {
        "a tooltip": text.replace("Multiplier of the LoRA update (1.0 = as trained", "Multiplier (1.0 = as trained"),
        "a default": text.replace("| `crf` | INT 0–51 | `19` |", "| `crf` | INT 0–51 | `23` |"),
        "an optional mark": text.replace("`compile` (optional)", "`compile`"),
        "a range": text.replace("INT 0–51", "INT 0–63"),
        "a socket type": text.replace("| `samples` | LATENT |", "| `samples` | IMAGE |", 1),
    }
    for what, changed in broken.items():
        assert changed != text, what
        assert reference_disagreements(changed), f"a changed {what} was not caught"


def test_the_generated_blocks_are_current():
    """The generator writes exactly what is committed (formatting included): after a change of a
    node's inputs or tooltips, `python3 scripts/make_node_docs.py` updates both files."""
    assert gen.stale_files() == []


# ---------------------------------------------------------------------------------------------
# the moved material against the code it describes


def test_the_presets_table_states_each_presets_values_and_source():
    text = read(ROOT / "docs" / "presets.md")
    rows = {cells(line)[0].removesuffix(" (default)"): cells(line) for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| `preset`") and not line.startswith("|---")}
    assert set(rows) == set(PRESETS)
    for name, preset in PRESETS.items():
        _, chunk, window, sink, steps, shift, fed, entry, source = rows[name]
        assert (int(chunk), int(window), int(sink)) == (preset.chunk_frames, preset.window_frames, preset.sink_frames)
        assert tuple(int(s) for s in steps.split(",")) == preset.denoising_steps
        assert float(shift) == preset.shift
        assert fed.startswith("warped") == preset.warp_steps, name
        assert entry.startswith(f"`{preset.checkpoint_entry}`"), name
        repository, commit = preset.source.split("@")
        assert source.startswith(f"{repository} {commit}"), name


def test_the_options_table_gives_the_settings_nodes_defaults_and_choices():
    settings = NODES["LongLive Sampler Settings"]["required"]
    section = read(ROOT / "docs" / "how-it-works.md").split("\n## The options\n", 1)[1]
    table = next(part for part in section.split("\n\n") if part.startswith("| option | default |"))
    options = [cells(line) for line in table.splitlines()[2:]]
    assert [row[0] for row in options] == ["`reference_mode`", "`vace_attention`", "`hint_chunks`",
                                           "`hints_in_clean_pass`", "`recache`"]
    for name, default, alternatives in options:
        spec = settings[name.strip("`")]
        assert default.startswith(f"`{default_text(settings_of(spec)['default'])}`"), name
        choices = spec[0] if isinstance(spec[0], (list, tuple)) else (True, False)
        assert all(f"`{default_text(c)}`" in default + alternatives for c in choices), name


def test_every_document_is_reachable_from_the_readme():
    """A reader who starts at the README finds every page of docs/ by following links."""
    seen, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", read(page)):
            if (page.parent / target).resolve().exists():
                todo.append((page.parent / target).resolve())
    assert set(DOCS) <= seen, sorted(p.name for p in set(DOCS) - seen)


# ---------------------------------------------------------------------------------------------
# links and citations


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", read(path), flags=re.S)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def broken_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", read(path), flags=re.S)
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{path.name}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{path.name}: {target} (no such heading)")
    return problems


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_a_broken_link_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Top\n[a](missing.md) [b](#top) [c](page.md#nowhere) [d](https://example.com/x)\n")
    assert broken_links(page) == ["page.md: missing.md (no such file)", "page.md: page.md#nowhere (no such heading)"]


# the pack's files and its tests, scripts and CI; not this file, whose examples cite missing documents
CITING = [ROOT / "__init__.py", ROOT / "CHANGELOG.md", ROOT / ".ci" / "run",
          *(p for folder in ("nodes", "vace_core", "scripts", "web", "tests") for p in sorted((ROOT / folder).rglob("*"))
            if p.suffix in (".py", ".js") and "__pycache__" not in p.parts and p != Path(__file__).resolve())]


def missing_citations(path: Path) -> list[str]:
    """Documents (`NAME.md`, `docs/name.md`, `docs/name.md#anchor`) and named sections (`README.md
    ("Heading")`, `(README, "Heading")`) that `path` cites but the repository does not hold. (Other
    lower-case `.md` names are files the benchmarks write, not documents.)"""
    # comments and docstrings wrap: read the text as one line, without comment markers
    text = re.sub(r"\s*\n\s*(?:#|//|\*)?\s*", " ", read(path))
    problems = []
    for cited, anchor in re.findall(r"(?<![\w/.-])(docs/[\w-]+\.md|[A-Z][A-Z_-]*\.md)(?:#([\w-]+))?", text):
        document = ROOT / cited
        if not document.exists():
            problems.append(f"{cited} (no such file)")
        elif anchor and anchor not in anchors(document):
            problems.append(f"{cited}#{anchor} (no such heading)")
    for cited, heading in re.findall(r"(README(?:\.md)?|docs/[\w-]+\.md),? \(?\"([^\"]+)\"", text):
        document = ROOT / (cited if cited.endswith(".md") else f"{cited}.md")
        if not document.exists() or slug(heading) not in anchors(document):
            problems.append(f'{cited} "{heading}" (no such section)')
    return problems


@pytest.mark.parametrize("path", CITING, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_cited_document_and_section_exists(path):
    assert missing_citations(path) == []


def test_a_citation_of_a_missing_document_is_caught(tmp_path):
    source = tmp_path / "module.py"
    source.write_text('"""See DESIGN.md §12 and README.md ("How\n    it never was"); docs/live.md#nowhere,\n'
                      '# (README, "Headless\n# use") and docs/presets.md ("Which weights in the file")."""\n')
    assert missing_citations(source) == ["DESIGN.md (no such file)", "docs/live.md#nowhere (no such heading)",
                                         'README.md "How it never was" (no such section)']


# ---------------------------------------------------------------------------------------------
# the library page's example against the library


def library_example_mismatches(code: str) -> list[str]:
    """Calls in the example of docs/library.md that the imported functions and classes would refuse
    (an unknown keyword, too many arguments) and imports that do not exist. Runs nothing."""
    tree = ast.parse(code)
    imported, problems = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    imported[alias.asname or alias.name] = getattr(module, alias.name)
                else:
                    problems.append(f"{node.module}.{alias.name} does not exist")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported:
            arguments = [None] * len(node.args)
            try:
                inspect.signature(imported[node.func.id]).bind(*arguments, **{k.arg: None for k in node.keywords})
            except TypeError as error:
                problems.append(f"line {node.lineno}: {node.func.id}: {error}")
    return problems


def library_example() -> str:
    return re.search(r"```python\n(.*?)```", read(ROOT / "docs" / "library.md"), re.S).group(1)


def test_the_library_example_calls_the_api_as_documented():
    assert library_example_mismatches(library_example()) == []


def test_a_library_example_the_api_refuses_is_caught():
    example = library_example()
    assert library_example_mismatches(example.replace("lora_strength=1.0", "lora_scale=1.0"))
    assert library_example_mismatches(example.replace("import generate,", "import generate_video,"))

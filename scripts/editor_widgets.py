"""The widget rules of ComfyUI's editor, from a node's /object_info entry: which inputs become
widgets, in which order the editor stores their values in a UI workflow's `widgets_values`, and
the extra slots it stores (a seed's "control after generate" mode, upload buttons).

Shared by `make_workflows.py` (writes UI workflows) and `queue_workflow.py` (reads them), so both
follow one reading of the editor. Standard library only: the headless client needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")
SEED_NAMES = ("seed", "noise_seed")  # INT inputs the editor gives a control widget unasked


@dataclass(frozen=True)
class Port:
    name: str
    type: str  # "INT", "COMBO", "IMAGE", "LONGLIVE_MODEL", ...
    widget: bool  # a value on the node (else a socket that only takes links)
    optional: bool = False
    control: bool = False  # the editor stores a "control after generate" mode after the value
    upload: bool = False  # the editor adds an upload button, stored after every other widget
    default: Any = None  # what the editor puts in a new node (None: the workflow must give a value)


def editor_ports(definition: dict) -> list[Port]:
    """The inputs of a node as the editor builds it: in `input_order` (required, then optional),
    a widget for every INT/FLOAT/STRING/BOOLEAN/COMBO input not forced to a socket."""
    inputs = definition.get("input", {})
    order = definition.get("input_order") or {section: list(inputs.get(section, {}))
                                              for section in ("required", "optional")}
    ports = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = inputs.get(section, {}).get(name)
            if not spec:
                continue
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            type_ = "COMBO" if isinstance(kind, (list, tuple)) else kind
            widget = type_ in WIDGET_TYPES and not options.get("forceInput", False)
            control = widget and bool(options.get("control_after_generate", type_ == "INT" and name in SEED_NAMES))
            upload = widget and any(options.get(flag) for flag in UPLOAD_FLAGS)
            # a new node holds the declared default, else a combo's first option
            choices = kind if isinstance(kind, (list, tuple)) else options.get("options", [])
            default = options.get("default", choices[0] if type_ == "COMBO" and len(choices) else None)
            ports.append(Port(name, type_, widget, section == "optional", control, upload,
                              default if widget else None))
    return ports


def widget_slots(definition: dict) -> list[str | None]:
    """Input name of each position in a UI node's `widgets_values` (None: a slot the editor stores
    but the server does not take: the control mode after a seed, and the upload buttons, which the
    editor lists after every input)."""
    ports = editor_ports(definition)
    slots: list[str | None] = []
    for port in ports:
        if port.widget:
            slots.append(port.name)
            if port.control:
                slots.append(None)
    return slots + [None] * sum(port.upload for port in ports)

#!/usr/bin/env python3
"""Convert a PyTorch pickle checkpoint (.pt: LongLive's longlive_base.pt, lora.pt, trainer files) to
safetensors, which every PyTorch loads safely.

A PyTorch older than 2.6 cannot open .pt files safely (CVE-2025-32434: torch.load(weights_only=True)
can still run code from the file), so the pack refuses them there. Run this once with PyTorch 2.6
or newer, in an environment of its own rather than ComfyUI's (ComfyUI's packages stay as they are):

    python -m venv convert-env && convert-env/bin/pip install "torch>=2.6" safetensors
    convert-env/bin/python scripts/convert_to_safetensors.py models/diffusion_models/longlive_base.pt
        -> models/diffusion_models/longlive_base.safetensors

The state dict the loader would take is written with its keys and tensors unchanged (a trainer
file's entry as the loader picks it: generator_ema, else generator, else model, ...; --entry names
one; a LoRA's generator_lora), so the new file loads as the same model. The source entry is
recorded in the file's metadata. An existing output is never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from vace_core.checkpoint_files import AUTO_ENTRY_ORDER, CheckpointError, TensorFile, torch_load_is_safe  # noqa: E402
from vace_core.lora import LORA_ENTRIES  # noqa: E402

ENTRIES = AUTO_ENTRY_ORDER + LORA_ENTRIES


def convert(source: Path, target: Path, entry: str | None = None) -> int:
    """Write the tensors of `source`'s state dict to `target`; returns how many."""
    if target.exists():
        raise FileExistsError(f"{target} exists; it is not overwritten (remove it or name another --out)")
    with TensorFile(source, ENTRIES, entry) as checkpoint:
        # each tensor on its own storage (safetensors refuses shared ones), in the file's order
        tensors = {key: checkpoint.take(key).contiguous().clone() for key in checkpoint.shapes}
    metadata = {"converted_from": source.name, "entry": entry or "auto"}
    save_file(tensors, str(target), metadata=metadata)
    return len(tensors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="the .pt file to convert")
    parser.add_argument("--out", type=Path, default=None,
                        help="the safetensors file to write (default: beside it, extension .safetensors)")
    parser.add_argument("--entry", default=None,
                        help="the state dict of a trainer checkpoint to take (default: the loader's choice)")
    args = parser.parse_args(argv)
    if not torch_load_is_safe():
        import torch

        print(f"error: this PyTorch ({torch.__version__}) cannot open .pt files safely either; run this script "
              "with PyTorch 2.6 or newer (see its --help)", file=sys.stderr)
        return 2
    target = args.out or args.checkpoint.with_suffix(".safetensors")
    try:
        count = convert(args.checkpoint, target, args.entry)
    except (CheckpointError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {count} tensors to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

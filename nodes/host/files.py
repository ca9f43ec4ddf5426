"""Files: model files by name inside the model folders, and new output files.

Inside ComfyUI these are ComfyUI's folders (`folder_paths`); standalone, model folders live under
$LONGLIVE_MODELS_DIR (default ./models: diffusion_models/, loras/) and outputs under
$LONGLIVE_OUTPUT_DIR (default ./output). A name is always resolved inside its folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from .comfyui import IN_COMFYUI, folder_paths

MODEL_KINDS = ("diffusion_models", "loras")
# ComfyUI's folder_paths.supported_pt_extensions, repeated for the standalone host
MODEL_EXTENSIONS = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")


def models_dir() -> Path:
    """Root of the standalone model folders (read on every call so tests can point it elsewhere)."""
    return Path(os.environ.get("LONGLIVE_MODELS_DIR", "models")).resolve()


def _check_kind(kind: str) -> None:
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model folder {kind!r}; expected one of {', '.join(MODEL_KINDS)}")


def list_models(kind: str) -> list[str]:
    """File names (relative to the model folder, '/'-separated, sorted) of kind 'diffusion_models'
    or 'loras'. An absent folder lists nothing."""
    _check_kind(kind)
    if folder_paths is not None:
        return list(folder_paths.get_filename_list(kind))
    root = models_dir() / kind
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in MODEL_EXTENSIONS)


def model_path(kind: str, name: str) -> str:
    """Full path of model file `name` inside the `kind` folder(s); FileNotFoundError if absent.

    Only names from `list_models` are meant here; a name is normalised as ComfyUI does, so
    '../x' or '/etc/x' cannot leave the model folder.
    """
    _check_kind(kind)
    if folder_paths is not None:
        return folder_paths.get_full_path_or_raise(kind, name)
    relative = os.path.relpath(os.path.join("/", name), "/")
    path = models_dir() / kind / relative
    if not path.is_file():
        raise FileNotFoundError(f"Model in folder '{kind}' with filename '{name}' not found "
                                f"(looked in {models_dir() / kind}).")
    return str(path)


def output_dir() -> Path:
    """ComfyUI's output folder, or $LONGLIVE_OUTPUT_DIR (default ./output) standalone."""
    if folder_paths is not None:
        return Path(folder_paths.get_output_directory())
    return Path(os.environ.get("LONGLIVE_OUTPUT_DIR", "output")).resolve()


def _save_path_parts(filename_prefix: str, root: Path, width: int, height: int) -> tuple[Path, str, int, str]:
    # (folder, file stem, first free counter, subfolder) as ComfyUI's get_save_image_path gives them
    if folder_paths is not None:
        folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, str(root),
                                                                               width, height)
        return Path(folder), stem, counter, subfolder
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    stem = os.path.basename(os.path.normpath(filename_prefix))
    folder = (root / subfolder).resolve()
    if os.path.commonpath((str(root), str(folder))) != str(root):
        raise ValueError(f"filename_prefix {filename_prefix!r} points outside the output folder")
    folder.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[len(stem) + 1:].split("_")[0]) for p in folder.iterdir()
             if p.name.startswith(stem + "_") and p.name[len(stem) + 1:].split("_")[0].isdigit()]
    return folder, stem, max(taken, default=0) + 1, subfolder


def video_output_paths(filename_prefix: str, width: int, height: int, count: int = 1,
                       extension: str = "mp4") -> list[tuple[Path, str, str]]:
    """`count` new files in the output folder (a batch's videos, in order) named like ComfyUI's savers
    name a batch (`prefix_00001_.mp4`, `prefix_00002_.mp4`, ...), never an existing one: each (full
    path, file name, subfolder relative to the output folder)."""
    root = output_dir()
    root.mkdir(parents=True, exist_ok=True)
    folder, stem, counter, subfolder = _save_path_parts(filename_prefix, root.resolve(), width, height)
    files = []
    for _ in range(count):
        while (folder / f"{stem}_{counter:05}_.{extension}").exists():
            counter += 1
        name = f"{stem}_{counter:05}_.{extension}"
        files.append((folder / name, name, subfolder))
        counter += 1
    return files


def metadata_enabled() -> bool:
    """False when ComfyUI runs with --disable-metadata (then no prompt is written into files)."""
    if not IN_COMFYUI:
        return True
    from comfy.cli_args import args

    return not args.disable_metadata

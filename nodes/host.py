"""The one adapter between the node pack and its host.

Inside ComfyUI this module uses ComfyUI's model folders, device policy, progress bar, interrupt
flag, latent previews and memory manager. Without ComfyUI (unit tests, `scripts/selftest.py`) it
falls back to a standalone host:

- model folders under $LONGLIVE_MODELS_DIR (default ./models): diffusion_models/, loras/;
- device: CUDA when available, else CPU; the model is kept on the CPU between runs;
- a progress bar that only counts; no previews;
- an interrupt flag that only `request_interrupt()` sets (tests use it).

No other module of the pack imports ComfyUI. Set LONGLIVE_STANDALONE=1 to force the fallback even
when ComfyUI happens to be importable.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch

log = logging.getLogger("longlive_vace")

MODEL_KINDS = ("diffusion_models", "loras")
# ComfyUI's folder_paths.supported_pt_extensions, repeated for the standalone host
MODEL_EXTENSIONS = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")


def _import_comfy() -> tuple[Any, Any, Any] | None:
    if os.environ.get("LONGLIVE_STANDALONE", "") not in ("", "0"):
        return None
    try:
        import folder_paths
        import comfy.model_management as model_management
        import comfy.utils as comfy_utils
    except ImportError:
        return None
    return folder_paths, model_management, comfy_utils


_COMFY = _import_comfy()
IN_COMFYUI: bool = _COMFY is not None

if _COMFY is not None:
    folder_paths, model_management, comfy_utils = _COMFY
    InterruptProcessingException = model_management.InterruptProcessingException
else:
    folder_paths = model_management = comfy_utils = None

    class InterruptProcessingException(Exception):  # type: ignore[no-redef]
        """Standalone stand-in for ComfyUI's exception of the same name."""


# ---------------------------------------------------------------------------------------------
# model files: names only; a name is always resolved inside a model folder


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


# ---------------------------------------------------------------------------------------------
# devices and memory


def compute_device() -> torch.device:
    """Where sampling runs: ComfyUI's torch device, or CUDA when available, else the CPU."""
    if model_management is not None:
        return model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where the model waits between runs: ComfyUI's choice for diffusion models (the GPU itself
    in --highvram mode, else the CPU), or the CPU."""
    if model_management is not None:
        return model_management.unet_offload_device()
    return torch.device("cpu")


def free_memory_for(required_bytes: int, device: torch.device | None = None) -> None:
    """Make room for `required_bytes` on `device` before our model moves there.

    Our model is not a ComfyUI ModelPatcher, so ComfyUI's manager cannot see it. Asking
    `free_memory` for its size (plus ComfyUI's minimum inference reserve) unloads just enough of
    the models ComfyUI manages (the 11 GB umT5 text encoder first: it is done once CLIPTextEncode
    has run) instead of `unload_all_models`, which would also evict a VAE that still fits.
    """
    device = device or compute_device()
    if model_management is None or device.type == "cpu":
        return
    reserve = model_management.minimum_inference_memory()
    model_management.free_memory(int(required_bytes + reserve), device)


def soft_empty_cache() -> None:
    """Return cached allocator blocks to the driver (after sampling, once the model is offloaded)."""
    if model_management is not None:
        model_management.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# progress and interrupt


class CountingProgressBar:
    """Standalone progress bar with ComfyUI's interface; records the previews it was given."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.current = 0
        self.previews = 0

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        self.previews += preview is not None

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)


def progress_bar(total: int) -> Any:
    """ComfyUI's ProgressBar (drives the UI and the websocket progress) or a counting stand-in."""
    if comfy_utils is not None:
        return comfy_utils.ProgressBar(total)
    return CountingProgressBar(total)


_standalone_interrupt = False


def request_interrupt(value: bool = True) -> None:
    """Set (or clear) the interrupt flag: ComfyUI's own flag, or the standalone one."""
    global _standalone_interrupt
    if model_management is not None:
        model_management.interrupt_current_processing(value)
    else:
        _standalone_interrupt = value


def is_interrupted() -> bool:
    """True once the user pressed Cancel (the flag stays set until `check_interrupt` consumes it)."""
    if model_management is not None:
        return bool(model_management.processing_interrupted())
    return _standalone_interrupt


def check_interrupt() -> None:
    """Raise InterruptProcessingException if an interrupt is pending, clearing the flag
    (ComfyUI's `throw_exception_if_processing_interrupted`)."""
    global _standalone_interrupt
    if model_management is not None:
        model_management.throw_exception_if_processing_interrupted()
    elif _standalone_interrupt:
        _standalone_interrupt = False
        raise InterruptProcessingException()


def raise_interrupted() -> None:
    """The run stopped because of an interrupt: raise ComfyUI's exception in any case."""
    check_interrupt()
    raise InterruptProcessingException()


# ---------------------------------------------------------------------------------------------
# latent previews


def make_previewer() -> Callable[[torch.Tensor], Any] | None:
    """A function from normalised Wan latents [1, 16, f, h, w] to a ComfyUI preview (the last frame),
    or None when previews are off, unavailable or the host is standalone.

    Uses ComfyUI's own previewer for the Wan 2.1 latent format (latent->RGB factors, or TAEHV when
    the user enabled TAESD previews and installed it), exactly as its KSampler does.
    """
    if not IN_COMFYUI:
        return None
    try:
        import comfy.latent_formats
        import latent_preview

        previewer = latent_preview.get_previewer(compute_device(), comfy.latent_formats.Wan21())
    except Exception as error:  # a preview is never worth failing a run for
        log.warning("LongLive: latent previews disabled (%s)", error)
        return None
    if previewer is None:
        return None

    failed = False

    def preview(x0: torch.Tensor) -> Any:
        nonlocal failed
        if failed:
            return None
        try:
            return previewer.decode_latent_to_preview_image("JPEG", x0[:, :, -1:])
        except Exception as error:
            failed = True  # warn once, then run on without previews
            log.warning("LongLive: latent previews disabled after an error (%s)", error)
            return None

    return preview


# ---------------------------------------------------------------------------------------------
# streaming video output: output files, VAE loading, previews of decoded frames, metadata policy.
# The decoders themselves live in vae_stream.py.


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


def video_output_path(filename_prefix: str, width: int, height: int, extension: str = "mp4") -> tuple[Path, str, str]:
    """A new file in the output folder named like ComfyUI's savers (`prefix_00001_.mp4`), never an
    existing one: (full path, file name, subfolder relative to the output folder)."""
    root = output_dir()
    root.mkdir(parents=True, exist_ok=True)
    folder, stem, counter, subfolder = _save_path_parts(filename_prefix, root.resolve(), width, height)
    while (folder / f"{stem}_{counter:05}_.{extension}").exists():
        counter += 1
    name = f"{stem}_{counter:05}_.{extension}"
    return folder / name, name, subfolder


def prepare_vae_decode(vae: Any, latent_shape: tuple[int, ...]) -> None:
    """Load a ComfyUI VAE onto its device for decoding `latent_shape`, as `VAE.decode` does."""
    if model_management is None or not hasattr(vae, "patcher"):
        return
    memory = vae.memory_used_decode(latent_shape, vae.vae_dtype)
    model_management.load_models_gpu([vae.patcher], memory_required=memory,
                                     force_full_load=getattr(vae, "disable_offload", False))


def is_out_of_memory(error: BaseException) -> bool:
    """True for an out-of-memory error, as ComfyUI tells them apart (its `is_oom` since 0.33 also
    recognises accelerator errors that report running out of memory)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    is_oom = getattr(model_management, "is_oom", None) if model_management is not None else None
    return bool(is_oom(error)) if callable(is_oom) else False


TILE_PIXELS, TILE_OVERLAP_PIXELS = 256, 64  # the tile ComfyUI's own VAE decode falls back to on OOM


def tiled_decode(vae: Any, latents_raw: torch.Tensor) -> torch.Tensor:
    """ComfyUI's tiled VAE decode of a short latent clip [1, 16, t, h, w] -> pixels [T, H, W, 3]:
    spatial tiles of 256 pixels (64 overlap), the clip's frames in one temporal tile."""
    if model_management is not None:
        soft_empty_cache()
    scale = vae.spacial_compression_decode() if hasattr(vae, "spacial_compression_decode") else 8
    out = vae.decode_tiled(latents_raw, tile_x=TILE_PIXELS // scale, tile_y=TILE_PIXELS // scale,
                           overlap=TILE_OVERLAP_PIXELS // scale, tile_t=latents_raw.shape[2], overlap_t=1)
    return out[0] if out.ndim == 5 else out


def streaming_decoder(vae: Any) -> Any:
    """A chunk decoder (`decode_chunk`) for `vae`: exact for ComfyUI's Wan 2.1 VAE, see vae_stream.
    A chunk that runs out of memory is decoded with the VAE's tiled decode when it has one."""
    from .vae_stream import streaming_decoder_for

    tiled = (lambda latents: tiled_decode(vae, latents)) if hasattr(vae, "decode_tiled") else None
    return streaming_decoder_for(vae, prepare=lambda shape: prepare_vae_decode(vae, shape), tiled_decode=tiled,
                                 is_out_of_memory=is_out_of_memory)


def frame_previewer() -> Callable[[torch.Tensor], Any] | None:
    """A function from one decoded frame [H, W, 3] (0..1) to a progress-bar preview, or None when
    previews are off (ComfyUI's preview method 'none') or the host is standalone."""
    if not IN_COMFYUI:
        return None
    try:
        from comfy.cli_args import LatentPreviewMethod, args
        from PIL import Image
    except ImportError as error:
        log.warning("LongLive: frame previews disabled (%s)", error)
        return None
    if args.preview_method == LatentPreviewMethod.NoPreviews:
        return None

    def preview(frame: torch.Tensor) -> Any:
        data = (frame[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        return ("JPEG", Image.fromarray(data), args.preview_size)

    return preview


def metadata_enabled() -> bool:
    """False when ComfyUI runs with --disable-metadata (then no prompt is written into files)."""
    if not IN_COMFYUI:
        return True
    from comfy.cli_args import args

    return not args.disable_metadata

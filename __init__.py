"""LongLive + VACE for ComfyUI: causal long-video generation with reference images."""

# ComfyUI imports this file as the package of the pack's folder. pytest (>= 9.2) also imports the
# rootdir's __init__.py, as a lone module when the folder's name is not a Python identifier (a clone
# named comfyui-longlive-vace); there is no package to assemble then.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"  # the editor extension: live chunk preview and steering box on the sampler nodes

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

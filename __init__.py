"""ComfyUI-Flipbook: one still picture in, an animation out.

ComfyUI loads this folder from custom_nodes/; pip installs it as the package ``comfyui_flipbook``.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .nodes._comfy import install_example_inputs
from .nodes.migrations import install_prompt_handler
from .nodes.preview_route import install_preview_route

WEB_DIRECTORY = "./web/js"

install_example_inputs()  # only inside ComfyUI: the shipped workflows' pictures into input/
install_prompt_handler()  # only inside ComfyUI: API prompts saved against older nodes are migrated
install_preview_route()   # only inside ComfyUI: POST /flipbook/preview for the editors' live preview

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

"""ComfyUI-Flipbook: one still picture in, an animation out.

ComfyUI loads this folder from custom_nodes/; pip installs it as the package ``comfyui_flipbook``.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web/js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

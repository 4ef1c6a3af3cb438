"""Small picture helpers shared by every family."""
from __future__ import annotations

import torch

from ..pipelines.errors import check_image, check_mask, fail
from ..pipelines.keypoints import picture_alpha

INVERT_TIP = ("On: the mask is 1 where the picture is transparent, as ComfyUI's Load Image gives it "
              "(1 - alpha); the character is where the mask is 0. Off: the mask is 1 on the character.")


NO_MASK_SIZE = (64, 64)      # ComfyUI's Load Image: a picture without alpha gives a 64x64 all-zero MASK


def is_no_mask(mask) -> bool:
    """ComfyUI's "this picture has no alpha" MASK: all zeros, 64x64 whatever the picture's size."""
    return (isinstance(mask, torch.Tensor) and mask.dim() >= 2 and tuple(mask.shape[-2:]) == NO_MASK_SIZE
            and mask.numel() > 0 and not bool(mask.any()))


def resolve_mask(mask, image, *, invert: bool = True):
    """The MASK a masked node works with. Load Image's no-alpha sentinel (a JPG, an opaque PNG) becomes
    the picture's own silhouette, its non-background pixels (pipelines.keypoints.picture_alpha), in the
    convention of the mask input (``invert``: Load Image's 1 - alpha); any other mask is kept as it is."""
    if mask is None or image is None or not is_no_mask(mask):
        return mask
    alpha = picture_alpha(check_image("image", image))
    return 1.0 - alpha if invert else alpha


def silhouette(mask, image, invert: bool, *, max_frames: int | None = None):
    """Alpha [F,H,W] from a MASK sized like ``image`` [F,H,W,C]. ComfyUI's Load Image drops alpha from
    IMAGE and returns MASK = 1 - alpha (nodes.py, LoadImage): ``invert`` undoes that. Load Image's
    64x64 no-alpha MASK stands for the picture's own silhouette (:func:`resolve_mask`)."""
    mask = resolve_mask(mask, image, invert=invert)
    if mask is None:
        return None
    m = check_mask("mask", mask)
    if tuple(m.shape[1:]) != tuple(image.shape[1:3]):
        fail("mask", f"the image's size {tuple(image.shape[1:3])}", f"{tuple(m.shape[1:])}")
    if max_frames is not None:
        m = m[:max_frames]
    elif m.shape[0] not in (1, image.shape[0]):
        fail("mask", f"1 or {image.shape[0]} masks (one per frame)", f"{m.shape[0]}")
    return (1.0 - m if invert else m).clamp(0, 1)


_COLOURS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "grey": (0.5, 0.5, 0.5), "green": (0.0, 1.0, 0.0)}


def composite(frames: torch.Tensor, alpha: torch.Tensor, colour) -> torch.Tensor:
    """frames [F,H,W,3] over a plain colour with alpha [F|1,H,W] in 0..1."""
    a = alpha[..., None].to(frames.dtype)
    bg = torch.tensor(colour, dtype=frames.dtype, device=frames.device)
    return frames * a + bg * (1 - a)


class FlipbookCompositeBackground:
    DESCRIPTION = ("Puts frames on a plain background using a mask. ComfyUI's Load Image drops transparency "
                   "(transparent areas come out black) and gives MASK = 1 - alpha; warp that mask with the "
                   "picture and composite here to get the character on white again.")
    CATEGORY = "Flipbook/Image"
    FUNCTION = "composite"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The frames over the background colour.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "frames": ("IMAGE", {"tooltip": "Frames to put on the background."}),
            "mask": ("MASK", {"tooltip": "One mask, or one per frame."}),
            "background": (list(_COLOURS), {"default": "white", "tooltip": "Background colour."}),
            "invert_mask": ("BOOLEAN", {"default": True, "tooltip": INVERT_TIP}),
        }}

    def composite(self, frames, mask, background, invert_mask):
        frames = check_image("frames", frames, channels=(3,))
        return (composite(frames, silhouette(mask, frames, invert_mask), _COLOURS[background]),)


NODE_CLASS_MAPPINGS = {"FlipbookCompositeBackground": FlipbookCompositeBackground}
NODE_DISPLAY_NAME_MAPPINGS = {"FlipbookCompositeBackground": "Flipbook Composite on Background"}

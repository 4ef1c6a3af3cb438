"""The coordinate rules (pipelines/coords.py): each conversion is what grid_sample and the specs mean."""
import pytest
import torch
import torch.nn.functional as F

from comfyui_flipbook.pipelines import coords as C
from comfyui_flipbook.pipelines.errors import FlipbookInputError

SIZE = (5, 8)                      # H, W


def _pixels():
    g = torch.Generator().manual_seed(0)
    return torch.rand(10, 2, generator=g, dtype=torch.float64) * torch.tensor([7.0, 4.0])


@pytest.mark.parametrize("align_corners", [True, False])
def test_unit_and_pixel_are_inverse(align_corners):
    p = _pixels()
    back = C.unit_to_pixel(C.pixel_to_unit(p, SIZE, align_corners=align_corners), SIZE, align_corners=align_corners)
    assert torch.allclose(back, p, atol=1e-12)
    assert torch.allclose(C.ndc_to_unit(C.unit_to_ndc(p)), p, atol=1e-12)


@pytest.mark.parametrize("align_corners", [True, False])
def test_ndc_reads_the_pixel_grid_sample_reads(align_corners):
    """Sampling an image at pixel_to_ndc(integer pixel) returns exactly that pixel, in both conventions."""
    img = torch.arange(40, dtype=torch.float64).view(1, 1, *SIZE)
    yy, xx = torch.meshgrid(torch.arange(5.0, dtype=torch.float64), torch.arange(8.0, dtype=torch.float64),
                            indexing="ij")
    grid = C.pixel_to_ndc(torch.stack([xx, yy], -1), SIZE, align_corners=align_corners)
    out = F.grid_sample(img, grid[None], mode="bilinear", align_corners=align_corners)
    assert torch.allclose(out, img, atol=1e-12)


def test_align_corners_true_is_kornias_rule():
    p = _pixels()
    h, w = SIZE
    kornia = 2 * p / torch.tensor([w - 1, h - 1], dtype=p.dtype) - 1      # normalize_pixel_coordinates
    assert torch.allclose(C.pixel_to_ndc(p, SIZE, align_corners=True), kornia, atol=1e-12)


def test_rescale_maps_centres_to_centres_and_edges_to_edges():
    src, dst = (4, 10), (8, 30)
    edges = torch.tensor([[-0.5, -0.5], [9.5, 3.5]])
    assert torch.allclose(C.rescale_pixels(edges, src, dst), torch.tensor([[-0.5, -0.5], [29.5, 7.5]]))
    p = _pixels().float()
    assert C.rescale_pixels(p, src, src) is p
    # the same as going through the align_corners=False unit square of both canvases
    via = C.unit_to_pixel(C.pixel_to_unit(p, src, align_corners=False), dst, align_corners=False)
    assert torch.allclose(C.rescale_pixels(p, src, dst), via, atol=1e-5)


def test_fraction_is_the_release_rule_not_align_corners():
    p = torch.tensor([[320.0, 240.0], [640.0, 0.0]])
    assert C.pixel_to_fraction(p, (480, 640)).tolist() == [[0.5, 0.5], [1.0, 0.0]]
    assert C.fraction_to_pixel(C.pixel_to_fraction(p, (480, 640)), (480, 640)).tolist() == p.tolist()
    assert not torch.equal(C.pixel_to_fraction(p, (480, 640)), C.pixel_to_unit(p, (480, 640)))


def test_bad_inputs_are_named():
    with pytest.raises(FlipbookInputError, match="points"):
        C.pixel_to_unit(torch.zeros(3, 3), SIZE)
    with pytest.raises(FlipbookInputError, match="size"):
        C.pixel_to_unit(torch.zeros(3, 2), (0, 4))

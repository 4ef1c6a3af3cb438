"""CPAB transformations in pure torch: diffeomorphic warps from continuous piecewise-affine velocity
fields (spec cpab.md §1), keypoint fitting (§2.1, §3.2) and dense warping (§1.5)."""
from .fit import FitResult, fit_theta, fit_track
from .tessellation import Tessellation, tessellation
from .transform import (expm_affine, identity_grid, integrate, step_tables, theta_to_affine, transform,
                        transform_grid, transform_jacobian)
from .warp import (CPABParams, flow_to_grid, flow_to_image, grid_to_flow, random_params, sampling_grid, warp)
from .warper import (WARP, WarpResult, WarpSettings, apply_params, default_cells, fit_keypoints, fit_report,
                     keypoint_targets, keypoint_warp, random_warp, render_warp, weights_from_json)

__all__ = [
    "CPABParams", "FitResult", "Tessellation", "WARP", "WarpResult", "WarpSettings", "apply_params", "default_cells",
    "expm_affine", "fit_keypoints", "fit_report", "fit_theta", "fit_track", "flow_to_grid", "flow_to_image",
    "grid_to_flow", "identity_grid", "integrate", "keypoint_targets", "keypoint_warp", "random_params",
    "random_warp", "render_warp", "sampling_grid", "step_tables", "tessellation", "theta_to_affine", "transform",
    "transform_grid", "transform_jacobian", "warp", "weights_from_json",
]

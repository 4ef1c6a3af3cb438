"""The algorithms, in plain torch. Nothing here imports ComfyUI (or ``nodes/``); imports are relative.

Building blocks follow the paper steps, not the papers, and every method shares them:

- the ground: ``errors`` (one error grammar), ``progress`` (callbacks, cancel checks), ``devices``,
  ``optimise`` (the one optimiser loop), ``coords`` (pixel <-> unit <-> NDC, the align_corners rule
  stated once);
- keypoints: ``skeleton`` (Skeleton and KeypointTrack, the one keypoint format), ``keypoints``
  (from typed JSON or a mask), ``pose/`` (the OpenPose layout, POSE_KEYPOINT in and out, retargeting,
  drawing), ``bezier`` (trajectories);
- geometry: ``mesh``, ``raster`` (face IDs), ``render`` (textured mesh), ``deform`` (Poisson/ARAP),
  ``metrics``, ``cpab/`` (CPAB transformations, fits and warps);
- diffusion: ``diffusion/`` (scheduler, the one sampling loop, attention patches, backbones);
- ``io``, ``preview``, ``synthetic``: pictures in and out.

One package per method composes them end to end, each shaped alike: ``pipeline.py`` (the
composition, readable top to bottom in numbered steps), ``settings.py`` (frozen dataclasses whose
defaults the nodes use) and ``testmodels.py`` (``write_test_models(models_dir) -> list[str]``, found
by ``python -m comfyui_flipbook make-test-models`` without being listed anywhere):
``flexiclip/`` (the clipart path), ``flipsketch/``, ``cpabmm/``, ``animatex/``. A new method (say
PoseAnimate, on SD1.5 + ControlNet) is a new package of that shape next to them; what it shares
(a ControlNet denoiser, pose conditioning images) goes into the building blocks. A new step of an
existing method (FlexiClip's video SDS) goes into that method's package, its building blocks below.
The same functions serve the nodes, the tests, the benchmarks and the command line.
"""

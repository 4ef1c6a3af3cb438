"""The algorithms, in plain torch. Nothing here imports ComfyUI.

Each module follows a paper step (keypoints, trajectories, mesh deformation, rendering, CPAB,
DDIM inversion, attention patches, ...); one short module per method composes them end to end.
The same functions serve the nodes, the tests, the benchmarks and the command line.
"""

"""How long the editors wait for a live preview (POST /flipbook/preview, nodes/preview_route.py).

Through the real aiohttp handler (JSON in, JSON out, base64 images), on the shipped character:
  drag_handle:   a Bezier handle moved (mesh cached), one frame back as PNG;
  drag_keypoint: a keypoint moved (new mesh + factorisation), one frame back as PNG;
  animation:     the whole animation (24 frames) as an animated WebP, after the drag ends;
  cpab_frame:    a warp target moved, one CPAB frame (fit + render).
Best and median of --repeat requests, milliseconds, at --side px (the editors ask 192).

    PYTHONPATH=<dir holding comfyui_flipbook> python benchmarks/preview.py --repeat 9
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--side", type=int, default=192)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from comfyui_flipbook.nodes import preview_route as pr
    from comfyui_flipbook.pipelines.flexiclip.pipeline import DEMO_KEYPOINTS, EXAMPLES

    svc = pr.PreviewService(resolve_input=lambda name: f"{EXAMPLES}/{name}")
    with open(DEMO_KEYPOINTS) as f:
        points = json.load(f)["points"]
    k = len(points)
    base = {"image": "flipbook_character.png", "points_json": json.dumps(points), "edges_json": "", "frames": 24,
            "max_side": args.side, "preset": "wave", "amplitude": 0.08, "client": "bench"}

    async def run():
        async def route(request):
            return await pr.handle(request, svc)

        app = web.Application(client_max_size=8 * 2 ** 20)
        app.router.add_post("/flipbook/preview", route)
        seq = 0
        times: dict[str, list[float]] = {"drag_handle": [], "drag_keypoint": [], "animation": [], "cpab_frame": []}
        async with TestClient(TestServer(app)) as client:
            async def ask(name, **kw):
                nonlocal seq
                seq += 1
                t0 = time.perf_counter()
                r = await client.post("/flipbook/preview", json={**base, **kw, "seq": seq})
                body = await r.json()
                dt = 1000 * (time.perf_counter() - t0)
                assert r.status == 200, body
                if name:
                    times[name].append(dt)

            await ask(None, frame=6, format="png")                       # warm imports and caches
            await ask(None, kind="cpab", frame=6, format="png", max_side=96)
            for i in range(args.repeat):
                ctrl = [None] * k
                ctrl[4] = [[40 + i, -30], [40, -30 - i], [0, 0]]
                await ask("drag_handle", frame=6, format="png", control_json=json.dumps({"relative": True, "control": ctrl}))
                pts = [list(p) for p in points]
                pts[4][0] += 2 * (i + 1)
                await ask("drag_keypoint", frame=6, format="png", points_json=json.dumps(pts))
                await ask("animation", format="webp")
                tg = [None] * k
                tg[4] = [points[4][0] - 10 - i, points[4][1] - 20]
                await ask("cpab_frame", kind="cpab", frames=8, frame=7, format="png", max_side=96,
                          targets_json=json.dumps(tg))
        return times

    times = asyncio.run(run())
    for name, ts in times.items():
        print(f"{name:14s} best {min(ts):7.1f} ms  median {statistics.median(ts):7.1f} ms  (n={len(ts)})")
    print("RESULT " + " ".join(f"{n}_ms={statistics.median(t):.1f}" for n, t in times.items()))


if __name__ == "__main__":
    main()

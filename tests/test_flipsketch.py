"""FlipSketch: attention composition, frame alignment, sampler, nodes (spec §1.3-§1.4, §3.2).
CI budget (spec §3.2.8): a few steps, tau2/tau1 of 1-2, 2 alignment iterations, few frames."""
import importlib.util
import os

import pytest
import torch

from comfyui_flipbook.pipelines import flipsketch as FS
from comfyui_flipbook.pipelines.flipsketch import attention as FSA
from comfyui_flipbook.pipelines.diffusion.attention import ReferenceStore, attention_modules, attention_role, patched
from comfyui_flipbook.pipelines.diffusion.backbone import tiny_t2v
from comfyui_flipbook.pipelines.diffusion.text import encode_text, null_embeds
from comfyui_flipbook.pipelines.errors import FlipbookInputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bb():
    return tiny_t2v(0)


@pytest.fixture(scope="module")
def prompt(bb):
    return encode_text(bb, "a cat is walking")


def _x(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _composed(bb, x_gen, x_ref, e_gen, e_ref, lam, copies):
    """One SAVE pass on the reference then one USE pass on the generation (batch 1, all composed)."""
    store = ReferenceStore()
    frames = x_gen.shape[2]
    with patched(bb.unet, FS.FlipSketchAttention(lam=lam).bind(store)), torch.no_grad():
        with store.phase("save"):
            bb.unet(x_ref, 400, encoder_hidden_states=e_ref)
        with store.phase("use", frames=frames, batch=1, cond=(0, 1), copies=copies):
            return bb.unet(x_gen, 400, encoder_hidden_states=e_gen).sample


def test_neutral_settings_give_the_unpatched_output(bb, prompt):
    x = _x((1, 4, 5, 8, 8))
    with torch.no_grad():
        plain = bb.unet(x, 400, encoder_hidden_states=prompt).sample
    same = _composed(bb, x, x, prompt, prompt, lam=0.0, copies=5)
    torch.testing.assert_close(same, plain, rtol=1e-4, atol=1e-4)
    other = _composed(bb, x, _x((1, 4, 5, 8, 8), 1), prompt, prompt, lam=0.0, copies=5)
    assert (other - plain).abs().max() > 1e-2   # a different reference does change the output


def test_lambda_raises_attention_on_reference_key_with_query_frame(bb, prompt, monkeypatch):
    """C^T: the reference-key logit of query frame j is scaled by (1 + lambda j / 50), so (for a positive
    logit) frame j attends more to the reference the later it is; nothing else changes."""
    logits = {}
    real_finish = FSA.finish

    def spy(attn, s, v, ctx):
        logits[id(attn)] = s.clone()                 # the last call: the USE pass
        return real_finish(attn, s, v, ctx)

    monkeypatch.setattr(FSA, "finish", spy)
    x = _x((1, 4, 6, 8, 8))
    temporal = bb.unet.transformer_in.transformer_blocks[0].attn1
    s = {}
    for lam in (0.0, 1.0):
        _composed(bb, x, x, prompt, prompt, lam=lam, copies=6)
        s[lam] = logits[id(temporal)]                # (HW*heads, F, F)
    scale = 1 + torch.arange(6) / 50
    torch.testing.assert_close(s[1.0][:, :, 0], s[0.0][:, :, 0] * scale, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s[1.0][:, :, 1:], s[0.0][:, :, 1:])
    p0, p1 = s[0.0].softmax(-1)[:, :, 0], s[1.0].softmax(-1)[:, :, 0]
    pos = s[0.0][:, :, 0] > 1e-3
    assert pos[:, 1:].any() and torch.all(p1[:, 1:][pos[:, 1:]] > p0[:, 1:][pos[:, 1:]])
    torch.testing.assert_close(p1[:, 0], p0[:, 0])
    gain = torch.log(p1 / p0) / s[0.0][:, :, 0].clamp(min=1e-3)   # per unit logit: grows with j
    assert torch.all(gain[pos.all(1)].mean(0).diff() > 0)


def test_sixteen_frames_dispatch_by_name(bb, prompt, monkeypatch):
    """Official shape dispatch misroutes the mid block's 4x4 = 16-token spatial attention at 16 frames."""
    seen = []
    real_call = FSA.FlipSketchProcessor.__call__

    def spy(self, attn, hidden_states, *a, **kw):
        seen.append((self.role, self.store.mode, tuple(hidden_states.shape)))
        return real_call(self, attn, hidden_states, *a, **kw)

    monkeypatch.setattr(FSA.FlipSketchProcessor, "__call__", spy)
    lat = FS.flipsketch_sample(bb, prompt, _x((1, 4, 1, 8, 8)), attention=FS.FlipSketchAttention(tau2=0),
                               frames=16, steps=1)
    assert lat.shape == (1, 4, 16, 8, 8) and torch.isfinite(lat).all()
    names = {r.name for r, _, _ in seen}
    assert len(names) == 4 + 5                     # every spatial and temporal attn1, nothing else
    for role, _, _ in seen:
        assert role == attention_role(role.name, None)
    mid = [(m, s) for r, m, s in seen if r.name == "mid_block.attentions.0.transformer_blocks.0.attn1"]
    assert [m for m, _ in mid] == ["save", "use"]
    assert mid[1][1] == (2 * 16, 16, 64)           # 16 frames x 16 tokens: the shape the official code mistakes
    assert next(r for r, _, _ in seen if r.name.startswith("mid_block.attentions")).kind == "spatial"


def test_frame_alignment_lowers_its_loss_and_chunks_exactly(bb, prompt):
    lat, ref = _x((2, 4, 3, 8, 8)), _x((1, 4, 1, 8, 8), 1)
    t = torch.tensor(941)
    with torch.no_grad():
        target = bb.unet(ref, t, encoder_hidden_states=null_embeds(bb)).sample
    opts = FS.FrameAlign(iters=3, lr=0.05, official_quirks=False, chunk=2)
    out, losses = FS.align_frames(bb.unet, lat, ref, target, t, prompt, opts)
    assert losses[-1] < losses[0], losses
    torch.testing.assert_close(out[:, :, :1], ref.expand(2, -1, -1, -1, -1))
    assert (out[:, :, 1:] - lat[:, :, 1:]).abs().max() > 0
    out1, losses1 = FS.align_frames(bb.unet, lat, ref, target, t, prompt, FS.FrameAlign(iters=3, lr=0.05,
                                                                                        official_quirks=False, chunk=1))
    torch.testing.assert_close(out1, out, rtol=1e-4, atol=1e-5)
    quirk, _ = FS.align_frames(bb.unet, lat, ref, target, t, prompt, FS.FrameAlign(iters=3, lr=0.05, chunk=2))
    assert (quirk - out).abs().max() > 0           # the official result is one update behind


def _official():
    spec = importlib.util.spec_from_file_location("flipsketch_official", os.path.join(ROOT, "benchmarks",
                                                                                      "flipsketch_official.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_matches_official_torch113_semantics(bb, prompt):
    """Our name-keyed composition and batched loop reproduce the official algorithm (one seed per call,
    classic processors, shape-dispatched scores, the reference's uncond pass, alignment with its quirks)
    while spending fewer UNet frame-passes (a forward over one frame counts 1)."""
    official = _official()
    x_r, null = _x((1, 4, 1, 8, 8), 7), null_embeds(bb)
    m, steps, tau2, tau1, iters = 3, 2, 1, 0, 0    # alignment: compared step-wise below
    kw = dict(frames=m, steps=steps, guidance=9.0)
    counts = []
    hook = bb.unet.register_forward_pre_hook(lambda mod, a: counts.append(a[0].shape[0] * a[0].shape[2]))
    try:
        want = torch.cat([official.official_sample(bb.unet, bb.scheduler_config, x_r, prompt, null, null, seed=s,
                                                   lam=0.5, tau2=tau2, tau1=tau1, iters=iters, **kw) for s in (3, 4)])
        n_official, counts[:] = sum(counts), []
        got = FS.flipsketch_sample(bb, prompt, x_r, attention=FS.FlipSketchAttention(tau2=tau2),
                                   align=FS.FrameAlign(tau1=tau1, iters=iters), seeds=2, seed=3, **kw)
        n_ours = sum(counts)
    finally:
        hook.remove()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-4)
    refs = [max(1, m - i) for i in range(steps)]            # reference copies per step: 3, 2
    align = tau1 * iters * m                                 # alignment forwards per seed
    assert n_official == 2 * (steps * 2 * m + sum(refs) + sum(refs[:tau2 + 1]) + tau1 + align)
    assert n_ours == 2 * (steps * 2 * m + align) + sum(refs[:tau2 + 1]) + tau1   # reference shared, no uncond
    plain = FS.flipsketch_sample(bb, prompt, x_r, attention=None, seeds=1, seed=3, **kw)
    assert (plain - want[:1]).abs().max() > 1e-2


def test_alignment_matches_official(bb, prompt):
    official = _official()
    lat, ref, null, t = _x((1, 4, 3, 8, 8), 1), _x((1, 4, 2, 8, 8), 2), null_embeds(bb), torch.tensor(961)
    want = official._optimize_latents(bb.unet, lat, ref, t, prompt, null, 3, 1e-2)
    with torch.no_grad():
        target = bb.unet(ref[:, :, :1], t, encoder_hidden_states=null).sample
    got, _ = FS.align_frames(bb.unet, lat, ref[:, :, :1], target, t, prompt, FS.FrameAlign(iters=3, lr=1e-2))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert (got[:, :, 1:] - lat[:, :, 1:]).abs().max() > 1e-3


class _Cancel(Exception):
    pass


def _unet_calls(unet):
    calls = []
    return calls, unet.register_forward_pre_hook(lambda mod, a: calls.append(1))


def test_cancel_inside_frame_alignment_stops_at_once_and_unpatches(bb, prompt):
    """A cancel raised by ``check`` in the 2nd Adam iteration of step 0 stops the sampler there: no UNet
    call after it, no step reported, and every attention processor is back as it was."""
    procs = {n: m.processor for n, (m, _) in attention_modules(bb.unet).items()}
    polls, at_raise, steps_done = [], [], []
    calls, hook = _unet_calls(bb.unet)

    def check():
        polls.append(1)
        if len(polls) == 4:       # polls: reference pass, 1-frame target, Adam iteration 1, Adam iteration 2
            at_raise.append(len(calls))
            raise _Cancel

    try:
        with pytest.raises(_Cancel):
            FS.flipsketch_sample(bb, prompt, _x((1, 4, 1, 8, 8)), attention=FS.FlipSketchAttention(tau2=1),
                                 align=FS.FrameAlign(tau1=1, iters=50), frames=3, steps=2, check=check,
                                 callback=lambda i, n: steps_done.append(i))
    finally:
        hook.remove()
    assert at_raise == [3] and len(calls) == 3 and steps_done == []
    assert {n: m.processor for n, (m, _) in attention_modules(bb.unet).items()} == procs
    assert not any(isinstance(p, FSA.FlipSketchProcessor) for p in procs.values())


def test_sampler_seeds_chunks_and_negative(bb, prompt):
    x_r = _x((1, 4, 1, 8, 8), 2)
    kw = dict(attention=FS.FlipSketchAttention(tau2=0), frames=3, steps=1)
    a = FS.flipsketch_sample(bb, prompt, x_r, seeds=2, seed=5, **kw)
    b = FS.flipsketch_sample(bb, prompt, x_r, seeds=2, seed=5, seed_chunk=1, **kw)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (a[0] - a[1]).abs().max() > 1e-2
    neg = FS.flipsketch_sample(bb, prompt, x_r, negative=encode_text(bb, "blurry"), seeds=1, seed=6, **kw)
    assert (neg - a[1:]).abs().max() > 1e-3
    single = FS.flipsketch_sample(bb, prompt, x_r, seeds=1, seed=6, frames=3, steps=1,
                                  attention=FS.FlipSketchAttention(tau2=0, reference="single"))
    assert (single - a[1:]).abs().max() > 0 and torch.isfinite(single).all()


def test_bad_inputs(bb, prompt):
    with pytest.raises(FlipbookInputError, match="reference"):
        FS.flipsketch_sample(bb, prompt, _x((2, 4, 1, 8, 8)))
    with pytest.raises(FlipbookInputError, match="reference"):
        FS.flipsketch_sample(bb, prompt, _x((1, 3, 1, 8, 8)))
    with pytest.raises(FlipbookInputError, match="positive"):
        FS.flipsketch_sample(bb, torch.zeros(1, 77, 5), _x((1, 4, 1, 8, 8)))
    with pytest.raises(FlipbookInputError, match="frames"):
        FS.flipsketch_sample(bb, prompt, _x((1, 4, 1, 8, 8)), frames=1)
    with pytest.raises(FlipbookInputError, match="copies"):
        FS.FlipSketchAttention(copies="many")
    with pytest.raises(FlipbookInputError, match="lambda"):
        FS.FlipSketchAttention(lam=float("nan"))


def test_the_patched_model_samples_exactly_as_the_attention_input_did(bb, prompt):
    """Patches ride on the model: sampling a model that carries the composition equals, bit for bit,
    the older route (an unpatched model and the settings wired into the sampler); a wired attention
    takes the place of the one the model carries."""
    x_r = _x((1, 4, 1, 8, 8), 3)
    attn = FS.FlipSketchAttention(lam=0.7, tau2=1)
    kw = dict(align=FS.FrameAlign(tau1=1, iters=1), frames=3, steps=2, seeds=2, seed=4)
    legacy = FS.flipsketch_sample(bb, prompt, x_r, attention=attn, **kw)
    carried = FS.flipsketch_sample(bb.with_patches(attn), prompt, x_r, **kw)
    assert torch.equal(carried, legacy)
    replaced = FS.flipsketch_sample(bb.with_patches(FS.FlipSketchAttention(lam=0.0, tau2=0)), prompt, x_r,
                                    attention=attn, **kw)
    assert torch.equal(replaced, legacy)
    plain = FS.flipsketch_sample(bb, prompt, x_r, **kw)
    assert (plain - legacy).abs().max() > 1e-3


def test_the_attention_node_leaves_its_input_model_unpatched(inference):
    from comfyui_flipbook.nodes.diffusion import FlipbookTinyT2V
    from comfyui_flipbook.nodes.flipsketch import FlipbookFlipSketchAttention

    (model,) = FlipbookTinyT2V().build(0, "2")
    procs = {n: m.processor for n, (m, _) in attention_modules(model.unet).items()}
    attn, patched_model = FlipbookFlipSketchAttention().make(0.5, 15, "shrinking", True, True, "copies", model)
    assert model.patches == () and patched_model.patches == (attn,)
    assert patched_model is not model and patched_model.unet is model.unet
    assert {n: m.processor for n, (m, _) in attention_modules(model.unet).items()} == procs   # nothing installed yet
    _, again = FlipbookFlipSketchAttention().make(0.1, 15, "shrinking", True, True, "copies", patched_model)
    assert again.patches[0].lam == 0.1 and len(again.patches) == 1 and patched_model.patches == (attn,)
    assert FlipbookFlipSketchAttention().make(0.5, 15, "shrinking", True, True, "copies")[1] is None


def test_binarise_sketch():
    img = torch.full((2, 8, 8, 3), 0.9)
    img[:, 2:4, 2:6] = 0.1
    out = FS.binarise_sketch(img)
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert out[0, 3, 3, 0] == 0 and out[0, 0, 0, 0] == 1
    torch.testing.assert_close(FS.binarise_sketch(img, invert=True), 1 - out)
    assert FS.binarise_sketch(img, size=16).shape == (2, 16, 16, 3)


def test_nodes_under_inference_mode(inference):
    from comfyui_flipbook.nodes.diffusion import FlipbookDDIMInvert, FlipbookTextEncode, FlipbookTinyT2V
    from comfyui_flipbook.nodes.flipsketch import (FlipbookFlipSketchAlign, FlipbookFlipSketchAttention,
                                                   FlipbookFlipSketchSampler)

    (model,) = FlipbookTinyT2V().build(0, "2")
    (pos,) = FlipbookTextEncode().encode(model, "a cat is walking")
    img = torch.ones(1, 16, 16, 3)
    img[:, 4:12, 6:8] = 0
    noise, _ = FlipbookDDIMInvert().invert(model, img, 2, 1.0, 2, "mean_frames", "0_1", "sample", 0, 0)
    (attn, patched_model) = FlipbookFlipSketchAttention().make(0.5, 1, "shrinking", True, True, "copies", model)
    (align,) = FlipbookFlipSketchAlign().make(True, 1, 2, 1e-3, True, 1)
    sampler = FlipbookFlipSketchSampler()
    (lat,) = sampler.sample(patched_model, pos, noise, 3, 1, 9.0, 1, 0, 0, True, align=align)
    (off,) = sampler.sample(patched_model, pos, noise, 3, 1, 9.0, 1, 0, 0, False, align=align)
    assert lat["samples"].shape == (1, 4, 3, 8, 8) and (lat["samples"] - off["samples"]).abs().max() > 0
    with pytest.raises(FlipbookInputError, match="attention"):
        sampler.sample(model, pos, noise, 3, 2, 9.0, 1, 0, 0, False, attention="nope")


def test_sampler_node_holds_the_compute_device_only_while_it_runs(inference, monkeypatch):
    """Backbone parts sit on the offload device between nodes, on the compute device while a node runs,
    and go back after a cancel in the middle of frame alignment, with the attention patches removed."""
    from comfyui_flipbook.nodes import _comfy
    from comfyui_flipbook.nodes import flipsketch as NF
    from comfyui_flipbook.nodes.diffusion import FlipbookTextEncode, FlipbookTinyT2V

    compute, offload = torch.device("cpu"), torch.device("cpu")   # two objects: the spies tell them apart
    monkeypatch.setattr(_comfy, "torch_device", lambda: compute)
    monkeypatch.setattr(_comfy, "offload_device", lambda: offload)
    (model,) = FlipbookTinyT2V().build(0, "2")
    where = {}
    for name in ("unet", "vae", "text_encoder"):
        def spy(device, _real=getattr(model, name).to, _name=name):
            where[_name] = "compute" if device is compute else "offload" if device is offload else device
            return _real(device)
        getattr(model, name).to = spy
    during = []
    calls, hook = _unet_calls(model.unet)
    model.unet.register_forward_pre_hook(lambda mod, a: during.append(dict(where)))
    procs = {n: m.processor for n, (m, _) in attention_modules(model.unet).items()}
    try:
        (pos,) = FlipbookTextEncode().encode(model, "a cat")
        assert where == {"text_encoder": "offload"} and not during
        (attn, _) = NF.FlipbookFlipSketchAttention().make(0.5, 1, "shrinking", True, True, "copies")
        (align,) = NF.FlipbookFlipSketchAlign().make(True, 1, 50, 1e-3, True, 1)
        ref = {"samples": _x((1, 4, 1, 8, 8))}
        sampler = NF.FlipbookFlipSketchSampler()
        (lat,) = sampler.sample(model, pos, ref, 3, 1, 9.0, 1, 0, 0, False, attention=attn)
        assert during and all(d == {"unet": "compute", "text_encoder": "compute"} for d in during)
        assert where == {"unet": "offload", "text_encoder": "offload"} and torch.isfinite(lat["samples"]).all()
        polls = []

        def cancel():
            polls.append(1)
            if len(polls) == 4:    # the 2nd Adam iteration of step 0 (see the pipeline test above)
                raise _Cancel

        monkeypatch.setattr(NF, "check_interrupted", cancel)
        calls.clear()
        with pytest.raises(_Cancel):
            sampler.sample(model, pos, ref, 3, 2, 9.0, 1, 0, 0, True, attention=attn, align=align)
    finally:
        hook.remove()
    assert len(calls) == 3 and where == {"unet": "offload", "text_encoder": "offload"}
    assert {n: m.processor for n, (m, _) in attention_modules(model.unet).items()} == procs


def _run_api_workflow(wf, overrides, out_dir):
    """A minimal executor for an API-format workflow: our nodes, plus LoadImage/SaveAnimatedWEBP
    stand-ins that read the pack's assets folder and write a real animated WebP."""
    import numpy as np
    from PIL import Image

    from comfyui_flipbook import NODE_CLASS_MAPPINGS

    results, saved = {}, []

    def run(nid):
        if nid in results:
            return results[nid]
        node = wf[nid]
        inputs = {**node["inputs"], **overrides.get(nid, {})}
        for k, v in inputs.items():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                inputs[k] = run(v[0])[v[1]]
        if node["class_type"] == "LoadImage":
            arr = np.asarray(Image.open(os.path.join(ROOT, "assets", inputs["image"])).convert("RGB"))
            img = torch.from_numpy(arr.astype(np.float32) / 255)[None]
            out = (img, torch.zeros(img.shape[:3]))
        elif node["class_type"] == "SaveAnimatedWEBP":
            frames = [Image.fromarray((f.numpy() * 255).astype(np.uint8)) for f in inputs["images"]]
            path = os.path.join(out_dir, inputs["filename_prefix"] + ".webp")
            frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / inputs["fps"]),
                           lossless=inputs["lossless"], quality=inputs["quality"])
            saved.append(path)
            out = ()
        else:
            cls = NODE_CLASS_MAPPINGS[node["class_type"]]
            out = getattr(cls(), cls.FUNCTION)(**inputs)
        results[nid] = out
        return out

    for nid in wf:
        run(nid)
    return results, saved


def test_shipped_workflow_runs_on_tiny_models(tmp_path, monkeypatch, inference):
    """workflows/api/flipsketch.json through the real loader on `make-test-models` output; a few
    widget values shortened for the CI budget (the real-ComfyUI test runs the file unchanged)."""
    import json

    from PIL import Image

    from comfyui_flipbook.cli import make_test_models

    monkeypatch.setenv("FLIPBOOK_MODELS_DIR", str(tmp_path / "models"))
    make_test_models(str(tmp_path / "models"))
    with open(os.path.join(ROOT, "workflows", "api", "flipsketch.json")) as f:
        wf = json.load(f)
    short = {"4": {"steps": 3}, "5": {"tau2": 1}, "6": {"tau1": 1, "iterations": 2}, "7": {"frames": 3, "steps": 3}}
    results, saved = _run_api_workflow(wf, short, str(tmp_path))
    assert results["4"][0]["samples"].shape == (1, 4, 1, 8, 8)      # 256-pixel sketch, x32 tiny VAE
    frames = results["9"][0]
    assert frames.shape == (3, 256, 256, 3) and set(frames.unique().tolist()) <= {0.0, 1.0}
    with Image.open(saved[0]) as im:
        assert im.n_frames == 3


def test_ui_workflow_matches_api_twin():
    import json

    from comfyui_flipbook import NODE_CLASS_MAPPINGS

    with open(os.path.join(ROOT, "workflows", "flipsketch.json")) as f:
        ui = json.load(f)
    with open(os.path.join(ROOT, "workflows", "api", "flipsketch.json")) as f:
        api = json.load(f)
    assert {str(n["id"]) for n in ui["nodes"]} == set(api)
    for node in ui["nodes"]:
        cls = NODE_CLASS_MAPPINGS.get(node["type"])
        if cls is None:
            continue
        spec = cls.INPUT_TYPES()
        widgets = [k for part in ("required", "optional") for k, v in spec.get(part, {}).items()
                   if isinstance(v[0], list) or v[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")]
        want = []
        for k in widgets:
            want.append(api[str(node["id"])]["inputs"][k])
            if k == "seed":
                want.append("fixed")
        assert node["widgets_values"] == want, node["type"]
        for link in node["inputs"]:
            src = api[str(node["id"])]["inputs"][link["name"]]
            lk = next(lk for lk in ui["links"] if lk[0] == link["link"])
            assert [str(lk[1]), lk[2]] == src

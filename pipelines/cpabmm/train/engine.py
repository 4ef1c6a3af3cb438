"""The CPABMM training engine (spec cpab.md §2.4; C:train.py, C:modules/model.py), written for this pack.

``train(config, data, out)`` runs the release's recipe: Adam (betas 0.5/0.999, weight decay 1e-4)
over keypoint detector + dense motion + inpainting, a separate Adam for the background predictor,
MultiStepLR per epoch, ∞-norm gradient clipping at 10, transform dropout and ``bg_start`` as in the
configs. The CPAB fits use the pack's autograd-free CPAB (:func:`..pipeline.fit_cpab_grids`); the
keypoints are detached there as in the release, so their dense grids carry no gradient (spec §2.1).

Determinism: every random draw (frame choice, augmentation, TPS, dropout) comes from a per-sample
seed (seed, epoch, position in the global batch order), so a run resumes bit for bit from its state
file, and under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU) N processes with
global batch B compute what one process computes with B split in N micro-batches
(``accumulate=N``): batch-norm statistics are per device in both.

Files in ``out``: ``cpabmm-<name>.safetensors`` (the CPABMM Loader's format, config inside),
``cpabmm-<name>.state.pt`` (optimisers, schedulers, step: for resume; plain tensors and numbers,
read with weights_only=True), ``checkpoints/<epoch>-cpabmm.safetensors`` every ``checkpoint_freq``
epochs, ``log.csv`` (and TensorBoard events with ``tensorboard=True``).
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from ...errors import FlipbookInputError, fail
from ..model import CPABMM, read_checkpoint, save_safetensors
from ..pipeline import background_grid, fit_cpab_grids
from .configs import dropout_p, train_config
from .data import FramesDataset, PairLoader, Repeated
from .losses import (PerceptualLoss, RandomTPS, StructureLoss, bg_cycle_loss, equivariance_loss, load_dino,
                     load_vgg19, sam_extractor, sample_generators, warp_loss)
from .synthetic import SyntheticMotion

FIT_SECONDS = [0.0]            # time spent in the CPAB fits (benchmarks/cpabmm_train.py reads it)


class TrainingModel(nn.Module):
    """CPABMM's networks plus the losses: ``forward(source, driving, seeds, epoch) -> (losses, out)``
    (C:modules/model.py GeneratorFullModel). One module, so DDP wraps everything that is trained."""

    def __init__(self, model: CPABMM, train: dict, *, vgg=None, structure=None, semantic=None):
        super().__init__()
        self.model = model
        self.train_params = train
        w = train["loss_weights"]
        self.weights = w
        self.perceptual = PerceptualLoss(train["scales"], w["perceptual"], vgg) if sum(w["perceptual"]) else None
        self.structure = structure
        self.semantic = semantic

    def forward(self, source, driving, seeds, epoch: int):
        m, tp, w = self.model, self.train_params, self.weights
        cfg = m.config
        bs = source.shape[0]
        kp_s = m.kp_detector(source)["fg_kp"]
        kp_d = m.kp_detector(driving)["fg_kp"]
        use_bg = m.bg_predictor is not None and epoch >= tp["bg_start"]
        bg = m.bg_predictor(source, driving) if use_bg else None
        dense_net = m.dense_motion_network
        src_small = dense_net.downsample(source)
        size = tuple(src_small.shape[2:])
        t0 = time.perf_counter()
        with torch.no_grad():            # keypoints detached as in the release (spec §2.1)
            grids = fit_cpab_grids(kp_s.detach().cpu(), kp_d.detach().cpu(), size, num_cpab=m.num_cpab,
                                   max_iter=int(cfg["max_iter"]), global_factor=cfg["global_iter_factor"],
                                   nsteps=cfg["nsteps"], lr=cfg["lr"], partial_cells=cfg["partial_cells"],
                                   global_cells=cfg["global_cells"]).to(source.device, source.dtype)
        FIT_SECONDS[0] += time.perf_counter() - t0
        grids = torch.cat([background_grid(bs, size, bg).to(source.device, source.dtype), grids], 1)
        p = dropout_p(tp, epoch)
        keep = None
        if epoch < tp["dropout_epoch"]:
            n = grids.shape[1]
            keep = torch.stack([(torch.rand(n, generator=g) < 1 - p).float() for g in sample_generators(seeds, 29)])
            keep[:, 0] = 1.0
            keep = keep.to(source.device)
        dense = dense_net(src_small, kp_d, kp_s, grids, keep=keep)
        out = m.inpainting_network(source, dense, warped_maps=bool(w["warp_loss"]))
        losses = {}
        if self.perceptual is not None:
            losses["perceptual"] = self.perceptual(out["prediction"], driving)
        if w["equivariance_value"]:
            tps = RandomTPS(seeds, device=source.device, dtype=source.dtype, **tp["transform_params"])
            losses["equivariance_value"] = w["equivariance_value"] * equivariance_loss(m.kp_detector, driving, kp_d, tps)
        if w["warp_loss"]:
            enc = m.inpainting_network.get_encode(driving, dense["occlusion_map"])
            losses["warp_loss"] = w["warp_loss"] * warp_loss(enc, out["warped_encoder_maps"])
        if use_bg and w["bg"]:
            losses["bg"] = w["bg"] * bg_cycle_loss(bg, m.bg_predictor(driving, source))
        if self.structure is not None and w.get("structure", 0):
            losses["structure"] = w["structure"] * self.structure(out["prediction"], driving)
        if self.semantic is not None and w.get("sam", 0):
            losses["sam"] = w["sam"] * self.semantic(source, driving, kp_s, kp_d)
        out.update(kp_source=kp_s, kp_driving=kp_d)
        return losses, out


def build_dataset(cfg: dict, data: str, *, is_train: bool = True):
    """``data``: a dataset folder (FOMM layouts) or ``"synthetic"`` (:class:`.synthetic.SyntheticMotion`)."""
    ds = cfg["dataset"]
    size = int(cfg["model"]["size"])
    if data == "synthetic":
        return SyntheticMotion(int(ds.get("synthetic_clips", 2000)) if is_train else int(ds.get("heldout_clips", 32)),
                               size=size, held_out=not is_train)
    shape = ds.get("frame_shape") or (size, size, 3)
    return FramesDataset(data, frame_shape=shape, is_train=is_train, id_sampling=ds.get("id_sampling", False),
                         augmentation_params=ds.get("augmentation_params"))


@dataclass
class TrainOptions:
    steps: int = 0                    # stop after this many optimiser steps (0: the config's epochs)
    epochs: int = 0                   # override num_epochs
    batch_size: int = 0               # global batch (0: the config's)
    accumulate: int = 1               # micro-batches per step per process
    seed: int = 0
    checkpoint_every: int = 0         # also save every this many steps (0: per epoch only)
    workers: int = -1                 # DataLoader workers (-1: the config's; 0 in tests)
    device: str = "auto"
    vgg19: str | None = None
    dino: str | None = None
    sam: str | None = None
    tensorboard: bool = False
    progress: bool = True
    resume: bool = True
    name: str = ""
    overrides: dict = field(default_factory=dict)   # merged into the config's "train"


def _seed_of(seed: int, epoch: int, position: int) -> int:
    return (seed * 1_000_000_007 + epoch * 1_000_003 + position) % (2 ** 62)


def _distributed():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _sched_state(s) -> dict:
    st = s.state_dict()
    st["milestones"] = {int(k): int(v) for k, v in st["milestones"].items()}
    return st


def _load_sched(s, st: dict) -> None:
    st = dict(st)
    st["milestones"] = Counter({int(k): int(v) for k, v in st["milestones"].items()})
    s.load_state_dict(st)


def train(config, data: str, out: str, options: TrainOptions | None = None, callback=None, **kw) -> dict:
    """Train CPABMM; returns a summary (paths, steps, last losses). ``callback(step, total, losses)``."""
    opt = options or TrainOptions(**kw)
    cfg = train_config(config)
    if opt.overrides:
        cfg["train"].update(opt.overrides)
    tp = cfg["train"]
    name = opt.name or (config if isinstance(config, str) else cfg["model"].get("preset", "custom"))
    world, rank, local = _distributed()
    if opt.device == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(opt.device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    batch = int(opt.batch_size or tp["batch_size"])
    if batch % (world * opt.accumulate):
        fail("batch_size", f"a multiple of processes × accumulate ({world} × {opt.accumulate})", str(batch))
    micro = batch // (world * opt.accumulate)
    dataset = Repeated(build_dataset(cfg, data), int(tp["num_repeats"]))
    steps_per_epoch = len(dataset) // batch
    if steps_per_epoch < 1:
        fail("batch_size", f"at most the dataset's {len(dataset)} items × num_repeats", str(batch))
    epochs = int(opt.epochs or tp["num_epochs"])
    total = int(opt.steps) if opt.steps else epochs * steps_per_epoch

    # Model, optimisers, schedules (C:train.py)
    torch.manual_seed(opt.seed)
    model = CPABMM(cfg["model"], with_avd=False).to(device).train()
    vgg = load_vgg19(opt.vgg19).to(device) if opt.vgg19 else None
    structure = StructureLoss(load_dino(opt.dino)).to(device) if opt.dino else None
    semantic = sam_extractor(opt.sam).to(device) if opt.sam else None
    net = TrainingModel(model, tp, vgg=vgg, structure=structure, semantic=semantic).to(device)
    lr = float(tp["lr_generator"])
    main_params = [*model.inpainting_network.parameters(), *model.dense_motion_network.parameters(),
                   *model.kp_detector.parameters()]
    adam = dict(lr=lr, betas=tuple(tp["betas"]), weight_decay=float(tp["weight_decay"]))
    optimizer = torch.optim.Adam([{"params": main_params, "initial_lr": lr}], **adam)
    optimizer_bg = torch.optim.Adam([{"params": list(model.bg_predictor.parameters()), "initial_lr": lr}], **adam) \
        if model.bg_predictor is not None else None
    ms = [int(m) for m in tp["epoch_milestones"]]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, ms, gamma=float(tp["gamma"]))
    scheduler_bg = torch.optim.lr_scheduler.MultiStepLR(optimizer_bg, ms, gamma=float(tp["gamma"])) \
        if optimizer_bg is not None else None

    os.makedirs(out, exist_ok=True)
    weights_path = os.path.join(out, f"cpabmm-{name}.safetensors")
    state_path = os.path.join(out, f"cpabmm-{name}.state.pt")
    step = 0
    if opt.resume and os.path.exists(state_path) and os.path.exists(weights_path):
        step = _resume(model, optimizer, optimizer_bg, scheduler, scheduler_bg, weights_path, state_path, batch,
                       opt.seed)
    ddp = None
    if world > 1:
        ddp = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                                  find_unused_parameters=True)
    runner = ddp or net

    def save(epoch_done: int | None):
        if rank != 0:
            return
        save_safetensors(model, weights_path + ".part", {"cpabmm_train_step": str(step)})
        state = {"step": torch.tensor(step), "seed": torch.tensor(opt.seed), "global_batch": torch.tensor(batch),
                 "optimizer": optimizer.state_dict(), "scheduler": _sched_state(scheduler)}
        if optimizer_bg is not None:
            state.update(optimizer_bg=optimizer_bg.state_dict(), scheduler_bg=_sched_state(scheduler_bg))
        torch.save(state, state_path + ".part")
        os.replace(weights_path + ".part", weights_path)       # both written first: a stop leaves a pair
        os.replace(state_path + ".part", state_path)
        if epoch_done is not None and (epoch_done + 1) % max(1, int(tp["checkpoint_freq"])) == 0:
            save_safetensors(model, os.path.join(out, "checkpoints", f"{epoch_done:08d}-cpabmm.safetensors"))

    log = _Log(out, opt.tensorboard, step) if rank == 0 else None
    bar = _bar(total, step, opt.progress and rank == 0)
    workers = int(tp["dataloader_workers"] if opt.workers < 0 else opt.workers)
    loader_ds = PairLoader(dataset)
    last: dict = {}
    clip = float(tp["clip_norm"])
    try:
        while step < total:
            epoch, pos = divmod(step, steps_per_epoch)
            perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(opt.seed * 7_777 + epoch))
            batches = []
            for k in range(pos, steps_per_epoch):
                for a in range(opt.accumulate):
                    lo = k * batch + rank * (batch // world) + a * micro
                    batches.append([(int(perm[j]), _seed_of(opt.seed, epoch, j)) for j in range(lo, lo + micro)])
            loader = torch.utils.data.DataLoader(loader_ds, batch_sampler=batches, num_workers=workers,
                                                 persistent_workers=False)
            it = iter(loader)
            for k in range(pos, steps_per_epoch):
                if step >= total:
                    break
                sums: dict = {}
                use_bg = optimizer_bg is not None and epoch >= tp["bg_start"]
                for a in range(opt.accumulate):
                    x = next(it)
                    sync = ddp.no_sync() if (ddp is not None and a < opt.accumulate - 1) else contextlib.nullcontext()
                    with sync:
                        losses, _ = runner(x["source"].to(device), x["driving"].to(device), x["seed"], epoch)
                        loss = sum(losses.values()) / opt.accumulate
                        if not torch.isfinite(loss):
                            raise FlipbookInputError(f"training: expected finite losses, got {_floats(losses)} at "
                                                     f"step {step}; lower the learning rate or check the data")
                        loss.backward()
                    for key, v in losses.items():
                        sums[key] = sums.get(key, 0.0) + float(v.detach()) / opt.accumulate
                torch.nn.utils.clip_grad_norm_(model.kp_detector.parameters(), clip, norm_type=math.inf)
                torch.nn.utils.clip_grad_norm_(model.dense_motion_network.parameters(), clip, norm_type=math.inf)
                if use_bg:
                    torch.nn.utils.clip_grad_norm_(model.bg_predictor.parameters(), clip, norm_type=math.inf)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if use_bg:
                    optimizer_bg.step()
                    optimizer_bg.zero_grad(set_to_none=True)
                elif optimizer_bg is not None:
                    optimizer_bg.zero_grad(set_to_none=True)
                step += 1
                last = {**sums, "loss": sum(sums.values())}
                if log is not None:
                    log.write(step, epoch, optimizer.param_groups[0]["lr"], last)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['loss']:.4f}", epoch=epoch)
                if callback is not None:
                    callback(step, total, last)
                epoch_end = step % steps_per_epoch == 0
                if epoch_end:
                    scheduler.step()
                    if scheduler_bg is not None:
                        with warnings.catch_warnings():     # before bg_start its optimiser has not stepped
                            warnings.simplefilter("ignore", UserWarning)
                            scheduler_bg.step()
                if epoch_end or (opt.checkpoint_every and step % opt.checkpoint_every == 0) or step == total:
                    save(epoch if epoch_end else None)
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
    return {"weights": weights_path, "state": state_path, "steps": step, "losses": last,
            "perceptual": net.perceptual.kind if net.perceptual is not None else "off",
            "steps_per_epoch": steps_per_epoch, "world_size": world}


def _floats(d):
    return {k: round(float(v), 5) for k, v in d.items()}


def _resume(model, optimizer, optimizer_bg, scheduler, scheduler_bg, weights_path, state_path, batch, seed) -> int:
    sds, _ = read_checkpoint(weights_path)
    for name, sd in sds.items():
        module = getattr(model, name, None)
        if module is not None:
            try:
                module.load_state_dict(sd, strict=True)
            except RuntimeError as exc:
                raise FlipbookInputError(f"resume: expected {weights_path!r} to come from the same config; its "
                                         f"{name} does not fit ({str(exc)[:200]}); use another --out or "
                                         "--no-resume") from None
    try:
        st = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FlipbookInputError(f"resume: expected a training state file read with weights_only=True, "
                                 f"got {state_path!r}: {str(exc)[:200]}") from None
    if int(st["global_batch"]) != batch or int(st["seed"]) != seed:
        fail("resume", f"the same global batch and seed as the run in {os.path.dirname(state_path)!r} "
                       f"(batch {int(st['global_batch'])}, seed {int(st['seed'])})", f"batch {batch}, seed {seed}")
    from safetensors import safe_open

    with safe_open(weights_path, framework="pt") as fh:
        written = (fh.metadata() or {}).get("cpabmm_train_step")
    if written is not None and int(written) != int(st["step"]):
        fail("resume", f"weights and training state of the same step in {os.path.dirname(state_path)!r}",
             f"weights of step {written}, state of step {int(st['step'])}")
    optimizer.load_state_dict(st["optimizer"])
    _load_sched(scheduler, st["scheduler"])
    if optimizer_bg is not None and "optimizer_bg" in st:
        optimizer_bg.load_state_dict(st["optimizer_bg"])
        _load_sched(scheduler_bg, st["scheduler_bg"])
    return int(st["step"])


def _bar(total, initial, on):
    if not on:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc="CPABMM training", unit="step")


class _Log:
    """log.csv (always) and TensorBoard scalars (optional dependency)."""

    def __init__(self, out, tensorboard, step: int = 0):
        path = os.path.join(out, "log.csv")
        if os.path.exists(path):          # a resumed run drops the rows after its saved step
            with open(path, newline="") as fh:
                rows = list(csv.reader(fh))
            keep = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step] if step else []
            with open(path, "w", newline="") as fh:
                csv.writer(fh).writerows(keep)
        self.fh = open(path, "a", newline="")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise FlipbookInputError("tensorboard: expected the optional package tensorboard "
                                         "(pip install tensorboard), got it missing") from None
            self.writer = SummaryWriter(os.path.join(out, "tensorboard"))

    COLUMNS = ("step", "epoch", "lr", "perceptual", "equivariance_value", "warp_loss", "bg", "structure", "sam",
               "loss")      # fixed, so rows of every phase (bg_start, optional losses) line up

    def write(self, step, epoch, lr, losses):
        row = {"step": step, "epoch": epoch, "lr": lr, **{k: round(v, 6) for k, v in losses.items()}}
        if self.fh.tell() == 0:
            csv.writer(self.fh).writerow(self.COLUMNS)
        csv.writer(self.fh).writerow([row.get(k, "") for k in self.COLUMNS])
        self.fh.flush()
        if self.writer is not None:
            for k, v in losses.items():
                self.writer.add_scalar(f"loss/{k}", v, step)
            self.writer.add_scalar("lr", lr, step)

    def close(self):
        self.fh.close()
        if self.writer is not None:
            self.writer.close()

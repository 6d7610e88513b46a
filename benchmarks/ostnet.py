"""OSTNet's scale transformation on the synthetic heads, where the renderer knows every landmark (and so the scale).

Three figures, printed as tables (and written as JSON with ``--out``):

(a) **rectification**: each held-out driving frame is zoomed by a known factor (0.7 ... 1.4, around its face centre);
    the trained ``ostnet/small``'s scale transformation rectifies it.  The scale of a frame is the RMS distance of the
    renderer's 22 landmarks from their mean; the error is ``|log(scale / source scale)|``.  "no module" is the zoomed
    frame itself, "rectified" its landmarks moved by the module's thin-plate spline (the warp the rectified image is
    sampled with), "unzoomed" the floor (the video's own scale change between the two frames).
(b) **cross-scale reenactment**: the source is frame 0 of a held-out video and the driving frame another frame of it,
    zoomed as in (a); the expected output is the unzoomed frame.  Landmark error (pixels at ``--size``) of
    the output against the renderer's landmarks of the unzoomed frame, for ``ostnet/small`` and for the same recipe
    without the module (``ScaleRectifiedMotion`` replaced by its ``FirstOrderMotion``, no scale code, no
    rectification loss), trained with the same augmentation, data, budget and seed.
(c) **no anchor frame**: the source is frame 0 of one held-out video, the driving video another held-out video whose
    frames are zoomed by ``--big`` (a much larger face).  ``thkit``'s streaming animator animates with absolute
    keypoints (OSTNet's recipe: no anchor frame); the face size of each output frame over the source's (1 = the
    source's scale kept).  The baseline is shown with absolute keypoints and with FOMM's relative motion (which
    uses the first driving frame as an anchor).

The landmarks of generated frames come from a small landmark regressor trained here on the synthetic training
frames (random zoom, shift and blur; ``--regressor-minutes``); its own error on real held-out frames is printed as
the instrument's floor.

    python benchmarks/ostnet.py --minutes 4 --size 64 --threads 1          # everything, one after the other
    python benchmarks/ostnet.py --minutes 0.3 --regressor-minutes 0.2      # a quick check of the pipeline

Budgets are CPU time of the process (``time.process_time``), so that on a shared machine both variants get the same
compute.  The trainings can run side by side (``--only ostnet``, ``--only baseline``, ``--only regressor``), then
``--reuse`` measures the saved models.  Besides ``ostnet/small`` and the baseline without the module, a third model
('plain') has neither the module nor the scale augmentation (FOMM as ``fomm/small`` trains it).

Measured on 2026-12-05 (4 CPU minutes per model, 64 px, batch 8, one thread): the module cuts the scale error of
zoomed driving frames 4.7x (0.235 -> 0.050, floor 0.031); cross-scale landmark error 3.18 px vs 3.39 without the
module and 3.76 for FOMM (copying the source: 2.83, so all three are undertrained); with a driving face 1.37x the
source's, outputs are 1.035x the source's face (FOMM absolute 1.166; the baseline with the augmentation 0.999).
benchmarks/README.md and docs/methods/ostnet.md have the tables.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
RECIPE = "ostnet/small"
FACTORS = (0.7, 0.8, 0.9, 1.15, 1.3, 1.4)


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------
def training_options(variant: str, args) -> dict:
    """``--cfg-options`` for a fixed-budget run of ``ostnet/small`` (``variant`` 'ostnet'), of the same recipe
    without the scale transformation ('baseline'), or without it and without the scale augmentation ('plain': FOMM
    as ``fomm/small`` trains it)."""
    from thkit.recipe import load_recipe

    cfg = load_recipe(RECIPE)
    train = cfg.train_dataloader.to_dict()
    train.update(batch_size=args.batch, num_workers=args.workers, persistent_workers=args.workers > 0)
    train["dataset"].update(root=args.data, synth=dict(videos=args.videos, frames=args.frames, seed=0))
    opts: dict = {
        "train_dataloader": train,
        "val_dataloader": None,
        "train_cfg.max_iters": 10**8,
        "train_cfg.val_interval": 10**9,
        "param_scheduler": [],
        "default_hooks.checkpoint.interval": 10**9,
        "default_hooks.logger.interval": 50,
        "custom_hooks": [dict(type="TrainRecordsHook"),
                         dict(type="TimeBudgetHook", seconds=args.minutes * 60, clock="cpu")],
        "seed": args.seed,
    }
    if variant in ("baseline", "plain"):
        opts["model.motion"] = dict(_delete_=True, **cfg.model.motion.motion.to_dict())
        opts["model.decoder.conditioning"] = None
        opts["losses.rectification"] = None
    if variant == "plain":
        pair = train["dataset"]["augmentation"]["steps"][0]  # the pair augmentation only
        train["dataset"]["augmentation"] = dict(_delete_=True, **pair)
        opts["losses.pixel.inputs.target"] = "driving"
        opts["losses.perceptual.inputs.target"] = "driving"
    return opts


def train(variant: str, args):
    """Train one variant for the budget (or load it from an earlier run); returns ``(generator, info)``."""
    from thkit.builder import build_model

    path = Path(args.work_dir) / f"{variant}.pt"
    if args.reuse and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        gen = build_model(saved["model"], image_size=args.size)
        gen.load_state_dict(saved["state_dict"])
        return gen.eval(), saved["info"]
    from thkit.engine.runner import build_runner
    from thkit.engine.trainer import unwrap

    runner = build_runner(RECIPE, work_dir=str(Path(args.work_dir) / variant), size=args.size,
                          cfg_options=training_options(variant, args))
    t0, c0 = time.perf_counter(), time.process_time()
    runner.train()
    gen = unwrap(runner.model).gen
    info = dict(variant=variant, iterations=runner.iter, train_seconds=round(time.perf_counter() - t0, 1),
                cpu_seconds=round(time.process_time() - c0, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": runner.cfg.model.to_dict(), "state_dict": gen.state_dict(), "info": info}, path)
    return gen.eval(), info


# ---------------------------------------------------------------------------------------------------------------
# the measuring instrument: a landmark regressor for generated frames
# ---------------------------------------------------------------------------------------------------------------
class LandmarkRegressor(nn.Module):
    """A small CNN: (B, 3, S, S) in [0, 1] -> (B, L, 2) landmarks in [-1, 1] keypoint coordinates."""

    def __init__(self, num_landmarks: int, size: int):
        super().__init__()
        layers, c = [], 3
        for w in (16, 32, 64, 64):
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * (size // 16) ** 2, 256), nn.ReLU(inplace=True),
                                  nn.Linear(256, 2 * num_landmarks))
        self.num_landmarks = num_landmarks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).view(x.shape[0], self.num_landmarks, 2)


def _frames_with_landmarks(args, count: int):
    """``count`` training pairs' frames (2 per item) and their landmarks."""
    from thkit.datasets.frames import FramesDataset

    ds = FramesDataset(args.data, mode="train", image_size=args.size)
    g = torch.Generator().manual_seed(1)
    imgs, lms = [], []
    for i in torch.randint(len(ds), (count,), generator=g).tolist():
        it = ds[i]
        imgs += [it["source"], it["driving"]]
        lms += [it["landmarks_source"], it["landmarks_driving"]]
    return torch.stack(imgs), torch.stack(lms)


def _augment_for_regressor(x: torch.Tensor, lm: torch.Tensor, g: torch.Generator):
    """Random zoom (0.55-1.6) around a jittered face centre, and a random blur (generated frames are blurry)."""
    import kornia

    from thkit.datasets.augment import zoom

    b = x.shape[0]
    f = torch.exp(torch.empty(b).uniform_(math.log(0.55), math.log(1.6), generator=g))
    c = lm.mean(1) + torch.empty(b, 2).uniform_(-0.15, 0.15, generator=g)
    x = zoom(x, f, c)
    lm = c[:, None] + f[:, None, None] * (lm - c[:, None])
    sigma = float(torch.empty(()).uniform_(0.1, 1.5, generator=g))
    x = kornia.filters.gaussian_blur2d(x, (5, 5), (sigma, sigma))
    return x, lm


def train_regressor(args):
    path = Path(args.work_dir) / "landmark_regressor.pt"
    imgs, lms = _frames_with_landmarks(args, args.regressor_items)
    net = LandmarkRegressor(lms.shape[1], args.size)
    if args.reuse and path.exists():
        net.load_state_dict(torch.load(path, map_location="cpu"))
        return net.eval()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(2)
    t0, c0, step = time.perf_counter(), time.process_time(), 0
    while time.process_time() - c0 < args.regressor_minutes * 60:
        idx = torch.randint(len(imgs), (32,), generator=g)
        x, lm = _augment_for_regressor(imgs[idx], lms[idx], g)
        loss = F.smooth_l1_loss(net(x), lm, beta=0.02)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    print(f"landmark regressor: {step} steps in {time.process_time() - c0:.0f} CPU s "
          f"({time.perf_counter() - t0:.0f} s wall)")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net.eval()


# ---------------------------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------------------------
def spread(points: torch.Tensor) -> torch.Tensor:
    from thkit.motion.scale import keypoint_spread

    return keypoint_spread(points)


def test_pairs(args):
    """Held-out (source = frame 0, driving = frame t > 0) pairs with landmarks, and a zoom factor for each."""
    from thkit.datasets.frames import FramesDataset

    ds = FramesDataset(args.data, mode="reconstruction", image_size=args.size, max_frames=args.eval_frames)
    items = [ds[i] for i in range(len(ds)) if ds[i]["frame_ids"][1] != 0]
    keys = ("source", "driving", "landmarks_source", "landmarks_driving")
    batch = {k: torch.stack([it[k] for it in items]) for k in keys}
    batch["factor"] = torch.tensor([FACTORS[i % len(FACTORS)] for i in range(len(items))])
    batch["video"] = [it["video"] for it in items]
    return batch


def zoomed_driving(batch):
    from thkit.datasets.augment import zoom

    lm = batch["landmarks_driving"]
    c = lm.mean(1)
    f = batch["factor"]
    return zoom(batch["driving"], f, c), c[:, None] + f[:, None, None] * (lm - c[:, None])


@torch.no_grad()
def measure_rectification(gen, batch) -> dict:
    zd, lz = zoomed_driving(batch)
    s_src = spread(batch["landmarks_source"])
    kp_s, kp_d = gen.detect(batch["source"]), gen.detect(zd)
    rect = gen.motion.rectify(kp_s, kp_d)
    lr = rect["warp"].warp_points(lz)
    err = lambda s: (s / s_src).log().abs()  # noqa: E731
    out = {"no_module": err(spread(lz)), "rectified": err(spread(lr)),
           "unzoomed": err(spread(batch["landmarks_driving"]))}
    summary = {k: float(v.mean()) for k, v in out.items()}
    summary["reduction"] = summary["no_module"] / max(summary["rectified"], 1e-9)
    # the scale the module applies vs the one that undoes the zoom (1 / factor), per factor
    applied = spread(lr) / spread(lz)
    summary["per_factor"] = {f"{f:g}": float(applied[batch["factor"] == f].mean()) for f in FACTORS}
    return summary


@torch.no_grad()
def landmark_error(regressor, images, landmarks, size) -> torch.Tensor:
    """Mean landmark distance per image, in pixels at ``size``."""
    pred = regressor(images.clamp(0, 1))
    return ((pred - landmarks).norm(dim=-1).mean(-1) * (size - 1) / 2)


@torch.no_grad()
def measure_reenactment(gens: dict, regressor, batch, args) -> dict:
    zd, _ = zoomed_driving(batch)
    target = batch["landmarks_driving"]
    rows = {"regressor on the real unzoomed frame (floor)": landmark_error(regressor, batch["driving"], target,
                                                                          args.size),
            "copy the source": landmark_error(regressor, batch["source"], target, args.size)}
    for name, gen in gens.items():
        preds = [gen(batch["source"][i:i + 16], zd[i:i + 16])["prediction"] for i in range(0, len(zd), 16)]
        rows[name] = landmark_error(regressor, torch.cat(preds), target, args.size)
    small = batch["factor"] < 1
    return {k: dict(all=float(v.mean()), zoom_out=float(v[small].mean()), zoom_in=float(v[~small].mean()))
            for k, v in rows.items()}


@torch.no_grad()
def measure_no_anchor(gens: dict, regressor, args) -> dict:
    from thkit.datasets.augment import zoom
    from thkit.datasets.frames import FramesDataset
    from thkit.inference.stream import StreamingAnimator

    ds = FramesDataset(args.data, mode="reconstruction", image_size=args.size, max_frames=args.eval_frames)
    videos = list(ds.videos())
    rows: dict[str, list[float]] = {}
    driving_ratio = []
    for i, (_, frames) in enumerate(videos):
        drv_frames = videos[(i + 1) % len(videos)][1]
        src = frames[:1]
        s_src = float(spread(regressor(src)))
        # the driving video zoomed by --big around its first frame's face centre (regressor landmarks)
        c = regressor(drv_frames[:1]).mean(1)
        big = zoom(drv_frames, args.big, c.expand(len(drv_frames), 2))
        driving_ratio.append(float(spread(regressor(big)).mean()) / s_src)
        for label, gen, relative in gens:
            anim = StreamingAnimator(gen, relative=relative, relative_jacobian=relative, batch_size=8)
            anim.set_source(src)
            out = torch.stack(list(anim.run(big)))
            rows.setdefault(label, []).append(float(spread(regressor(out.clamp(0, 1))).mean()) / s_src)
    res = {k: float(torch.tensor(v).mean()) for k, v in rows.items()}
    res["driving video (input)"] = float(torch.tensor(driving_ratio).mean())
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=4.0, help="training CPU time per variant")
    p.add_argument("--regressor-minutes", type=float, default=2.5, help="CPU time of the landmark regressor")
    p.add_argument("--only", choices=["ostnet", "baseline", "plain", "regressor"], default=None,
                   help="train only this (and save it to --work-dir), e.g. to run the trainings side by side")
    p.add_argument("--regressor-items", type=int, default=1500, help="training pairs the regressor sees")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--videos", type=int, default=100)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--eval-frames", type=int, default=16, help="frames per held-out video")
    p.add_argument("--big", type=float, default=1.4, help="zoom of the driving video in (c)")
    p.add_argument("--data", default=None, help="synthetic dataset folder (default data/synth<size>)")
    p.add_argument("--work-dir", default="work_dirs/ostnet_bench")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reuse", action="store_true", help="load trained models / regressor from --work-dir")
    p.add_argument("--out", default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    args.data = args.data or f"data/synth{args.size}"
    torch.set_num_threads(args.threads)
    if not Path(args.data).exists():
        from thkit.datasets.synthetic import write_synthetic_dataset

        write_synthetic_dataset(args.data, videos=args.videos, frames=args.frames, size=args.size, seed=0)

    t0 = time.perf_counter()
    if args.only:
        train_regressor(args) if args.only == "regressor" else train(args.only, args)
        return {}
    ostnet, info_o = train("ostnet", args)
    baseline, info_b = train("baseline", args)
    plain, info_p = train("plain", args)
    regressor = train_regressor(args)
    batch = test_pairs(args)
    res = {
        "training": [info_o, info_b, info_p],
        "rectification": measure_rectification(ostnet, batch),
        "reenactment": measure_reenactment({"ostnet/small": ostnet, "without the module": baseline,
                                            "without module and augmentation (FOMM)": plain}, regressor, batch, args),
        "no_anchor": measure_no_anchor([("ostnet/small (absolute, no anchor)", ostnet, False),
                                        ("without the module, absolute", baseline, False),
                                        ("without the module, relative (first frame as anchor)", baseline, True),
                                        ("FOMM (no module, no augmentation), absolute", plain, False),
                                        ("FOMM (no module, no augmentation), relative", plain, True)],
                                       regressor, args),
        "test_frames": len(batch["factor"]),
    }

    print(f"\ntorch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}, "
          f"{args.size} px, {res['test_frames']} held-out frames, total {time.perf_counter() - t0:.0f} s")
    for t in res["training"]:
        print(f"  trained {t['variant']:<9} {t['iterations']:>6} iterations in {t.get('cpu_seconds', 0):.0f} CPU s "
              f"({t['train_seconds']:.0f} s wall, batch {args.batch})")
    r = res["rectification"]
    print("\n(a) scale error |log(scale / source scale)| of the zoomed driving frame (factors "
          f"{', '.join(f'{f:g}' for f in FACTORS)})")
    print(f"  no module {r['no_module']:.4f}   rectified {r['rectified']:.4f}   unzoomed (floor) {r['unzoomed']:.4f}"
          f"   reduction x{r['reduction']:.2f}")
    print("  scale applied by the module per zoom factor (ideal 1 / factor): " +
          ", ".join(f"{f}: {v:.3f} ({1 / float(f):.3f})" for f, v in r["per_factor"].items()))
    print(f"\n(b) landmark error (px at {args.size}) of the output vs the renderer's landmarks of the unzoomed frame")
    print(f"  {'':<48} {'all':>7} {'zoom<1':>7} {'zoom>1':>7}")
    for k, v in res["reenactment"].items():
        print(f"  {k:<48} {v['all']:>7.2f} {v['zoom_out']:>7.2f} {v['zoom_in']:>7.2f}")
    print(f"\n(c) face size of the output / the source's, driving video zoomed x{args.big:g} (1 = source scale kept)")
    for k, v in res["no_anchor"].items():
        print(f"  {k:<55} {v:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()

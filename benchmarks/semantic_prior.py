"""Semantic face prior (recipes/semantic_prior/small.py): does pose alignment, the geometry loss and the pose control do
what they claim, on thkit's synthetic heads (exact renderer truth).  Prints the figures (JSON).

Two fixed-budget trainings of ``semantic_prior/small`` at 64 px on 1 thread (``--minutes`` of CPU time each, wall
capped at 4x that; same data, same seed): ``with`` the face-geometry loss (keypoints tied to the renderer's landmarks)
and ``without`` (its weight 0: FOMM small with 10 free keypoints).  ``--recipe semantic_prior/small_fullres``
trains and measures the variant whose generator warps at 64 px (sharp enough generated frames for MediaPipe to
read; ``--only with``, then ``--skip-training`` without part b).  Then, on held-out videos:

(a) pose alignment: source = frame 0 of a held-out head video re-rendered at a known pose offset, driving = the
    original video; |pose - driving truth| with no alignment, ``SimilarityAlignment`` and ``PoseAlignment``, measured
    on the keypoints animated with (template fit), and on the output images (the prediction and ``deformed``, the
    source warped by the predicted flow) by a render fit (:class:`RenderFitMeter`) and by MediaPipe.
(b) geometry loss: its value over training (records), and how well keypoints track landmarks on held-out frames:
    (b1) the mean distance of each keypoint to its anchor landmarks (meaningful for the regularised model only) and
    (b2) the field's protocol for unsupervised keypoints, a linear regression keypoints -> 22 landmarks fitted on
    training frames, error on held-out frames (both models), in pixels at 64 px.
(c) control: each held-out video animated by itself with ``pose={'yaw': Y}`` and without; the output's yaw change
    (edited minus unedited) by MediaPipe (face mesh at 256 px, template fit of the same 10 face points) and by the
    render fit; and, for calibration, how much of a true driving yaw change the meter sees and the model realises in
    plain reconstruction (:func:`yaw_calibration`).
(g) calibrated control: the model's pose gain (the fraction of a keypoint rotation it turns its output head by,
    :func:`pose_gain`) measured on four *other* held-out videos, then the control with ``control.pose_gain.yaw`` set
    to it on the test videos: requested yaw vs the output's yaw change (MediaPipe on ``deformed``, divided by the
    meter's own scale), and the error per request (:func:`calibrated_control_study`).
(l) the warp without a detector: where the source's true landmarks land in ``deformed`` (the flow inverted at each
    landmark), their yaw against the true driving yaw, and under ``--pose yaw=Y`` (:func:`landmark_study`).
(r) each axis: ``--pose yaw|pitch|roll=+-10``, the change of that angle in ``deformed`` (:func:`axes_study`).
(w) the same (and yaw +-5, +-20) with the control's ``realise='warp'``: the model animates the unedited keypoints and
    the edit is a thin-plate-spline warp of its motion pinned at the keypoints, the head outline and the image border
    (:mod:`thkit.warp.edit`); the yaw requests again on four other held-out videos (94-97); how the outline's size
    changes the yaw readings (:func:`outline_sensitivity`); what the meters read without the model
    (:func:`meter_check`); and the render fit on the generated frames (:func:`control_study` with the warp).
(e) ``--expression mouth_open=C`` on images, realised on the keypoints and as a warp, beside a true opening
    (:func:`expression_study`).

    OMP_NUM_THREADS=1 python benchmarks/semantic_prior.py --minutes 8          # trains both, then measures
    OMP_NUM_THREADS=1 python benchmarks/semantic_prior.py --skip-training      # measures the last trainings
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RECIPE = "semantic_prior/small"


def train(variant: str, args) -> dict:
    from learns import training_options

    from thkit.engine.hooks import TimeBudgetHook, budget_schedule
    from thkit.engine.runner import build_runner
    from thkit.recipe import load_recipe

    # wall-time cap 4x the CPU budget (a safety net on a busy machine)
    ns = argparse.Namespace(videos=100, frames=32, batch=args.batch, workers=0, data=args.data,
                            minutes=4 * args.minutes)
    opts = training_options(args.recipe, ns)
    opts["randomness"] = dict(seed=args.seed)
    if variant == "without":
        opts["losses.geometry.weight"] = 0.0
    work_dir = Path(args.work_dir) / variant
    torch.manual_seed(args.seed)
    runner = build_runner(args.recipe, work_dir=str(work_dir), size=64, cfg_options=opts)
    schedule = budget_schedule(load_recipe(args.recipe)) if args.schedule else {}
    runner.register_hook(TimeBudgetHook(args.minutes * 60, clock="cpu", **schedule), priority="LOWEST")
    t0, c0 = time.perf_counter(), time.process_time()
    runner.train()
    return dict(variant=variant, iterations=int(runner.iter), wall_seconds=round(time.perf_counter() - t0, 1),
                cpu_seconds=round(time.process_time() - c0, 1))


def load(variant: str, args):
    import thkit

    return thkit.create_model(args.recipe, size=64, checkpoint=str(Path(args.work_dir) / variant / "weights.pth"))


def geometry_curve(args) -> dict:
    path = Path(args.work_dir) / "with" / "records" / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    vals = [r["geometry"] for r in rows if "geometry" in r]
    n = max(1, len(vals) // 10)
    return dict(first=float(np.mean(vals[:n])), last=float(np.mean(vals[-n:])), steps=len(vals))


# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def keypoints_of(model, frames: torch.Tensor) -> torch.Tensor:
    return torch.cat([model.detect(frames[i:i + 32])["value"] for i in range(0, len(frames), 32)])


def frames_and_landmarks(args, split: str, max_videos: int, stride: int = 1):
    from thkit.datasets.frames import FramesDataset

    ds = FramesDataset(args.data, split=split, mode="reconstruction", image_size=64)
    xs, lms, vis = [], [], []
    keep = [n for n in ds.names if n.startswith("head")][:max_videos]
    for i in range(len(ds)):
        it = ds[i]
        if it["video"] not in keep or it["frame_ids"][1] % stride:
            continue
        xs.append(it["driving"])
        lms.append(it["landmarks_driving"])
        vis.append(it["visible_driving"])
    return torch.stack(xs), torch.stack(lms), torch.stack(vis)


def keypoint_tracking(models: dict, args) -> dict:
    """(b1) anchor distance and (b2) linear-regression landmark error, in pixels at 64 px."""
    from thkit.losses.geometry import anchor_targets
    from thkit.recipe import load_recipe

    anchors = load_recipe(args.recipe).face_prior_anchors_synthetic
    xtr, ltr, _ = frames_and_landmarks(args, "train", 40, stride=4)
    xte, lte, vte = frames_and_landmarks(args, "test", 10)
    px = 63 / 2  # keypoint units -> pixels at 64 px
    out = {}
    for name, model in models.items():
        ktr, kte = keypoints_of(model, xtr), keypoints_of(model, xte)
        tgt, tv = anchor_targets(lte, anchors, vte)
        anchor = ((kte - tgt).norm(dim=-1)[tv].mean() * px).item()
        a = torch.cat([ktr.flatten(1), torch.ones(len(ktr), 1)], 1).double()
        w = torch.linalg.lstsq(a, ltr.flatten(1).double()).solution
        pred = (torch.cat([kte.flatten(1), torch.ones(len(kte), 1)], 1).double() @ w).view_as(lte)
        reg = ((pred - lte.double()).norm(dim=-1).mean() * px).item()
        out[name] = dict(anchor_px=anchor, regression_px=reg, train_frames=len(xtr), test_frames=len(xte))
    return out


# ---------------------------------------------------------------------------------------------------------
class PoseMeter:
    """Head pose (yaw, pitch, roll degrees) of 64 px frames: MediaPipe face mesh at 256 px (bicubic), landmarks of
    the same 10 face points as the prior (face-mesh anchors), then :func:`thkit.transfer_control.fit_pose` of the
    template (the renderer's convention)."""

    def __init__(self):
        from thkit.metrics.face import MediaPipeFaceMesh
        from thkit.recipe import load_recipe

        cfg = load_recipe(RECIPE)
        self.anchors = cfg.face_prior_anchors_mediapipe
        self.template = torch.tensor(cfg.face_prior_template)
        self.mesh = MediaPipeFaceMesh("semantic_prior benchmark")

    def fit(self, frame_u8: np.ndarray) -> tuple[np.ndarray, dict] | None:
        """One 64 px uint8 frame -> MediaPipe's landmarks at 256 px (bicubic) and the template fit of its 10 anchor
        points (:func:`~thkit.transfer_control.fit_pose`, coordinates in [-1, 1]); ``None`` where no face is found."""
        from PIL import Image

        from thkit.transfer_control import fit_pose

        lm = self.mesh.landmarks(np.asarray(Image.fromarray(frame_u8).resize((256, 256), Image.BICUBIC)))
        if lm is None:
            return None
        pts = torch.tensor(np.stack([lm[a].mean(0) for a in self.anchors]), dtype=torch.float64)[None]
        return lm, fit_pose(pts / 128.0 - 1, self.template)

    def __call__(self, frames_u8: np.ndarray) -> np.ndarray:
        """(T, 64, 64, 3) uint8 -> (T, 3) degrees, NaN where no face is found."""
        out = np.full((len(frames_u8), 3), np.nan)
        for i, f in enumerate(frames_u8):
            found = self.fit(f)
            if found is not None:
                out[i] = found[1]["angles"][0].numpy()
        return out


POSE_NAMES = ("yaw", "pitch", "roll")
OUTPUTS = ("prediction", "deformed")  # the generated frame; the source warped by the predicted flow


class RenderFitMeter:
    """Head pose of generated frames by analysis by synthesis, for when MediaPipe cannot see the (blurry) outputs: the
    source's identity is known (the synthetic renderer's), so each frame's (yaw, pitch, roll) is the renderer pose whose
    rendering, with every other parameter at the target frame's truth, is closest (L1 after a Gaussian blur, sigma 1.5
    px) to the frame.  Coordinate search from the target's truth: a coarse pass (yaw +-30 step 3, pitch / roll +-12
    step 2 degrees) then a fine pass (+-3 step 1) per angle; ``angles`` limits which angles are searched."""

    def __init__(self, index: int, size: int = 64):
        from thkit.datasets.synthetic import HeadIdentity, HeadRenderer

        self.identity = HeadIdentity.sample(np.random.default_rng([0, 2, index]))
        self.renderer = HeadRenderer(size, chunk=64)

    def _render(self, motion, t: int, values: np.ndarray, which: str) -> torch.Tensor:
        from thkit.datasets.synthetic import HeadMotion

        n = len(values)
        params = {k: np.repeat(np.asarray(getattr(motion, k)[t:t + 1], np.float32), n)
                  for k in HeadMotion.__dataclass_fields__}
        for k, v in self.pose.items():
            params[k] = np.full(n, v, np.float32)
        params[which] = np.radians(values).astype(np.float32)
        img = self.renderer.render(self.identity, HeadMotion(**params))["frames"]
        return self._blur(torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255)

    @staticmethod
    def _blur(x: torch.Tensor) -> torch.Tensor:
        from kornia.filters import gaussian_blur2d

        return gaussian_blur2d(x, (9, 9), (1.5, 1.5))

    def __call__(self, frames_u8: np.ndarray, motion, offset=(0.0, 0.0, 0.0), angles=POSE_NAMES) -> np.ndarray:
        """(T, S, S, 3) uint8 frames whose target is ``motion`` frame t (+ ``offset`` degrees) -> (T, 3) degrees."""
        out = np.zeros((len(frames_u8), 3))
        for t, f in enumerate(frames_u8):
            x = self._blur(torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255)
            cur = {k: float(np.degrees(getattr(motion, k)[t])) + o for k, o in zip(POSE_NAMES, offset, strict=True)}
            for span, step in ((30.0, 3.0), (3.0, 1.0)):
                for k in angles:
                    sp = span if k == "yaw" else min(span, 12.0)
                    st = step if k == "yaw" or step == 1.0 else 2.0
                    cand = cur[k] + np.arange(-sp, sp + 1e-6, st)
                    self.pose = {a: math.radians(v) for a, v in cur.items() if a != k}
                    err = (self._render(motion, t, cand, k) - x).abs().mean((1, 2, 3))
                    cur[k] = float(cand[int(err.argmin())])
            out[t] = [cur[k] for k in POSE_NAMES]
        return out


def _render(index: int, frames: int, size: int = 64, offset=(0.0, 0.0, 0.0)):
    from thkit.datasets.synthetic import HeadIdentity, HeadMotion, HeadRenderer

    identity = HeadIdentity.sample(np.random.default_rng([0, 2, index]))
    motion = HeadMotion.sample(np.random.default_rng([0, 1, index]), frames)
    for k, d in zip(("yaw", "pitch", "roll"), offset, strict=True):
        setattr(motion, k, (getattr(motion, k) + math.radians(d)).astype(np.float32))
    return HeadRenderer(size).render(identity, motion), motion


def render_clip(index: int, frames: int, size: int = 64, offset=(0.0, 0.0, 0.0)):
    """Held-out synthetic head video ``index`` of the benchmark data (its identity and motion), optionally with the
    pose offset (yaw, pitch, roll degrees) added to every frame: (T, S, S, 3) uint8 and the truth parameters."""
    out, motion = _render(index, frames, size, offset)
    return out["frames"], motion


@torch.no_grad()
def animate_frames(model, source_u8, driving_u8, control=None) -> dict[str, np.ndarray]:
    """Relative animation (the streaming path's MotionTransfer, with ``control``): the generated frames and the
    source warped by the predicted flow (``deformed``: the motion alone, without the decoder), (T, S, S, 3) uint8,
    and that flow at the image's size (``deformation``, (T, S, S, 2) normalised source positions, as the warp
    resizes it)."""
    from thkit.inference.stream import MotionTransfer
    from thkit.warp.grid_sample import resize_flow

    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    to_u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # noqa: E731
    size = driving_u8.shape[1]
    cache = model.encode_source(to_t(source_u8[None]))
    mt = MotionTransfer(cache["kp_source"], relative=True, relative_jacobian=True, control=control)
    out = {"prediction": [], "deformed": [], "deformation": []}
    for i in range(0, len(driving_u8), 8):
        res = model.animate(cache, mt(model.detect(to_t(driving_u8[i:i + 8]))))
        for k in ("prediction", "deformed"):
            out[k].append(to_u8(res[k]))
        out["deformation"].append(resize_flow(res["deformation"], (size, size), align_corners=True).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


@torch.no_grad()
def keypoint_pose(model, source_u8, driving_u8, control=None) -> np.ndarray:
    """The pose (template fit, degrees) of the keypoints the model animates with: the motion level, before any
    warping or decoding."""
    from thkit.inference.stream import MotionTransfer
    from thkit.transfer_control import fit_pose

    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    mt = MotionTransfer(model.detect(to_t(source_u8[None])), relative=True, relative_jacobian=True, control=control)
    kp = mt(model.detect(to_t(driving_u8)))
    return fit_pose(kp["value"], torch.tensor(model.recipe.face_prior_template))["angles"].numpy()


def render_clip_landmarks(index: int, frames: int, size: int = 64):
    """:func:`render_clip` with the renderer's 22 landmarks (T, 22, 2) pixels."""
    out, motion = _render(index, frames, size)
    return out["frames"], out["landmarks"], motion


def landmark_yaw(model, landmarks: np.ndarray) -> np.ndarray:
    """Yaw (degrees) of (T, 22, 2) landmark positions (pixels at 64 px): the template fit of the 10 anchor points, as
    the keypoints' and MediaPipe's poses are measured."""
    return landmark_angles(model, landmarks)[:, 0]


def landed_landmarks(res: dict[str, np.ndarray], source_landmarks: np.ndarray) -> np.ndarray:
    """Where the source's true landmarks land in ``deformed`` (``res`` from :func:`animate_frames`): the flow inverted
    at each (:func:`invert_flow_at`).  (T, 22, 2) pixels: an exact geometric meter of the warp, no detector."""
    return invert_flow_at(torch.from_numpy(res["deformation"]), source_landmarks)


def invert_flow_at(grid: torch.Tensor, source_points: np.ndarray) -> np.ndarray:
    """Output pixels (T, P, 2) that a backward flow ``grid`` (T, H, W, 2; normalised source positions sampled by each
    output pixel, ``align_corners=True``) sends to the source pixels ``source_points`` (P, 2): the nearest output
    pixel, then one Newton step on the flow's local Jacobian (clamped to one pixel)."""
    size = grid.shape[1]
    g = (grid.double() + 1) * (size - 1) / 2  # (T, H, W, 2) source pixel sampled by each output pixel
    target = torch.tensor(source_points, dtype=torch.float64)
    t, h, w, _ = g.shape
    d = ((g[:, :, :, None] - target) ** 2).sum(-1).view(t, h * w, -1)
    idx = d.argmin(1)  # (T, 22)
    ys, xs = (idx // w).clamp(1, h - 2), (idx % w).clamp(1, w - 2)
    at = lambda dy, dx: g[torch.arange(t)[:, None], ys + dy, xs + dx]  # noqa: E731  (T, 22, 2)
    jac = torch.stack([(at(0, 1) - at(0, -1)) / 2, (at(1, 0) - at(-1, 0)) / 2], -1)  # d source / d (x, y)
    step = torch.linalg.solve(jac + 1e-6 * torch.eye(2, dtype=jac.dtype), (target - at(0, 0))[..., None])[..., 0]
    return (torch.stack([xs, ys], -1).double() + step.clamp(-1, 1)).numpy()


def landmark_study(model, args) -> dict:
    """(l) The warp measured on the renderer's landmarks (no detector): slope of the yaw change of the source's
    landmarks as ``deformed`` places them against the true driving yaw change (the meter's own slope on the true
    driving landmarks beside it), and their yaw change under ``--pose yaw=Y`` (edited minus unedited, divided by
    that slope: true degrees; mean and median over the frames, as a few frames at large driving yaw swing far)."""
    from thkit.transfer_control import build_motion_control

    xs, on_driving, on_deformed = [], [], []
    edits = {y: [] for y in args.yaws}
    for idx in args.test_videos + args.calibration_videos:
        frames, lms, motion = render_clip_landmarks(idx, 24)
        truth = np.degrees(motion.yaw)
        drv = landmark_yaw(model, lms)
        out = landmark_yaw(model, landed_landmarks(animate_frames(model, frames[0], frames), lms[0]))
        xs.append(truth - truth[0])
        on_driving.append(drv - drv[0])
        on_deformed.append(out - out[0])
        for y in args.yaws:
            ctrl = build_motion_control(model.recipe, pose={"yaw": y})
            res = animate_frames(model, frames[0], frames, ctrl)
            edits[y].append(landmark_yaw(model, landed_landmarks(res, lms[0])) - out)
    x = np.concatenate(xs)
    meter = float(np.polyfit(x, np.concatenate(on_driving), 1)[0])
    warp = float(np.polyfit(x, np.concatenate(on_deformed), 1)[0])
    rows = {}
    for y, v in edits.items():
        d = np.concatenate(v) / meter
        rows[str(y)] = dict(output_yaw_change=float(d.mean()), median=float(np.median(d)), sd=float(d.std()),
                            share_of_median=float(np.median(d) / y))
    return dict(meter_slope_on_true_landmarks=meter, slope_on_deformed=warp, realised=warp / meter,
                videos=args.test_videos + args.calibration_videos, frames=int(len(x)), requests=rows)


def landmark_fit(model, landmarks: np.ndarray) -> dict:
    """The template fit (:func:`thkit.transfer_control.fit_pose`) of the 10 anchor points of (T, 22, 2) landmark
    positions (pixels at 64 px)."""
    from thkit.transfer_control import fit_pose

    anchors = model.recipe.face_prior_anchors_synthetic
    pts = torch.tensor(np.stack([landmarks[:, a].mean(1) for a in anchors], 1), dtype=torch.float64)
    return fit_pose(pts / 31.5 - 1, torch.tensor(model.recipe.face_prior_template, dtype=torch.float64))


def landmark_angles(model, landmarks: np.ndarray) -> np.ndarray:
    """(T, 3) yaw, pitch, roll (degrees) of (T, 22, 2) landmark positions: the template fit of the anchor points."""
    return landmark_fit(model, landmarks)["angles"].numpy()


AXES_REQUESTS = [(name, y) for name in POSE_NAMES for y in (-10.0, 10.0)]
WARP_REQUESTS = AXES_REQUESTS + [("yaw", y) for y in (-20.0, -5.0, 5.0, 20.0)]
WARP_YAWS = tuple(sorted(y for name, y in WARP_REQUESTS if name == "yaw"))  # -20, -10, -5, 5, 10, 20


def with_realise(recipe, realise: str, outline=None):
    """``recipe`` with its control realising edits as ``realise`` (``keypoints`` or ``warp``, with ``outline``; the
    recipe's own outline, or the head outline of the synthetic renderer's mean head, when it has none)."""
    cfg = recipe.copy() if hasattr(recipe, "copy") else dict(recipe)
    spec = dict(cfg["control"], realise=realise)
    if realise == "warp":
        spec["outline"] = outline or spec.get("outline") or dict(radii=(0.75, 1.0), points=16)
    else:
        spec.pop("outline", None)
    cfg["control"] = spec
    return cfg


def axes_study(model, meter: PoseMeter, args, requests=AXES_REQUESTS, realise: str = "keypoints",
               outline=None) -> dict:
    """(r) ``--pose ANGLE=+-10`` for each of yaw, pitch and roll on the test videos: the change of that angle in
    ``deformed`` (edited minus unedited) by the landmark meter (median over frames) and by MediaPipe (mean), and by
    MediaPipe on the generated frame (``mediapipe_prediction_*``, over the frames where it finds a face in both): the
    in-plane roll is what a 2-D warp can realise fully, yaw and pitch turn the head out of the image plane.
    (w) the same with the control realising the edit as a warp of the predicted motion (``realise='warp'``,
    :mod:`thkit.warp.edit`), for more yaw requests."""
    from thkit.transfer_control import build_motion_control

    recipe = with_realise(model.recipe, realise, outline)
    rows: dict = {}
    for idx in args.test_videos:
        frames, lms, _ = render_clip_landmarks(idx, args.frames)
        base = animate_frames(model, frames[0], frames)
        base_l = landmark_angles(model, landed_landmarks(base, lms[0]))
        base_m = {o: meter(base[o]) for o in OUTPUTS}
        for name, y in requests:
            k = POSE_NAMES.index(name)
            res = animate_frames(model, frames[0], frames, build_motion_control(recipe, pose={name: y}))
            lm = landmark_angles(model, landed_landmarks(res, lms[0]))[:, k]
            got = rows.setdefault(f"{name}={y:+g}", ([], {o: [] for o in OUTPUTS}))
            got[0].append(lm - base_l[:, k])
            for o in OUTPUTS:
                got[1][o].append(meter(res[o])[:, k] - base_m[o][:, k])

    def mediapipe(changes: list, prefix: str) -> dict:
        d = np.concatenate(changes)
        ok = np.isfinite(d)
        return {f"{prefix}mean": float(d[ok].mean()) if ok.any() else float("nan"),
                f"{prefix}sd": float(d[ok].std()) if ok.any() else float("nan"), f"{prefix}frames": int(ok.sum())}

    return {key: dict(landmarks_median=float(np.median(np.concatenate(lm))), **mediapipe(mp["deformed"], "mediapipe_"),
                      **mediapipe(mp["prediction"], "mediapipe_prediction_"))
            for key, (lm, mp) in rows.items()}


def meter_check(model, meter: PoseMeter, args, yaws=(-20.0, -10.0, 10.0, 20.0)) -> dict:
    """(w) what the two meters read without the model: on the renderer's frames turned by a true yaw (re-rendered)
    and on the same frames moved by the control's warp built from the renderer's *true* landmarks (the anchor
    points in place of the keypoints; outline and border as the recipe's), each against the unedited frames.
    Landmark meter: median over frames; MediaPipe: mean."""
    import torch.nn.functional as F

    from thkit.builder import build
    from thkit.warp.edit import edit_grid

    spec = with_realise(model.recipe, "warp")["control"]
    ctrl = build("motion", dict(spec), path="control")
    anchors = model.recipe.face_prior_anchors_synthetic
    rows: dict = {}
    for idx in args.test_videos:
        frames, lms, _ = render_clip_landmarks(idx, args.frames)
        base_l, base_m = landmark_angles(model, lms)[:, 0], meter(frames)[:, 0]
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        pts = torch.tensor(np.stack([lms[:, a].mean(1) for a in anchors], 1), dtype=torch.float32) / 31.5 - 1
        for y in yaws:
            turned, _ = _render(idx, args.frames, 64, (y, 0.0, 0.0))
            kp = ctrl({"value": pts}, {"yaw": y})
            e = edit_grid(kp["edit_from"], kp["edit_to"], 64, 64)
            warped = (F.grid_sample(x, e, align_corners=True, padding_mode="border").clamp(0, 1) * 255).round()
            warped = warped.to(torch.uint8).permute(0, 2, 3, 1).numpy()
            moved = np.stack([invert_flow_at(e[i:i + 1], lms[i])[0] for i in range(len(frames))])
            got = rows.setdefault(f"yaw={y:+g}", {k: [] for k in ("rotation_lm", "rotation_mp", "warp_lm", "warp_mp")})
            got["rotation_lm"].append(landmark_angles(model, turned["landmarks"])[:, 0] - base_l)
            got["rotation_mp"].append(meter(turned["frames"])[:, 0] - base_m)
            got["warp_lm"].append(landmark_angles(model, moved)[:, 0] - base_l)
            got["warp_mp"].append(meter(warped)[:, 0] - base_m)
    return {key: {k: float(np.median(np.concatenate(v)) if k.endswith("lm") else np.nanmean(np.concatenate(v)))
                  for k, v in got.items()} for key, got in rows.items()}


def _lip_gap_landmarks(model, landmarks: np.ndarray) -> np.ndarray:
    """(T,) outer-lip gap (renderer landmarks lip_top -> lip_bottom) of (T, 22, 2) pixel landmarks at 64 px, in head
    units (the template-fit scale of the 10 anchor points)."""
    scale = landmark_fit(model, landmarks)["scale"].numpy()
    return np.linalg.norm(landmarks[:, 18] - landmarks[:, 17], axis=-1) / 31.5 / scale


def _lip_gap_mediapipe(meter: PoseMeter, frames_u8: np.ndarray) -> np.ndarray:
    """(T,) MediaPipe's inner-lip gap (mesh points 13 -> 14) in head units (the template-fit scale of its 10 anchor
    points), at 256 px; NaN where it finds no face."""
    out = np.full(len(frames_u8), np.nan)
    for i, f in enumerate(frames_u8):
        found = meter.fit(f)
        if found is not None:
            lm, fit = found
            out[i] = np.linalg.norm(lm[14] - lm[13]) / 128.0 / float(fit["scale"][0])
    return out


def expression_study(model, meter: PoseMeter, args, coefs=(-0.5, 0.5, 1.0)) -> dict:
    """(e) ``--expression mouth_open=C`` on images: the lip gap's change (head units) in ``deformed`` with the edit
    realised on the keypoints and as a warp, beside a *true* opening (the renderer's mouth_open raised by C, frames
    where that stays within [0, 1]); what the template's basis asks: 0.15 C.  Landmark meter (the renderer's lip
    landmarks located through the inverted flow): median; MediaPipe (inner lips): median."""
    from thkit.datasets.synthetic import HeadIdentity, HeadRenderer
    from thkit.transfer_control import build_motion_control

    recipes = {"keypoints": with_realise(model.recipe, "keypoints"), "warp": with_realise(model.recipe, "warp")}
    out = {}
    for c in coefs:
        rows: dict = {}
        for idx in args.test_videos:
            rendered, motion = _render(idx, args.frames)
            frames, lms = rendered["frames"], rendered["landmarks"]
            opened = np.clip(motion.mouth_open + c, 0, 1).astype(np.float32)
            keep = np.abs(opened - motion.mouth_open - c) < 1e-6
            motion.mouth_open = opened
            truth = HeadRenderer(64).render(HeadIdentity.sample(np.random.default_rng([0, 2, idx])), motion)
            rows.setdefault("true_landmarks", []).append(
                (_lip_gap_landmarks(model, truth["landmarks"]) - _lip_gap_landmarks(model, lms))[keep])
            rows.setdefault("true_mediapipe", []).append(
                (_lip_gap_mediapipe(meter, truth["frames"]) - _lip_gap_mediapipe(meter, frames))[keep])
            base = animate_frames(model, frames[0], frames)
            base_l = _lip_gap_landmarks(model, landed_landmarks(base, lms[0]))
            base_m = _lip_gap_mediapipe(meter, base["deformed"])
            for mode, recipe in recipes.items():
                res = animate_frames(model, frames[0], frames,
                                     build_motion_control(recipe, expression={"mouth_open": c}))
                rows.setdefault(f"{mode}_landmarks", []).append(
                    _lip_gap_landmarks(model, landed_landmarks(res, lms[0])) - base_l)
                rows.setdefault(f"{mode}_mediapipe", []).append(_lip_gap_mediapipe(meter, res["deformed"]) - base_m)
        out[f"mouth_open={c:+g}"] = dict(
            basis_asks=0.15 * c,
            **{k: dict(median=float(np.nanmedian(np.concatenate(v))), frames=int(np.isfinite(np.concatenate(v)).sum()))
               for k, v in rows.items()})
    return out


def outline_sensitivity(model, meter: PoseMeter, args) -> dict:
    """(w) how the warp's head outline (template units; the renderer's mean head is (0.75, 1.0)) changes the yaw
    readings: the same yaw requests with outlines 0.8x, 1.2x and 1.47x as large."""
    out = {}
    for radii in ((0.6, 0.8), (0.9, 1.2), (1.1, 1.4)):
        out[f"{radii[0]:g}x{radii[1]:g}"] = axes_study(
            model, meter, args, [("yaw", y) for y in (-20.0, -10.0, 10.0, 20.0)], "warp",
            dict(radii=radii, points=16))
    return out


def _mediapipe_error(meter, pred, reference) -> tuple[float, int]:
    """Mean |angle difference| (deg, over the three angles) of MediaPipe-fitted poses, and the frames it saw."""
    d = np.abs(meter(pred) - reference)
    ok = np.isfinite(d[:, 0])
    return (float(d[ok].mean()) if ok.any() else float("nan")), int(ok.sum())


def alignment_study(model, meter: PoseMeter, args) -> dict:
    """(a): source = frame 0 re-rendered with a pose offset; output pose error vs the driving truth, per angle, for the
    generated frames and for the warped source (``deformed``)."""
    from thkit.transfer_control import build_motion_control

    cfg = model.recipe
    variants = {"none": None, "similarity": build_motion_control({}, align=True),
                "pose": build_motion_control(cfg, align=True)}
    errs = {(k, o): [] for k in variants for o in OUTPUTS}
    mp = {(k, o): [] for k in variants for o in OUTPUTS}
    check, source_err = [], []
    kp_errs = {k: [] for k in variants}
    for n, idx in enumerate(args.test_videos):
        off = args.offsets[n % len(args.offsets)]
        drv, motion = render_clip(idx, args.frames)
        src, _ = render_clip(idx, 1, offset=off)
        truth = np.degrees(np.stack([motion.yaw, motion.pitch, motion.roll], 1))
        rf = RenderFitMeter(idx)
        mid = tuple(o / 2 for o in off)  # search centred between the aligned and the unaligned answers
        check.append(np.abs(rf(drv, motion, mid) - truth).mean(0))  # the meter on the renderer's own frames
        drv_mp = meter(drv)
        for k, ctrl in variants.items():
            kp_errs[k].append(np.abs(keypoint_pose(model, src[0], drv, ctrl) - truth).mean(0))
            res = animate_frames(model, src[0], drv, ctrl)
            for o in OUTPUTS:
                errs[k, o].append(np.abs(rf(res[o], motion, mid) - truth).mean(0))
                mp[k, o].append(_mediapipe_error(meter, res[o], drv_mp))
        source_err.append(np.abs(np.array(off)))
    return dict(offsets=[list(o) for o in args.offsets[:len(args.test_videos)]],
                offset_abs_mean_deg=np.mean(source_err, 0).round(2).tolist(),
                render_fit_on_driving_deg=np.mean(check, 0).round(2).tolist(),
                keypoint_error_deg={k: np.mean(v, 0).round(2).tolist() for k, v in kp_errs.items()},
                error_deg={f"{k}/{o}": np.mean(v, 0).round(2).tolist() for (k, o), v in errs.items()},
                mediapipe={f"{k}/{o}": dict(error_deg=float(np.nanmean([e for e, _ in v])), frames=sum(c for _, c in v))
                           for (k, o), v in mp.items()})


def control_study(model, meter: PoseMeter, args, realise: str | None = None) -> dict:
    """(c): each held-out video animated by itself, with --pose yaw=Y and without; the output's yaw change (with
    ``realise``: the control set to realise its edits that way, else as the model's recipe says)."""
    from thkit.transfer_control import build_motion_control

    recipe = model.recipe if realise is None else with_realise(model.recipe, realise)
    rows = {(str(y), o): [] for y in args.yaws for o in OUTPUTS}
    mp_rows = {(str(y), o): [] for y in args.yaws for o in OUTPUTS}
    for idx in args.test_videos:
        drv, motion = render_clip(idx, args.frames)
        rf = RenderFitMeter(idx)
        base_res = animate_frames(model, drv[0], drv)
        base = {o: rf(base_res[o], motion, angles=("yaw",))[:, 0] for o in OUTPUTS}
        base_mp = {o: meter(base_res[o])[:, 0] for o in OUTPUTS}
        for y in args.yaws:
            res = animate_frames(model, drv[0], drv, build_motion_control(recipe, pose={"yaw": y}))
            for o in OUTPUTS:
                rows[str(y), o].append(rf(res[o], motion, angles=("yaw",))[:, 0] - base[o])
                mp_rows[str(y), o].append(meter(res[o])[:, 0] - base_mp[o])
    out = {}
    for (y, o), v in rows.items():
        d = np.concatenate(v)
        m = np.concatenate(mp_rows[y, o])
        out[f"{y}/{o}"] = dict(yaw_change=float(d.mean()), yaw_change_sd=float(d.std()), frames=int(len(d)),
                               mediapipe_yaw_change=float(np.nanmean(m)) if np.isfinite(m).any() else float("nan"),
                               mediapipe_frames=int(np.isfinite(m).sum()))
    return out


def _slope_through_origin(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(y)
    return float((x[ok] * y[ok]).sum() / (x[ok] ** 2).sum())


def pose_gain(model, meter: PoseMeter, args) -> dict:
    """(g) Calibration of the control, on the *calibration* videos (not the test ones): the meter's scale (slope of
    MediaPipe's yaw change on the renderer's own frames against the true change, :func:`yaw_calibration`), then the
    output's yaw change per degree of requested yaw with the uncalibrated control (MediaPipe on ``deformed``,
    edited minus unedited, divided by the meter's scale; slope through the origin).  That slope is the model's
    ``control.pose_gain.yaw``: the fraction of a keypoint rotation it turns its output head by."""
    from thkit.transfer_control import build_motion_control

    scale = yaw_calibration(model, meter, args, videos=args.calibration_videos)["slopes"]["mediapipe_on_driving"]
    xs, ys = [], []
    for idx in args.calibration_videos:
        drv, _ = render_clip(idx, args.frames)
        base = meter(animate_frames(model, drv[0], drv)["deformed"])[:, 0]
        for y in args.calibration_yaws:
            res = animate_frames(model, drv[0], drv, build_motion_control(model.recipe, pose={"yaw": y}))
            xs.append(np.full(len(drv), y))
            ys.append((meter(res["deformed"])[:, 0] - base) / scale)
    x, y = np.concatenate(xs), np.concatenate(ys)
    per_request = {str(r): float(np.nanmean(y[x == r])) for r in args.calibration_yaws}
    return dict(gain=_slope_through_origin(x, y), meter_scale=scale, videos=list(args.calibration_videos),
                output_yaw_change=per_request, frames=int(np.isfinite(y).sum()))


def calibrated_control_study(model, meter: PoseMeter, args, gain: float, scale: float) -> dict:
    """(g) The control with ``pose_gain.yaw = gain`` on the *test* videos: each animated by itself with ``pose={'yaw':
    Y}`` and without; the output's yaw change (MediaPipe on ``deformed`` / the meter's scale, true degrees) and the
    keypoints' (template fit) against the request.  Requests beyond what the gain allows are left out."""
    from thkit.transfer_control import build_motion_control

    limit = float(model.recipe.control.pose_range["yaw"]) * gain
    cfg = {"control": dict(model.recipe.control, pose_gain=dict(yaw=gain))}
    yaws = [y for y in args.calibrated_yaws if abs(y) <= limit]
    rows = {y: ([], []) for y in yaws}
    for idx in args.test_videos:
        drv, _ = render_clip(idx, args.frames)
        base = meter(animate_frames(model, drv[0], drv)["deformed"])[:, 0]
        base_kp = keypoint_pose(model, drv[0], drv)[:, 0]
        for y in yaws:
            ctrl = build_motion_control(cfg, pose={"yaw": y})
            res = animate_frames(model, drv[0], drv, ctrl)
            rows[y][0].append((meter(res["deformed"])[:, 0] - base) / scale)
            rows[y][1].append(keypoint_pose(model, drv[0], drv, ctrl)[:, 0] - base_kp)
    out = {}
    for y, (img, kp) in rows.items():
        d, k = np.concatenate(img), np.concatenate(kp)
        ok = np.isfinite(d)
        out[str(y)] = dict(output_yaw_change=float(d[ok].mean()), output_sd=float(d[ok].std()),
                           error=float(d[ok].mean() - y), frames=int(ok.sum()), keypoint_yaw_change=float(k.mean()))
    errors = [abs(v["error"]) for v in out.values()]
    return dict(gain=gain, largest_request=limit, requests=out,
                mean_abs_error=float(np.mean(errors)) if errors else float("nan"),
                max_abs_error=float(np.max(errors)) if errors else float("nan"))


def yaw_calibration(model, meter: PoseMeter, args, frames: int = 24, videos=None) -> dict:
    """What a yaw change of the *driving* head does, in plain reconstruction (no edit): slopes of the yaw change
    (frame t minus frame 0) measured by MediaPipe on the renderer's frames, by a template fit of the model's
    keypoints, and by MediaPipe on the model's ``deformed`` output and on its generated frame (frames where it finds
    the face in both frame t and frame 0), each against the renderer's true yaw change.  It says how much of a yaw
    change the meter sees and how much the model realises, edit or no edit."""
    xs, out = [], {"mediapipe_on_driving": [], "keypoints": [], "mediapipe_on_deformed": [],
                   "mediapipe_on_prediction": []}
    for idx in (args.test_videos if videos is None else videos):
        drv, motion = render_clip(idx, frames)
        truth = np.degrees(motion.yaw)
        res = animate_frames(model, drv[0], drv)
        xs.append(truth - truth[0])
        for k, v in (("mediapipe_on_driving", meter(drv)[:, 0]), ("keypoints", keypoint_pose(model, drv[0], drv)[:, 0]),
                     ("mediapipe_on_deformed", meter(res["deformed"])[:, 0]),
                     ("mediapipe_on_prediction", meter(res["prediction"])[:, 0])):
            out[k].append(v - v[0])
    x = np.concatenate(xs)
    slopes, seen = {}, {}
    for k, v in out.items():
        y = np.concatenate(v)
        ok = np.isfinite(y)
        slopes[k] = float(np.polyfit(x[ok], y[ok], 1)[0]) if ok.sum() > 2 else float("nan")
        seen[k] = int(ok.sum())
    return dict(slopes=slopes, frames=int(len(x)), frames_seen=seen, yaw_change_range=[float(x.min()), float(x.max())])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default=RECIPE, help="the semantic-prior recipe trained and measured (64 px)")
    p.add_argument("--minutes", type=float, default=8.0, help="training CPU time per variant (1 thread)")
    p.add_argument("--schedule", action=argparse.BooleanOptionalAction, default=True,
                   help="decay the learning rate at the recipe's MultiStepLR milestones taken as fractions of the "
                        "CPU budget (as benchmarks/learns.py; --no-schedule: constant, as the runs before 2026-12-05)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="training seed (weights and batch order)")
    p.add_argument("--data", default="data/synth64")
    p.add_argument("--work-dir", default="work_dirs/semantic_prior")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--only", choices=["with", "without"], default=None, help="train one variant only")
    p.add_argument("--frames", type=int, default=8, help="frames per rendered clip in (a) and (c)")
    p.add_argument("--videos", type=int, default=4, help="held-out head videos used in (a) and (c)")
    p.add_argument("--parts", default="abcglrwe", help="which measurements: any of a, b, c, g (the control's gain, "
                                                       "calibrated on other held-out videos, then tested), l (the warp "
                                                       "measured on the renderer's landmarks), r (yaw, pitch and roll "
                                                       "requests), w (the same, and more yaw requests, with the edit "
                                                       "realised as a warp of the predicted motion), e (mouth_open "
                                                       "edits on images)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.test_videos = list(range(90, 99))[:args.videos]  # held-out head videos of data/synth64 (99 is a warp video)
    args.offsets = [(20.0, 0.0, 0.0), (-20.0, 0.0, 0.0), (0.0, 0.0, 12.0), (15.0, 8.0, 0.0)]
    args.yaws = [-20.0, -10.0, 10.0, 20.0]
    args.calibration_videos = list(range(94, 98))  # other held-out videos: the gain is not fitted on the test ones
    args.calibration_yaws = [-30.0, -20.0, -10.0, 10.0, 20.0, 30.0]  # keypoint rotations (uncalibrated requests)
    args.calibrated_yaws = [-15.0, -10.0, -5.0, 5.0, 10.0, 15.0]
    res: dict = {}
    if not args.skip_training:
        res["training"] = [train(v, args) for v in ([args.only] if args.only else ["with", "without"])]
        if args.only:
            print(json.dumps(res, indent=1))
            return res
    variants = ("with", "without") if "b" in args.parts else ("with",)
    models = {v: load(v, args).eval() for v in variants}
    if "b" in args.parts:
        res["geometry_loss"] = geometry_curve(args)
        res["tracking"] = keypoint_tracking(models, args)
    meter = PoseMeter()
    if "a" in args.parts:
        res["alignment"] = alignment_study(models["with"], meter, args)
    if "c" in args.parts:
        res["control"] = control_study(models["with"], meter, args)
        res["yaw_calibration"] = yaw_calibration(models["with"], meter, args)
    if "g" in args.parts:
        res["pose_gain"] = cal = pose_gain(models["with"], meter, args)
        res["calibrated_control"] = calibrated_control_study(models["with"], meter, args, cal["gain"],
                                                             cal["meter_scale"])
    if "l" in args.parts:
        res["landmarks"] = landmark_study(models["with"], args)
    if "r" in args.parts:
        res["axes"] = axes_study(models["with"], meter, args)
    if "e" in args.parts:
        res["expression"] = expression_study(models["with"], meter, args)
    if "w" in args.parts:
        res["warp_axes"] = axes_study(models["with"], meter, args, WARP_REQUESTS, "warp")
        other = argparse.Namespace(**{**vars(args), "test_videos": args.calibration_videos})
        res["warp_yaw_other_videos"] = axes_study(models["with"], meter, other,
                                                  [("yaw", y) for y in WARP_YAWS], "warp")
        res["warp_outline_sensitivity"] = outline_sensitivity(models["with"], meter, args)
        res["warp_meter_check"] = meter_check(models["with"], meter, args, WARP_YAWS)
        res["warp_meter_check_other_videos"] = meter_check(models["with"], meter, other, WARP_YAWS)
        res["warp_control"] = control_study(models["with"], meter, args, realise="warp")
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()

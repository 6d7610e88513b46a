"""A built-in synthetic talking-head dataset: exact ground truth, no downloads.

Two kinds of videos, both with the same 22 named landmarks per frame (:data:`LANDMARK_NAMES`):

* ``head`` videos: a procedural 2.5D head rendered by ray-casting ellipsoids (head, nose, ears, hair,
  neck, shoulders) with an orthographic camera.  Face features (eyes with iris and pupil, lids, brows,
  lips, teeth, freckles, skin and hair texture) are painted on the head ellipsoid in head coordinates, so
  they follow the pose exactly; Lambertian shading makes rotation visible.  Every video has its own
  identity (colours, proportions, hair style, background, clothes, light) and smooth motion: translation,
  scale, yaw / pitch / roll, blinks, gaze, brow raises and mouth opening.  Edges are anti-aliased with the
  implicit-function trick ``coverage = clamp(0.5 - f / |grad f|, 0, 1)``.  Everything is vectorised torch
  on the CPU; a frame of 256x256 takes a few milliseconds.
* ``warp`` videos: known warps of a real face, scikit-image's ``astronaut`` (NASA, public domain): per
  frame a similarity transform, pseudo yaw / pitch shifts and "expression" moves (eye closing, mouth
  opening, brow raise) of hand-placed landmarks, realised as a thin-plate spline through those landmarks
  (kornia), so the warped landmarks are exact by construction.

:func:`write_synthetic_dataset` (``thkit data synth``) writes them in the FOMM VoxCeleb layout that
:class:`~thkit.datasets.frames.FramesDataset` reads, with ``ground_truth.json`` (per-frame landmarks in
pixel coordinates, visibility and the motion parameters).  :class:`SyntheticTalkingHeads` is a
``FramesDataset`` that writes the data first when its ``root`` does not exist.

Everything is deterministic under ``seed``: video ``i`` depends only on ``(seed, i)`` and the generator
options.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thkit.datasets.frames import (
    GROUND_TRUTH_FILE,
    DatasetError,
    DataWarning,
    FramesDataset,
    write_frames,
    write_video,
)
from thkit.errors import ThkitError
from thkit.layers.grid import make_coordinate_grid
from thkit.motion.tpsmm import ThinPlateSpline
from thkit.registry import DATASETS

Tensor = torch.Tensor

FORMAT_TAG = "thkit-synth/1"
#: version of the generator's content (motion ranges, proportions); stored with the data, so that a dataset written
#: by an older generator is reported instead of silently reused.  2: VoxCeleb-sized heads and head moves (2026-11).
#: 3: the 'warp' videos use the project's one thin-plate spline (:class:`thkit.motion.tpsmm.ThinPlateSpline`, float32)
#: instead of a copy solved in float64: sampling positions move by ~1e-5 of the crop, a few pixels by one grey level.
GENERATOR_VERSION = 3

#: Landmark order of both kinds of video.  "r" / "l" are the subject's right / left (image left / right).
LANDMARK_NAMES = (
    "brow_r_outer", "brow_r_inner", "brow_l_inner", "brow_l_outer",
    "eye_r_outer", "eye_r_inner", "eye_l_inner", "eye_l_outer",
    "eye_r_top", "eye_r_bottom", "eye_l_top", "eye_l_bottom",
    "pupil_r", "pupil_l", "nose_tip",
    "mouth_r", "mouth_l", "lip_top", "lip_bottom", "mouth_inner_top", "mouth_inner_bottom",
    "chin",
)
#: Landmark index pairs that a horizontal flip exchanges.
FLIP_PAIRS = ((0, 3), (1, 2), (4, 7), (5, 6), (8, 10), (9, 11), (12, 13), (15, 16))

#: Per-pixel labels of the rendered head videos (``render_head_video(...)['labels']``).
LABELS = {
    "background": 0, "skin": 1, "hair": 2, "eye_white": 3, "iris": 4, "pupil": 5, "brow": 6, "lip": 7,
    "mouth_inside": 8, "teeth": 9, "nose": 10, "ear": 11, "neck": 12, "clothes": 13, "lash": 14,
}

_SKIN_TONES = np.array([
    [255, 224, 196], [241, 194, 158], [224, 172, 138], [198, 134, 97], [161, 102, 72], [125, 80, 56],
    [92, 58, 42], [235, 200, 170], [210, 160, 120],
], np.float32) / 255.0
_HAIR_COLOURS = np.array([
    [25, 20, 18], [60, 40, 28], [105, 70, 40], [160, 120, 70], [210, 180, 120], [150, 60, 30],
    [170, 170, 170], [60, 60, 90], [30, 30, 30],
], np.float32) / 255.0
_IRIS_COLOURS = np.array([[90, 60, 35], [60, 110, 170], [70, 120, 70], [110, 110, 120], [50, 35, 25]],
                         np.float32) / 255.0


# --------------------------------------------------------------------------------------------------------
# identities and motion
# --------------------------------------------------------------------------------------------------------
@dataclass
class HeadIdentity:
    """Everything that stays fixed within a video: proportions, colours, hair, background, light.

    Head coordinates: X right, Y down, Z towards the camera, the head ellipsoid centred at 0 with radii
    ``(head_a, 1, head_c)``.
    """

    head_a: float = 0.75
    head_c: float = 0.8
    skin: np.ndarray = field(default_factory=lambda: _SKIN_TONES[1].copy())
    hair: np.ndarray = field(default_factory=lambda: _HAIR_COLOURS[1].copy())
    hair_style: int = 2  # 0 bald, 1 short (cap), 2 volume, 3 long, 4 bun
    hairline: float = -0.62
    hairline_curve: float = 0.25
    eye_x: float = 0.3
    eye_y: float = -0.08
    eye_w: float = 0.13
    eye_up: float = 0.075
    eye_low: float = 0.05
    iris_r: float = 0.052
    iris: np.ndarray = field(default_factory=lambda: _IRIS_COLOURS[0].copy())
    brow_gap: float = 0.09
    brow_thick: float = 0.028
    brow_arch: float = 1.0
    nose_y: float = 0.14
    nose_len: float = 0.15
    nose_w: float = 0.085
    nose_depth: float = 0.15
    mouth_y: float = 0.47
    mouth_w: float = 0.22
    lip_thick: float = 0.045
    mouth_open_max: float = 0.13
    lip: np.ndarray = field(default_factory=lambda: np.array([0.7, 0.3, 0.3], np.float32))
    ear: float = 1.0
    clothes: np.ndarray = field(default_factory=lambda: np.array([0.2, 0.3, 0.6], np.float32))
    clothes2: np.ndarray = field(default_factory=lambda: np.array([0.9, 0.9, 0.9], np.float32))
    clothes_pattern: int = 0  # 0 plain, 1 stripes, 2 checks
    clothes_freq: float = 8.0
    bg_top: np.ndarray = field(default_factory=lambda: np.array([0.6, 0.7, 0.8], np.float32))
    bg_bottom: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.35, 0.4], np.float32))
    bg_blobs: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), np.float32))  # x, y, sigma, rgb
    bg_waves: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # fx, fy, phase, amp
    skin_waves: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))  # fx, fy, fz, phase, amp
    freckles: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))  # X, Y, radius
    blush: float = 0.25
    light: np.ndarray = field(default_factory=lambda: np.array([-0.4, -0.5, 0.77], np.float32))
    base_xy: np.ndarray = field(default_factory=lambda: np.array([0.0, -0.12], np.float32))
    base_scale: float = 0.44

    @classmethod
    def sample(cls, rng: np.random.Generator) -> HeadIdentity:
        u = rng.uniform

        def jitter(c, amount):
            return np.clip(c * (1 + rng.normal(0, amount, 3)), 0, 1).astype(np.float32)

        skin = jitter(_SKIN_TONES[rng.integers(len(_SKIN_TONES))], 0.05)
        hair = jitter(_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))], 0.1)
        eye_y = u(-0.12, -0.04)
        eye_up = u(0.07, 0.1)
        hue = rng.uniform(0, 1, 3)
        clothes = np.clip(0.15 + 0.75 * hue / hue.max() * u(0.4, 1.0), 0, 1).astype(np.float32)
        bg_top = (0.5 * rng.uniform(0.15, 0.95, 3) + 0.5 * u(0.3, 0.8)).astype(np.float32)  # muted colours
        bg_bottom = np.clip(bg_top * u(0.4, 0.9) + rng.normal(0, 0.08, 3), 0, 1).astype(np.float32)
        n_blobs = rng.integers(2, 7)
        blobs = np.concatenate([
            rng.uniform(-1.1, 1.1, (n_blobs, 2)), rng.uniform(0.08, 0.35, (n_blobs, 1)),
            0.6 * rng.uniform(0.05, 0.95, (n_blobs, 3)) + 0.4 * bg_top], 1).astype(np.float32)
        n_waves = 3
        waves = np.concatenate([
            rng.uniform(2, 14, (n_waves, 2)) * rng.choice([-1, 1], (n_waves, 2)),
            rng.uniform(0, 2 * np.pi, (n_waves, 1)), rng.uniform(0.02, 0.07, (n_waves, 1))], 1).astype(np.float32)
        skin_waves = np.concatenate([
            rng.uniform(5, 16, (4, 3)) * rng.choice([-1, 1], (4, 3)), rng.uniform(0, 2 * np.pi, (4, 1)),
            rng.uniform(0.015, 0.04, (4, 1))], 1).astype(np.float32)
        n_freckles = rng.integers(3, 14)
        freckles = np.stack([rng.uniform(-0.55, 0.55, n_freckles), rng.uniform(-0.55, 0.7, n_freckles),
                             rng.uniform(0.008, 0.02, n_freckles)], 1).astype(np.float32)
        # keep freckles off the eyes and the mouth, where they would hide the features
        keep = (np.abs(np.abs(freckles[:, 0]) - 0.3) > 0.2) | (np.abs(freckles[:, 1] + 0.08) > 0.15)
        keep &= (np.abs(freckles[:, 0]) > 0.3) | (np.abs(freckles[:, 1] - 0.5) > 0.15)
        light = np.array([u(-0.7, 0.7), u(-0.7, -0.1), u(0.6, 1.0)], np.float32)
        lip = np.clip(skin * np.array([0.85, 0.5, 0.5]) + np.array([0.12, 0, 0.02]) + rng.normal(0, 0.03, 3), 0, 1)
        return cls(
            head_a=u(0.68, 0.8), head_c=u(0.75, 0.85), skin=skin, hair=hair,
            hair_style=int(rng.choice(5, p=[0.08, 0.17, 0.35, 0.25, 0.15])), hairline=u(-0.72, -0.56),
            hairline_curve=u(0.12, 0.3),
            eye_x=u(0.27, 0.33), eye_y=eye_y, eye_w=u(0.13, 0.165), eye_up=eye_up, eye_low=u(0.045, 0.065),
            iris_r=u(0.05, 0.064), iris=jitter(_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))], 0.1),
            brow_gap=u(0.07, 0.1), brow_thick=u(0.02, 0.035), brow_arch=u(0.4, 2.0),
            nose_y=u(0.12, 0.2), nose_len=u(0.12, 0.17), nose_w=u(0.07, 0.1), nose_depth=u(0.12, 0.17),
            mouth_y=u(0.45, 0.53), mouth_w=u(0.2, 0.28), lip_thick=u(0.04, 0.06), mouth_open_max=u(0.12, 0.18),
            lip=lip.astype(np.float32), ear=u(0.8, 1.2), clothes=clothes,
            clothes2=np.clip(clothes * u(0.3, 1.6), 0, 1).astype(np.float32),
            clothes_pattern=int(rng.integers(3)), clothes_freq=u(5, 14),
            bg_top=bg_top, bg_bottom=bg_bottom, bg_blobs=blobs, bg_waves=waves, skin_waves=skin_waves,
            freckles=freckles[keep], blush=u(0.1, 0.35), light=light / np.linalg.norm(light),
            base_xy=np.array([u(-0.06, 0.06), u(-0.12, -0.04)], np.float32), base_scale=u(0.68, 0.8),
        )


def smooth_track(rng: np.random.Generator, frames: int, amplitude: float, periods=(24.0, 96.0),
                 n: int = 3) -> np.ndarray:
    """A smooth random curve of ``frames`` samples in [-amplitude, amplitude]: a sum of ``n`` sinusoids with
    random periods (in frames), phases and weights."""
    t = np.arange(frames, dtype=np.float64)[:, None]
    period = rng.uniform(*periods, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    w = rng.uniform(0.3, 1.0, n)
    x = (w * np.sin(2 * np.pi * t / period + phase)).sum(1) / w.sum()
    return (amplitude * x).astype(np.float32)


# periods (in frames) of the head's pose tracks: a 32-frame clip sees most of a swing, so source and driving frames
# of one clip differ by a real head move (VoxCeleb-like), not a drift that copying the source nearly matches
HEAD_PERIODS = (16.0, 64.0)


@dataclass
class HeadMotion:
    """Per-frame motion of one video, arrays of shape (T,).  Angles in radians, translation in image
    coordinates ([-1, 1] spans the frame), openings in [0, 1]."""

    tx: np.ndarray
    ty: np.ndarray
    scale: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    eye_open: np.ndarray
    mouth_open: np.ndarray
    gaze_x: np.ndarray
    gaze_y: np.ndarray
    brow: np.ndarray

    def __len__(self) -> int:
        return len(self.tx)

    @classmethod
    def sample(cls, rng: np.random.Generator, frames: int) -> HeadMotion:
        u = rng.uniform
        t = np.arange(frames, dtype=np.float32)
        # blinks: ~every 1-2.5 s at 25 fps, each a dip of a few frames
        eye = np.full(frames, u(0.8, 1.0), np.float32)
        tb = u(-5, 30)
        while tb < frames + 5:
            width = u(1.2, 2.5)
            eye *= 1 - u(0.85, 1.0) * np.exp(-0.5 * ((t - tb) / width) ** 2)
            tb += u(15, 60)
        # speech: syllable-rate opening under a slow on/off envelope
        env = np.clip(0.55 + smooth_track(rng, frames, 0.9, (40, 120), 2), 0, 1)
        syll = 0.5 + 0.5 * smooth_track(rng, frames, 1.0, (5, 14), 3)
        mouth = np.clip(env * syll * u(0.7, 1.0) * 1.25, 0, 1).astype(np.float32)
        return cls(
            tx=smooth_track(rng, frames, u(0.08, 0.22), HEAD_PERIODS),
            ty=smooth_track(rng, frames, u(0.05, 0.14), HEAD_PERIODS),
            scale=1 + smooth_track(rng, frames, u(0.05, 0.12), HEAD_PERIODS),
            yaw=smooth_track(rng, frames, math.radians(u(12, 40)), HEAD_PERIODS),
            pitch=smooth_track(rng, frames, math.radians(u(6, 20)), HEAD_PERIODS),
            roll=smooth_track(rng, frames, math.radians(u(4, 15)), HEAD_PERIODS),
            eye_open=eye.astype(np.float32),
            mouth_open=mouth,
            gaze_x=smooth_track(rng, frames, u(0.2, 0.8), (20, 60)),
            gaze_y=smooth_track(rng, frames, u(0.1, 0.5), (20, 60)),
            brow=np.clip(smooth_track(rng, frames, u(0.01, 0.035), (20, 80)), -0.015, None),
        )

    def as_dict(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# --------------------------------------------------------------------------------------------------------
# ray-cast renderer
# --------------------------------------------------------------------------------------------------------
def _rotation(yaw: Tensor, pitch: Tensor, roll: Tensor) -> Tensor:
    """(F, 3, 3) head-to-camera rotation ``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (x right, y down, z to camera)."""
    cy, sy, cp, sp, cr, sr = yaw.cos(), yaw.sin(), pitch.cos(), pitch.sin(), roll.cos(), roll.sin()
    o, z = torch.ones_like(yaw), torch.zeros_like(yaw)
    rx = torch.stack([o, z, z, z, cp, -sp, z, sp, cp], -1).view(-1, 3, 3)
    ry = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cr, -sr, z, sr, cr, z, z, z, o], -1).view(-1, 3, 3)
    return rz @ ry @ rx


@dataclass
class _Frames:
    """Camera transforms of a chunk of frames: head (full pose) and body (follows the head loosely)."""

    r_head: Tensor
    r_body: Tensor
    s: Tensor
    t_head: Tensor
    t_body: Tensor
    params: dict[str, Tensor]


def _cast(qx: Tensor, qy: Tensor, rot: Tensor, s: Tensor, t: Tensor, centre, radii, light: Tensor | None = None
          ) -> dict[str, Tensor]:
    """Orthographic rays through image points ``(qx, qy)`` (F, ...) against an ellipsoid (``centre``,
    ``radii``) given in a frame that maps to the camera by ``x_cam = s * rot @ x + (t, 0)``.

    Returns ``fmin``, the ellipsoid's implicit value at the ray's closest approach (< 0 where the ray hits),
    ``z``, the camera depth of the front hit (or of the closest approach), the hit point ``X, Y, Z`` in
    frame coordinates and, with ``light``, the Lambert term ``ndl = max(0, normal . light)``.
    """
    f = rot.shape[0]
    shp = (f,) + (1,) * (qx.dim() - 1)

    def r(i, j):
        return rot[:, i, j].reshape(shp)

    sv = s.reshape(shp)
    dx = (qx - t[:, 0].reshape(shp)) / sv
    dy = (qy - t[:, 1].reshape(shp)) / sv
    # x = R^T (x_cam - (t, 0)) / s - centre = a + z * b
    a = [r(0, i) * dx + r(1, i) * dy - centre[i] for i in range(3)]
    b = [r(2, i) / sv for i in range(3)]
    an = [a[i] / radii[i] for i in range(3)]
    bn = [b[i] / radii[i] for i in range(3)]
    a2 = bn[0] ** 2 + bn[1] ** 2 + bn[2] ** 2
    b1 = an[0] * bn[0] + an[1] * bn[1] + an[2] * bn[2]
    c0 = an[0] ** 2 + an[1] ** 2 + an[2] ** 2 - 1
    disc = b1 * b1 - a2 * c0
    z = (-b1 + disc.clamp_min(0).sqrt()) / a2
    local = [a[i] + z * b[i] for i in range(3)]
    out = {"fmin": -disc / a2, "z": z, "X": local[0] + centre[0], "Y": local[1] + centre[1], "Z": local[2] + centre[2]}
    if light is not None:
        n = [local[i] / radii[i] ** 2 for i in range(3)]
        norm = (n[0] ** 2 + n[1] ** 2 + n[2] ** 2).sqrt().clamp_min(1e-8)
        w = [(rot[:, :, i] * light).sum(-1).reshape(shp) for i in range(3)]  # (R^T light)_i
        out["ndl"] = ((w[0] * n[0] + w[1] * n[1] + w[2] * n[2]) / norm).clamp_min(0)
    return out


def _coverage(f: Tensor) -> Tensor:
    """Anti-aliased coverage of the region ``f < 0`` of (F, H, W) maps: ``clamp(0.5 - f / |grad f|, 0, 1)``."""
    gy, gx = torch.gradient(f, dim=(1, 2))
    g = (gx * gx + gy * gy).sqrt().clamp_min(1e-9)
    return (0.5 - f / g).clamp(0, 1)


def _rgb(colour) -> Tensor:
    """A colour (3,) as a (1, 3, 1, 1) tensor that broadcasts over (F, 3, H, W) images."""
    return torch.as_tensor(np.asarray(colour, dtype=np.float32)).view(1, 3, 1, 1)


def _mix(base: Tensor, colour: Tensor, alpha: Tensor) -> Tensor:
    """``base`` (F, 3, H, W) with ``colour`` painted over it with coverage ``alpha`` (F, H, W)."""
    return base + alpha[:, None] * (colour - base)


class _torch_threads:
    """Run a block with ``n`` torch threads.  The renderers use one: their many small ops gain little from
    more, lose a lot when the cores are shared, and the pixels then never depend on the caller's setting."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


class HeadRenderer:
    """Renders :class:`HeadIdentity` x :class:`HeadMotion` at ``size`` x ``size``, with exact landmarks.

    ``render(identity, motion)`` returns ``frames`` (T, S, S, 3) uint8, ``landmarks`` (T, 22, 2) pixel
    (x, y) (pixel centres at integers), ``visible`` (T, 22) bool and ``labels`` (T, S, S) uint8
    (:data:`LABELS`).
    """

    def __init__(self, size: int, chunk: int = 16):
        if size < 8:
            raise ThkitError(f"synthetic heads need a size of at least 8 pixels, got {size}")
        self.size = int(size)
        self.chunk = int(chunk)
        grid = make_coordinate_grid(self.size, self.size)  # (S, S, 2) (x, y) in [-1, 1]
        self.gx, self.gy = grid[..., 0], grid[..., 1]

    # -- scene ------------------------------------------------------------------------------------------
    @staticmethod
    def primitives(idt: HeadIdentity) -> list[tuple[str, str, tuple, tuple]]:
        """(name, frame, centre, radii) of every ellipsoid of the scene (head coordinates)."""
        a, c = idt.head_a, idt.head_c
        zs = c * math.sqrt(max(1 - idt.nose_y**2, 0.0))  # head surface depth under the nose
        prims = [
            ("head", "head", (0.0, 0.0, 0.0), (a, 1.0, c)),
            ("nose", "head", (0.0, idt.nose_y, zs - 0.5 * idt.nose_depth), (idt.nose_w, idt.nose_len, idt.nose_depth)),
            ("ear_r", "head", (-0.97 * a, 0.08, -0.05), (0.07, 0.17 * idt.ear, 0.1)),
            ("ear_l", "head", (0.97 * a, 0.08, -0.05), (0.07, 0.17 * idt.ear, 0.1)),
            ("neck", "body", (0.0, 1.1, -0.2), (0.36 * a / 0.75, 1.0, 0.32)),
            ("body", "body", (0.0, 2.25, -0.3), (1.9, 0.95, 0.7)),
        ]
        hair = {
            2: ((0.0, -0.15, -0.12), (a * 1.1, 0.95, c * 1.02)),
            3: ((0.0, 0.2, -0.42), (a * 1.18, 1.25, 0.62)),
            4: ((0.0, -1.02, -0.25), (0.33, 0.3, 0.33)),
        }.get(idt.hair_style)
        if hair is not None:
            prims.append(("hair", "head", hair[0], hair[1]))
        return prims

    def _transforms(self, idt: HeadIdentity, motion: HeadMotion, sl: slice) -> _Frames:
        def g(name):
            return torch.as_tensor(np.asarray(getattr(motion, name)[sl], dtype=np.float32))

        yaw, pitch, roll = g("yaw"), g("pitch"), g("roll")
        s = g("scale") * idt.base_scale
        base = torch.as_tensor(idt.base_xy)
        move = torch.stack([g("tx"), g("ty")], -1)
        return _Frames(
            r_head=_rotation(yaw, pitch, roll),
            r_body=_rotation(0.15 * yaw, torch.zeros_like(yaw), 0.3 * roll),
            s=s, t_head=base + move, t_body=base + 0.4 * move,
            params={k: g(k) for k in ("eye_open", "mouth_open", "gaze_x", "gaze_y", "brow")},
        )

    # -- feature geometry (head coordinates) --------------------------------------------------------------
    @staticmethod
    def _surface_z(idt: HeadIdentity, x: Tensor, y: Tensor) -> Tensor:
        return idt.head_c * (1 - (x / idt.head_a) ** 2 - y**2).clamp_min(0).sqrt()

    @staticmethod
    def feature_points(idt: HeadIdentity, p: dict[str, Tensor]) -> Tensor:
        """The 22 landmarks in head coordinates (F, 22, 3): points of the drawn features on the surface."""
        o, m = p["eye_open"], p["mouth_open"]
        ex, ey, ew = idt.eye_x, idt.eye_y, idt.eye_w
        bw = 1.15 * ew
        by = ey - idt.eye_up - idt.brow_gap - p["brow"]
        inset = 0.8 * bw
        brow_end = by + idt.brow_arch * inset**2
        gx = p["gaze_x"] * (ew - idt.iris_r) * 0.6
        gy = ey + p["gaze_y"] * 0.012
        mo = m * idt.mouth_open_max
        cy = idt.mouth_y + 0.5 * mo
        pts = [
            (-ex - inset, brow_end), (-ex + inset, brow_end), (ex - inset, brow_end), (ex + inset, brow_end),
            (-ex - ew, ey), (-ex + ew, ey), (ex - ew, ey), (ex + ew, ey),
            (-ex, ey - idt.eye_up * o), (-ex, ey + idt.eye_low * o),
            (ex, ey - idt.eye_up * o), (ex, ey + idt.eye_low * o),
            (-ex + gx, gy), (ex + gx, gy), (0.0, idt.nose_y),
            (-idt.mouth_w, cy), (idt.mouth_w, cy), (0.0, idt.mouth_y - idt.lip_thick),
            (0.0, idt.mouth_y + mo + idt.lip_thick), (0.0, idt.mouth_y), (0.0, idt.mouth_y + mo), (0.0, 0.9),
        ]
        one = torch.ones_like(o)
        xs = torch.stack([one * x for x, _ in pts], 1)
        ys = torch.stack([one * y for _, y in pts], 1)
        zs = HeadRenderer._surface_z(idt, xs, ys)
        # the nose tip is the front of the nose ellipsoid, not a point of the head surface
        _, _, centre, radii = HeadRenderer.primitives(idt)[1]
        zs[:, 14] = centre[2] + radii[2]
        return torch.stack([xs, ys, zs], -1)

    def _paint_head(self, idt: HeadIdentity, hit: dict[str, Tensor], p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Colour (F, 3, H, W) and labels (F, H, W) of the head ellipsoid's surface."""
        X, Y, Z = hit["X"], hit["Y"], hit["Z"]
        f = X.shape[0]

        def bc(v):  # per-frame parameter -> (F, 1, 1)
            return v.view(f, 1, 1)

        skin = _rgb(idt.skin)
        tex = torch.zeros_like(X)
        for fx, fy, fz, ph, amp in idt.skin_waves.tolist():
            tex = tex + amp * torch.sin(fx * X + fy * Y + fz * Z + ph)
        col = skin * (1 + tex)[:, None]
        label = torch.full(X.shape, LABELS["skin"], dtype=torch.uint8)
        front = (Z > 0.05 * idt.head_c).float()

        def paint(col, label, colour, cov, name=None):
            cov = cov * front
            col = _mix(col, colour if torch.is_tensor(colour) else _rgb(colour), cov)
            if name is not None:
                label = torch.where(cov > 0.5, LABELS[name], label).to(torch.uint8)
            return col, label

        # blush, freckles, nostrils (the nose ellipsoid hides most of them)
        blush = sum(torch.exp(-((X - sx * 0.42) ** 2 + (Y - 0.28) ** 2) / (2 * 0.09**2)) for sx in (-1.0, 1.0))
        col, label = paint(col, label, (0.85, 0.35, 0.35), idt.blush * blush)
        if len(idt.freckles):
            d = None
            for fx, fy, fr in idt.freckles.tolist():
                di = ((X - fx) ** 2 + (Y - fy) ** 2).sqrt() - fr
                d = di if d is None else torch.minimum(d, di)
            col, label = paint(col, label, skin * 0.6, _coverage(d))
        ny = idt.nose_y + 0.75 * idt.nose_len
        nostrils = (((X.abs() - 0.5 * idt.nose_w) / 1.6) ** 2 + (Y - ny) ** 2).sqrt() - 0.014
        col, label = paint(col, label, skin * 0.45, _coverage(nostrils))

        # mouth: lips, inside, teeth, lip line
        mo = bc(p["mouth_open"]) * idt.mouth_open_max
        cy = idt.mouth_y + 0.5 * mo
        ry_out = idt.lip_thick + 0.5 * mo
        lips = (((X / idt.mouth_w) ** 2 + ((Y - cy) / ry_out) ** 2).sqrt() - 1) * ry_out
        col, label = paint(col, label, idt.lip, _coverage(lips), "lip")
        ry_in = (0.5 * mo).clamp_min(1e-3)
        rx_in = 0.82 * idt.mouth_w
        inside = (((X / rx_in) ** 2 + ((Y - cy) / ry_in) ** 2).sqrt() - 1) * ry_in
        cov_in = _coverage(inside)
        col, label = paint(col, label, (0.25, 0.05, 0.07), cov_in, "mouth_inside")
        teeth = torch.maximum(inside, Y - (cy - ry_in + ry_in.clamp_max(0.025)))
        col, label = paint(col, label, (0.93, 0.92, 0.86), _coverage(teeth), "teeth")
        line = torch.maximum((Y - cy).abs() - 0.007, X.abs() - rx_in)
        col, label = paint(col, label, _rgb(idt.lip) * 0.45, _coverage(line) * (1 - cov_in))

        # eyes: almond opening, iris, pupil, lash line on the upper lid; brows above
        o = bc(p["eye_open"])
        gx = bc(p["gaze_x"]) * (idt.eye_w - idt.iris_r) * 0.6
        gy = bc(p["gaze_y"]) * 0.012
        by = idt.eye_y - idt.eye_up - idt.brow_gap - bc(p["brow"])
        hair_dark = _rgb(idt.hair) * 0.7
        ax = X.abs()  # both eyes at once: features are symmetric in X (gaze shifts both irises alike)
        sgn = torch.sign(X)
        dx = ax - idt.eye_x
        shape = (1 - (dx / idt.eye_w) ** 2).clamp_min(0)
        top = idt.eye_y - idt.eye_up * o * shape
        bottom = idt.eye_y + idt.eye_low * o * shape
        eye = torch.maximum(torch.maximum(dx.abs() - idt.eye_w, top - Y), Y - bottom)
        cov_eye = _coverage(eye)
        col, label = paint(col, label, (0.95, 0.94, 0.92), cov_eye, "eye_white")
        r = ((sgn * dx - gx) ** 2 + (Y - idt.eye_y - gy) ** 2).sqrt()
        col, label = paint(col, label, idt.iris, _coverage(r - idt.iris_r) * cov_eye, "iris")
        col, label = paint(col, label, (0.03, 0.03, 0.03), _coverage(r - 0.5 * idt.iris_r) * cov_eye, "pupil")
        lash = torch.maximum((Y - (top - 0.004)).abs() - 0.008, dx.abs() - 1.05 * idt.eye_w)
        col, label = paint(col, label, hair_dark * 0.5, _coverage(lash), "lash")
        brow = torch.maximum((Y - (by + idt.brow_arch * dx**2)).abs() - idt.brow_thick, dx.abs() - 1.15 * idt.eye_w)
        col, label = paint(col, label, hair_dark, _coverage(brow), "brow")

        # hair cap: above the hairline, lower at the temples and down the back of the head
        if idt.hair_style != 0:
            line_y = idt.hairline + idt.hairline_curve * (X / idt.head_a) ** 2
            line_y = line_y + 0.9 * (1 - Z / (0.45 * idt.head_c)).clamp(0, 1)
            cov = _coverage(Y - line_y)
            hair = _rgb(idt.hair) * (1 + 0.12 * torch.sin(60 * X + 4 * torch.sin(9 * Y)))[:, None]
            col = _mix(col, hair, cov)
            label = torch.where(cov > 0.5, LABELS["hair"], label).to(torch.uint8)
        return col, label

    def _paint(self, name: str, idt: HeadIdentity, hit: dict[str, Tensor], p: dict[str, Tensor]
               ) -> tuple[Tensor, Tensor]:
        X, Y = hit["X"], hit["Y"]
        shape = (X.shape[0], 3) + X.shape[1:]
        if name == "head":
            return self._paint_head(idt, hit, p)
        if name == "hair":
            hair = _rgb(idt.hair) * (1 + 0.15 * torch.sin(55 * X + 5 * torch.sin(7 * Y)))[:, None]
            return hair, torch.full(X.shape, LABELS["hair"], dtype=torch.uint8)
        if name in ("nose", "ear_r", "ear_l", "neck"):
            tint = {"nose": (1.0, 0.95, 0.93), "neck": (0.78, 0.78, 0.78)}.get(name, (0.93, 0.93, 0.93))
            lab = "ear" if name.startswith("ear") else name
            return (_rgb(idt.skin) * _rgb(tint)).expand(shape), torch.full(X.shape, LABELS[lab], dtype=torch.uint8)
        # clothes
        k = idt.clothes_freq
        if idt.clothes_pattern == 1:
            w = 0.5 + 0.5 * torch.sin(k * X)
        elif idt.clothes_pattern == 2:
            w = 0.5 + 0.5 * torch.sin(k * X) * torch.sin(k * Y)
        else:
            w = 0.1 * torch.sin(3 * X + 2 * Y)
        col = _mix(_rgb(idt.clothes).expand(shape), _rgb(idt.clothes2), w.clamp(0, 1))
        return col, torch.full(X.shape, LABELS["clothes"], dtype=torch.uint8)

    def background(self, idt: HeadIdentity) -> Tensor:
        """Static (1, 3, S, S) background: vertical gradient, soft blobs and low-frequency waves."""
        x, y = self.gx[None], self.gy[None]
        w = ((y + 1) / 2)[:, None]
        bg = _rgb(idt.bg_top) * (1 - w) + _rgb(idt.bg_bottom) * w
        for bx, by, sig, r, g, b in idt.bg_blobs.tolist():
            a = 0.6 * torch.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * sig**2))
            bg = _mix(bg, _rgb((r, g, b)), a)
        wave = torch.zeros_like(x)
        for fx, fy, ph, amp in idt.bg_waves.tolist():
            wave = wave + amp * torch.sin(fx * x + fy * y + ph)
        return (bg * (1 + wave[:, None])).clamp(0, 1)

    # -- rendering ------------------------------------------------------------------------------------------
    def render(self, idt: HeadIdentity, motion: HeadMotion) -> dict[str, np.ndarray]:
        with _torch_threads(1):
            return self._render(idt, motion)

    def _render(self, idt: HeadIdentity, motion: HeadMotion) -> dict[str, np.ndarray]:
        n = len(motion)
        frames, labels, lms, vis = [], [], [], []
        bg = self.background(idt)
        for start in range(0, n, self.chunk):
            fr = self._transforms(idt, motion, slice(start, min(n, start + self.chunk)))
            img, lab = self._render_chunk(idt, fr, bg)
            pts, v = self._landmarks(idt, fr)
            frames.append((img * 255).round_().to(torch.uint8).permute(0, 2, 3, 1))
            labels.append(lab)
            lms.append(pts)
            vis.append(v)
        return {
            "frames": torch.cat(frames).numpy(),
            "labels": torch.cat(labels).numpy(),
            "landmarks": torch.cat(lms).numpy(),
            "visible": torch.cat(vis).numpy(),
        }

    def _frame_of(self, fr: _Frames, which: str):
        return (fr.r_head, fr.t_head) if which == "head" else (fr.r_body, fr.t_body)

    def _box(self, fr: _Frames, which: str, centre, radii) -> tuple[int, int, int, int] | None:
        """Pixel rows/columns (i0, i1, j0, j1) that the ellipsoid can cover in any frame of the chunk."""
        rot, t = self._frame_of(fr, which)
        cc = fr.s[:, None] * (rot @ torch.tensor(centre, dtype=torch.float32))[:, :2] + t
        rad = (fr.s * max(radii))[:, None]
        lo = ((cc - rad).min(0).values + 1) * (self.size - 1) / 2
        hi = ((cc + rad).max(0).values + 1) * (self.size - 1) / 2
        j0, i0 = (int(math.floor(v)) - 2 for v in lo.tolist())
        j1, i1 = (int(math.ceil(v)) + 3 for v in hi.tolist())
        i0, j0 = max(i0, 0), max(j0, 0)
        i1, j1 = min(i1, self.size), min(j1, self.size)
        if i1 - i0 < 3 or j1 - j0 < 3:
            return None
        return i0, i1, j0, j1

    def _render_chunk(self, idt: HeadIdentity, fr: _Frames, bg: Tensor) -> tuple[Tensor, Tensor]:
        f, size = fr.s.shape[0], self.size
        light = torch.as_tensor(idt.light)
        prims = self.primitives(idt)
        alpha_all = torch.zeros(len(prims), f, size, size)
        z_all = torch.full((len(prims), f, size, size), -1e9)
        parts = []
        # every part is ray-cast and painted inside its own bounding box only
        for k, (name, which, centre, radii) in enumerate(prims):
            box = self._box(fr, which, centre, radii)
            if box is None:
                continue
            i0, i1, j0, j1 = box
            rot, t = self._frame_of(fr, which)
            qx = self.gx[i0:i1, j0:j1].expand(f, -1, -1)
            qy = self.gy[i0:i1, j0:j1].expand(f, -1, -1)
            hit = _cast(qx, qy, rot, fr.s, t, centre, radii, light)
            col, lab = self._paint(name, idt, hit, fr.params)
            ndl = hit["ndl"]
            col = col * (0.5 + 0.55 * ndl)[:, None]
            if name in ("head", "nose", "hair"):  # a little specular highlight
                col = col + 0.12 * (ndl**16)[:, None]
            alpha_all[k, :, i0:i1, j0:j1] = _coverage(hit["fmin"])
            z_all[k, :, i0:i1, j0:j1] = hit["z"]
            parts.append((k, box, col, lab))

        # front-to-back compositing: each part is covered by the parts in front of it at that pixel
        img = bg.expand(f, -1, -1, -1).clone()
        clear = torch.ones(f, size, size)  # transmittance down to the background
        best = torch.zeros(f, size, size)
        label = torch.zeros(f, size, size, dtype=torch.uint8)
        acc = torch.zeros(f, 3, size, size)
        for k, (i0, i1, j0, j1), col, lab in parts:
            sl = (slice(None), slice(i0, i1), slice(j0, j1))
            a, z = alpha_all[k][sl], z_all[k][sl]
            trans = torch.ones_like(a)
            for j, (a0, a1, b0, b1), _, _ in parts:
                if j == k or a1 <= i0 or a0 >= i1 or b1 <= j0 or b0 >= j1:
                    continue
                in_front = z_all[j][sl] >= z if j < k else z_all[j][sl] > z  # ties go to the earlier part
                trans = trans * torch.where(in_front, 1 - alpha_all[j][sl], 1.0)
            w = a * trans
            acc[:, :, i0:i1, j0:j1] += w[:, None] * col
            clear[sl] *= 1 - a
            take = w > best[sl]
            best[sl] = torch.where(take, w, best[sl])
            label[sl] = torch.where(take, lab, label[sl])
        img = acc + clear[:, None] * img
        label = torch.where(clear >= best, 0, label).to(torch.uint8)
        return img.clamp(0, 1), label

    def _landmarks(self, idt: HeadIdentity, fr: _Frames) -> tuple[Tensor, Tensor]:
        local = self.feature_points(idt, fr.params)  # (F, K, 3)
        cam = fr.s.view(-1, 1, 1) * torch.einsum("fij,fkj->fki", fr.r_head, local)
        uv = cam[..., :2] + fr.t_head[:, None, :]
        # visible: nothing of the scene lies in front of the landmark
        front = torch.full_like(cam[..., 2], -1e9)
        for _name, which, centre, radii in self.primitives(idt):
            rot, t = self._frame_of(fr, which)
            hit = _cast(uv[..., 0], uv[..., 1], rot, fr.s, t, centre, radii)
            front = torch.where(hit["fmin"] < 0, torch.maximum(front, hit["z"]), front)
        visible = cam[..., 2] >= front - 2e-3
        closed = fr.params["eye_open"] < 0.3
        visible[:, 12] &= ~closed
        visible[:, 13] &= ~closed
        pix = (uv + 1) * (self.size - 1) / 2
        return pix, visible


def render_head_video(identity: HeadIdentity, motion: HeadMotion, size: int) -> dict[str, np.ndarray]:
    """Render one head video; see :class:`HeadRenderer`."""
    return HeadRenderer(size).render(identity, motion)


# --------------------------------------------------------------------------------------------------------
# known warps of a real face (scikit-image's astronaut)
# --------------------------------------------------------------------------------------------------------
#: Face crop of ``skimage.data.astronaut()`` (x0, y0, side) in its 512x512 pixels, and hand-placed
#: landmarks (x, y) in those pixels, in :data:`LANDMARK_NAMES` order.
ASTRONAUT_CROP = (102, 10, 240)
ASTRONAUT_LANDMARKS = np.array([
    [187.0, 92.7], [212.7, 89.3], [235.3, 89.3], [261.3, 93.3],
    [192.7, 101.0], [212.0, 102.0], [237.0, 103.0], [257.0, 102.7],
    [204.0, 98.0], [204.0, 103.7], [247.0, 98.7], [247.0, 105.3],
    [204.0, 100.7], [247.0, 102.3], [224.0, 127.3],
    [203.7, 141.7], [243.7, 142.3], [223.7, 139.0], [223.7, 154.0], [223.7, 143.3], [223.7, 149.3],
    [223.7, 175.7],
], np.float32)


def _load_astronaut() -> np.ndarray:
    try:
        from skimage import data
    except ImportError as e:  # pragma: no cover - scikit-image is a dependency
        raise ThkitError("the 'warp' synthetic videos need scikit-image (pip install scikit-image)") from e
    return data.astronaut()


@dataclass
class WarpMotion:
    """Per-frame parameters (T,) of a known warp: similarity (rotation, scale, shift), pseudo head turn
    (shift of the inner face), eye opening, mouth opening and brow raise."""

    rotation: np.ndarray
    scale: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    turn_x: np.ndarray
    turn_y: np.ndarray
    eye_open: np.ndarray
    mouth_open: np.ndarray
    brow: np.ndarray

    def __len__(self) -> int:
        return len(self.rotation)

    @classmethod
    def sample(cls, rng: np.random.Generator, frames: int) -> WarpMotion:
        head = HeadMotion.sample(rng, frames)
        u = rng.uniform
        return cls(
            rotation=smooth_track(rng, frames, math.radians(u(4, 14)), HEAD_PERIODS),
            scale=1 + smooth_track(rng, frames, u(0.03, 0.08), HEAD_PERIODS),
            tx=smooth_track(rng, frames, u(0.06, 0.16), HEAD_PERIODS),
            ty=smooth_track(rng, frames, u(0.04, 0.10), HEAD_PERIODS),
            turn_x=smooth_track(rng, frames, u(0.03, 0.08), HEAD_PERIODS),
            turn_y=smooth_track(rng, frames, u(0.02, 0.05), HEAD_PERIODS),
            eye_open=head.eye_open, mouth_open=head.mouth_open, brow=head.brow,
        )

    def as_dict(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class WarpRenderer:
    """Known thin-plate-spline warps of the astronaut face, landmarks exact at the control points."""

    def __init__(self, size: int):
        import torch.nn.functional as F

        self.size = int(size)
        x0, y0, side = ASTRONAUT_CROP
        img = torch.from_numpy(_load_astronaut()).permute(2, 0, 1)[None].float() / 255
        full = round(512 * self.size / side)
        self.image = F.interpolate(img, size=(full, full), mode="bilinear", align_corners=False, antialias=True)
        self._full = full
        # base landmarks in crop coordinates ([-1, 1] over the crop, corner-aligned convention)
        self.src = torch.from_numpy(self._to_crop(ASTRONAUT_LANDMARKS))
        ring = [(1.15 * math.cos(a), 1.15 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 12, endpoint=False)]
        corners = [(-1.8, -1.8), (1.8, -1.8), (-1.8, 1.8), (1.8, 1.8)]
        self.anchors = torch.tensor(ring + corners, dtype=torch.float32)

    @staticmethod
    def _to_crop(px: np.ndarray) -> np.ndarray:
        x0, y0, side = ASTRONAUT_CROP
        return (2 * (px - np.array([x0, y0], np.float32)) / (side - 1) - 1).astype(np.float32)

    def _crop_to_image(self, g: Tensor) -> Tensor:
        """Crop coordinates -> ``grid_sample`` coordinates (align_corners=True) of the resized full image."""
        x0, y0, side = ASTRONAUT_CROP
        orig = torch.tensor([x0, y0], dtype=g.dtype) + (g + 1) / 2 * (side - 1)
        res = (orig + 0.5) * self._full / 512 - 0.5
        return 2 * res / (self._full - 1) - 1

    def destinations(self, motion: WarpMotion) -> tuple[Tensor, Tensor]:
        """Landmarks (T, 22, 2) and anchors (T, A, 2) of every frame, in crop coordinates."""
        def g(name):
            return torch.as_tensor(np.asarray(getattr(motion, name), dtype=np.float32))[:, None]

        src = self.src[None].clone().expand(len(motion), -1, -1).clone()
        x, y = src[..., 0], src[..., 1]
        o, m, b = g("eye_open"), g("mouth_open"), g("brow")
        # expressions (in crop units): lids close towards the lower lid, jaw drops, brows rise
        for top, bot, pupil in ((8, 9, 12), (10, 11, 13)):
            close = (1 - o[:, 0]) * 0.8
            y[:, pupil] = y[:, pupil] + close * (y[:, bot] - y[:, pupil])
            y[:, top] = y[:, top] + close * (y[:, bot] - y[:, top])
        for k in (18, 20):
            y[:, k] = y[:, k] + 0.1 * m[:, 0]
        y[:, 21] = y[:, 21] + 0.08 * m[:, 0]
        for k in (15, 16):
            y[:, k] = y[:, k] + 0.035 * m[:, 0]
        x[:, 15] = x[:, 15] + 0.012 * m[:, 0]
        x[:, 16] = x[:, 16] - 0.012 * m[:, 0]
        y[:, :4] = y[:, :4] - 2.0 * b
        # pseudo head turn: the inner face moves more than its outline
        weight = torch.ones(len(LANDMARK_NAMES))
        weight[[0, 3, 21]] = 0.5
        weight[14] = 1.5
        x = x + g("turn_x") * weight
        y = y + g("turn_y") * weight
        pts = torch.stack([x, y], -1)
        anchors = self.anchors[None].expand(len(motion), -1, -1)
        # similarity about the nose tip
        centre = self.src[14]
        rot, s = g("rotation")[:, 0], g("scale")[:, 0]
        r = torch.stack([torch.stack([rot.cos(), -rot.sin()], -1), torch.stack([rot.sin(), rot.cos()], -1)], -2)
        shift = torch.cat([g("tx"), g("ty")], -1)

        def sim(p):
            return torch.einsum("tij,tkj->tki", r, p - centre) * s[:, None, None] + centre + shift[:, None]

        return sim(pts), sim(anchors)

    def render(self, motion: WarpMotion) -> dict[str, np.ndarray]:
        with _torch_threads(1):
            return self._render(motion)

    def _render(self, motion: WarpMotion) -> dict[str, np.ndarray]:
        import torch.nn.functional as F

        dst, anchors = self.destinations(motion)
        t = len(motion)
        src_all = torch.cat([self.src[None].expand(t, -1, -1), self.anchors[None].expand(t, -1, -1)], 1)
        dst_all = torch.cat([dst, anchors], 1)
        grid = make_coordinate_grid(self.size, self.size).view(-1, 2)
        frames = []
        for i in range(t):  # one frame at a time keeps the (pixels x control points) kernel small
            # the plain interpolating spline (Bookstein 1989: U = r^2 log r^2 plus an affine part, no
            # regularisation), exact at the control points.  Not kornia's get_tps_transform: its system pairs
            # the two point sets (kernel between source and destination points), a different spline that
            # swings far from this one between the control points.
            tps = ThinPlateSpline(dst_all[i], src_all[i], regularisation=0.0)
            back = tps.warp_points(grid).view(1, self.size, self.size, 2)
            frames.append(F.grid_sample(self.image, self._crop_to_image(back), mode="bilinear",
                                        padding_mode="border", align_corners=True))
        frames = torch.cat(frames)
        visible = torch.ones(t, len(LANDMARK_NAMES), dtype=torch.bool)
        closed = torch.as_tensor(motion.eye_open) < 0.3
        visible[:, 12] &= ~closed
        visible[:, 13] &= ~closed
        return {
            "frames": (frames.permute(0, 2, 3, 1) * 255).round_().clamp_(0, 255).to(torch.uint8).numpy(),
            "landmarks": ((dst + 1) * (self.size - 1) / 2).numpy(),
            "visible": visible.numpy(),
        }


# --------------------------------------------------------------------------------------------------------
# dataset generation
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoSpec:
    """Which video ``index`` of a generated dataset is: split, kind, identity, name."""

    index: int
    split: str
    kind: str
    identity: int
    name: str


def plan_videos(videos: int, test_fraction: float = 0.1, warp_fraction: float = 0.1,
                videos_per_identity: int = 1) -> list[VideoSpec]:
    """The list of videos :func:`write_synthetic_dataset` writes (deterministic, no rendering).

    The last ``round(videos * test_fraction)`` videos (at least one when ``videos >= 2`` and the fraction
    is positive) form the test split.  In each split, warp videos are spread evenly at the rate
    ``warp_fraction``.  Head identities change every ``videos_per_identity`` videos.
    """
    if videos < 1:
        raise ThkitError(f"synthetic dataset: videos must be >= 1, got {videos}")
    if not 0 <= test_fraction < 1 or not 0 <= warp_fraction <= 1 or videos_per_identity < 1:
        raise ThkitError("synthetic dataset: test_fraction must be in [0, 1), warp_fraction in [0, 1], "
                         "videos_per_identity >= 1")
    n_test = int(round(videos * test_fraction))
    if test_fraction > 0 and videos >= 2:
        n_test = min(max(n_test, 1), videos - 1)
    n_train = videos - n_test
    specs = []
    for i in range(videos):
        split, j = ("train", i) if i < n_train else ("test", i - n_train)
        warp = math.floor((j + 1) * warp_fraction) > math.floor(j * warp_fraction)
        ident = 0 if warp else i // videos_per_identity
        kind = "warp" if warp else "head"
        specs.append(VideoSpec(i, split, kind, ident, f"{kind}{ident:05d}#{i:05d}"))
    return specs


def render_video(spec: VideoSpec, seed: int, frames: int, size: int) -> dict[str, Any]:
    """Render video ``spec`` of the dataset with ``seed``: frames, landmarks, visibility and parameters."""
    rng = np.random.default_rng([int(seed), 1, spec.index])
    if spec.kind == "warp":
        motion = WarpMotion.sample(rng, frames)
        out = WarpRenderer(size).render(motion)
    else:
        identity = HeadIdentity.sample(np.random.default_rng([int(seed), 2, spec.identity]))
        motion = HeadMotion.sample(rng, frames)
        out = HeadRenderer(size).render(identity, motion)
    out["params"] = motion.as_dict()
    return out


def _video_record(spec: VideoSpec, out: dict[str, Any]) -> dict[str, Any]:
    params = {}
    for k, v in out["params"].items():
        v = np.asarray(v, dtype=np.float64)
        if k in ("yaw", "pitch", "roll", "rotation"):
            k, v = k + "_deg", np.degrees(v)
        params[k] = np.round(v, 4).tolist()
    return {
        "kind": spec.kind,
        "identity": spec.identity,
        "frames": int(len(out["frames"])),
        "landmarks": np.round(out["landmarks"].astype(np.float64), 2).tolist(),
        "visible": out["visible"].astype(int).tolist(),
        "params": params,
    }


def _write_one(spec: VideoSpec, seed: int, frames: int, size: int, fmt: str, folder: str) -> tuple[str, dict]:
    """Render video ``spec`` and write it under ``folder``; returns its ground-truth record."""
    res = render_video(spec, seed, frames, size)
    target = Path(folder) / spec.split / spec.name
    if fmt == "png":
        write_frames(target, res["frames"])
    else:
        write_video(target.with_name(spec.name + ".mp4"), res["frames"])
    return f"{spec.split}/{spec.name}", _video_record(spec, res)


def _worker_init() -> None:
    torch.set_num_threads(1)


def write_synthetic_dataset(
    out: str | os.PathLike,
    videos: int = 100,
    frames: int = 64,
    size: int = 256,
    seed: int = 0,
    format: str = "png",  # noqa: A002 - the CLI option's name
    test_fraction: float = 0.1,
    warp_fraction: float = 0.1,
    videos_per_identity: int = 1,
    overwrite: bool = False,
    progress: bool | None = True,
    workers: int = 1,
) -> Path:
    """Write the synthetic dataset to ``out`` in the FOMM VoxCeleb layout, with ``ground_truth.json``.

    ``format='png'`` writes a folder of ``0000000.png ...`` per video; ``'mp4'`` one H.264 file per video
    (visually lossless, not bit-exact).  ``workers > 1`` renders videos in that many processes (the result
    does not depend on it).  The data is written to a temporary folder beside ``out`` and moved into place
    at the end, so a reader never sees a half-written dataset.
    """
    from tqdm import tqdm

    if format not in ("png", "mp4"):
        raise ThkitError(f"synthetic dataset: format must be 'png' or 'mp4', got {format!r}")
    if frames < 1 or size < 8:
        raise ThkitError(f"synthetic dataset: need frames >= 1 and size >= 8, got frames={frames}, size={size}")
    if format == "mp4" and size % 2:
        raise ThkitError(f"synthetic dataset: mp4 (yuv420p) needs an even size, got {size}")
    out = Path(out)
    replace = out.exists()
    if replace and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ThkitError(f"{out} already exists and is not empty (use --overwrite to replace a synthetic dataset)")
        if not is_synthetic_dataset(out):
            raise ThkitError(f"{out} exists and is not a thkit synthetic dataset; refusing to overwrite it")
    specs = plan_videos(videos, test_fraction, warp_fraction, videos_per_identity)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    for split in ("train", "test"):
        (tmp / split).mkdir(parents=True)
    generator = dict(videos=videos, frames=frames, size=size, seed=seed, format=format, test_fraction=test_fraction,
                     warp_fraction=warp_fraction, videos_per_identity=videos_per_identity,
                     generator_version=GENERATOR_VERSION)
    records: dict[str, dict] = {}
    bar = tqdm(total=len(specs), desc=f"synth {out.name}", unit="video", disable=None if progress else True)
    try:
        jobs = [(spec, seed, frames, size, format, str(tmp)) for spec in specs]
        if workers > 1 and len(specs) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(min(workers, len(specs)), mp_context=ctx, initializer=_worker_init) as pool:
                for fut in as_completed([pool.submit(_write_one, *job) for job in jobs]):
                    key, rec = fut.result()
                    records[key] = rec
                    bar.update()
        else:
            for job in jobs:
                key, rec = _write_one(*job)
                records[key] = rec
                bar.update()
        bar.close()
        gt = {
            "format": FORMAT_TAG,
            "generator": generator,
            "size": [size, size],
            "coordinates": "pixel (x, y) of the stored frames, pixel centres at integers, origin top-left",
            "landmark_names": list(LANDMARK_NAMES),
            "flip_pairs": [list(p) for p in FLIP_PAIRS],
            "videos": {f"{v.split}/{v.name}": records[f"{v.split}/{v.name}"] for v in specs},
        }
        (tmp / GROUND_TRUTH_FILE).write_text(json.dumps(gt, separators=(",", ":")))
        if replace and out.exists():
            shutil.rmtree(out)
        try:
            os.rename(tmp, out)
        except OSError:
            if not replace and is_synthetic_dataset(out):  # another process wrote it meanwhile: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
    except BaseException:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def is_synthetic_dataset(root: str | os.PathLike) -> bool:
    """True when ``root`` holds a dataset written by :func:`write_synthetic_dataset`."""
    meta = read_generator(root)
    return meta is not None


def read_generator(root: str | os.PathLike) -> dict[str, Any] | None:
    """The generator options stored in ``root/ground_truth.json`` (None if it is not a synthetic dataset)."""
    path = Path(root) / GROUND_TRUTH_FILE
    if not path.is_file():
        return None
    prefix = f'{{"format":"{FORMAT_TAG}","generator":'
    try:
        with open(path) as fh:
            head = fh.read(4096)
        if head.startswith(prefix):  # as written here: read the small generator block only
            return json.loads(head[len(prefix):head.index("}", len(prefix)) + 1])
        data = json.loads(path.read_text())
        return data.get("generator") if isinstance(data, dict) and data.get("format") == FORMAT_TAG else None
    except (ValueError, OSError):
        return None


# --------------------------------------------------------------------------------------------------------
# the auto-synthesising dataset
# --------------------------------------------------------------------------------------------------------
@DATASETS.register_module()
class SyntheticTalkingHeads(FramesDataset):
    """The built-in synthetic talking heads as a :class:`~thkit.datasets.frames.FramesDataset`.

    If ``root`` does not exist and ``synthesize_if_missing`` is true, the dataset is generated there first
    (:func:`write_synthetic_dataset` with ``synth`` options; ``size`` defaults to ``image_size``), so a
    recipe can point at e.g. ``data/synth64`` and train with no download.  Items carry the ground-truth
    landmarks (``landmarks_source`` / ``landmarks_driving``, keypoint coordinates) of both frames.

    Args:
        root: dataset folder.
        synthesize_if_missing: generate the data when ``root`` does not exist.
        synth: options of :func:`write_synthetic_dataset` (videos, frames, size, seed, format, ...).
        **kwargs: :class:`FramesDataset` options (mode, image_size, input_range, num_repeats, augmentation, ...).
    """

    DEFAULT_SYNTH = dict(videos=100, frames=32, seed=0, format="png")

    def __init__(self, root: str | os.PathLike = "data/synth64", synthesize_if_missing: bool = True,
                 synth: dict | None = None, **kwargs):
        root = Path(root)
        image_size = kwargs.get("image_size", 256)
        opts = dict(self.DEFAULT_SYNTH)
        opts["size"] = image_size if isinstance(image_size, int) else (max(image_size) if image_size else 256)
        opts.update(synth or {})
        if not root.exists():
            if not synthesize_if_missing:
                raise DatasetError(f"dataset root {root} does not exist (write it with `thkit data synth --out {root}` "
                                   "or set synthesize_if_missing=True)")
            write_synthetic_dataset(root, **opts)
        else:
            have = read_generator(root)
            if have is not None:
                diff = {k: (have.get(k), v) for k, v in opts.items() if k in have and have.get(k) != v}
                if have.get("generator_version", 1) != GENERATOR_VERSION:
                    diff["generator_version"] = (have.get("generator_version", 1), GENERATOR_VERSION)
                if diff:
                    changed = ", ".join(f"{k}: {a!r} != {b!r}" for k, (a, b) in diff.items())
                    warnings.warn(f"{root} was generated with other options than requested ({changed}); using it as "
                                  "it is (delete it to regenerate)", DataWarning, stacklevel=2)
        self.synth_options = opts
        super().__init__(root, **kwargs)


__all__ = [
    "ASTRONAUT_LANDMARKS",
    "FLIP_PAIRS",
    "HeadIdentity",
    "HeadMotion",
    "HeadRenderer",
    "LABELS",
    "LANDMARK_NAMES",
    "SyntheticTalkingHeads",
    "VideoSpec",
    "WarpMotion",
    "WarpRenderer",
    "is_synthetic_dataset",
    "plan_videos",
    "read_generator",
    "render_head_video",
    "render_video",
    "smooth_track",
    "write_synthetic_dataset",
]

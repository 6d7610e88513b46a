"""The best reference frame (FOMM demo's ``--find_best_frame`` / ``--best_frame``): landmark normalisation against
hand-computed values, the best frame found on thkit's synthetic heads where it is known (ground-truth landmarks and
MediaPipe's face mesh), animation from a reference frame == FOMM's forward + backward scheme, one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from thkit.datasets.synthetic import HeadIdentity, HeadMotion, render_head_video
from thkit.inference.best_frame import best_frame_index, find_best_frame, landmark_distance, normalize_landmarks
from thkit.inference.errors import InferenceError, NoFaceError

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64
BEST = 3  # the frame of the driving video whose pose the source has


def _pose_video(frames: int = 6, seed: int = 0):
    """A synthetic head video whose frames have clearly different poses, and a source image of the same head in
    frame BEST's pose and expression but elsewhere in the picture and smaller (what the normalisation removes)."""
    rng = np.random.default_rng(seed)
    idt = HeadIdentity.sample(rng)
    m = HeadMotion.sample(rng, frames)
    m.yaw = np.linspace(-0.5, 0.5, frames).astype(np.float32)
    m.pitch = np.array([0.2, -0.2, 0.1, -0.1, 0.25, -0.25][:frames], np.float32)
    m.roll = np.array([0.1, -0.1, 0.0, 0.15, -0.15, 0.05][:frames], np.float32)
    m.mouth_open = np.zeros(frames, np.float32)
    m.eye_open = np.ones(frames, np.float32)
    s = HeadMotion(**{f: np.asarray(getattr(m, f))[BEST:BEST + 1].copy() for f in m.__dataclass_fields__})
    s.tx, s.ty, s.scale = s.tx + 0.15, s.ty - 0.1, s.scale * 0.85
    return render_head_video(idt, m, SIZE), render_head_video(idt, s, SIZE)


@pytest.fixture(scope="module")
def pose_video():
    return _pose_video()


def test_normalize_landmarks_by_hand():
    # a 2 x 2 square and its centre: mean (1, 1), hull area 4 -> divided by 2
    pts = np.array([[0, 0], [2, 0], [2, 2], [0, 2], [1, 1]], float)
    want = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5], [0, 0]])
    np.testing.assert_allclose(normalize_landmarks(pts), want, atol=1e-15)
    # invariant to position and scale, not to rotation (FOMM's score sees a head roll)
    rng = np.random.default_rng(0)
    p = rng.normal(size=(20, 2))
    np.testing.assert_allclose(normalize_landmarks(3.7 * p + [5.0, -2.0]), normalize_landmarks(p), atol=1e-12)
    c, s = np.cos(0.3), np.sin(0.3)
    assert landmark_distance(normalize_landmarks(p @ np.array([[c, -s], [s, c]])), normalize_landmarks(p)) > 0.01
    assert landmark_distance(np.ones((3, 2)), np.zeros((3, 2))) == 6.0
    with pytest.raises(InferenceError, match="collinear"):
        normalize_landmarks(np.array([[0, 0], [1, 1], [2, 2]], float))


def test_best_frame_index_on_ground_truth_landmarks(pose_video):
    drv, src = pose_video
    index, scores = best_frame_index(src["landmarks"][0], list(drv["landmarks"]))
    assert index == BEST and scores[BEST] < 1e-9 < min(s for i, s in enumerate(scores) if i != BEST)
    # frames without a face (None) are skipped; none at all -> None
    lms = [None if i == BEST else lm for i, lm in enumerate(drv["landmarks"])]
    index, scores = best_frame_index(src["landmarks"][0], lms)
    assert index != BEST and scores[BEST] == float("inf")
    assert best_frame_index(src["landmarks"][0], [None, None])[0] is None


def test_find_best_frame_with_face_mesh_on_synthetic_heads(pose_video):
    pytest.importorskip("mediapipe")
    drv, src = pose_video
    found = find_best_frame(src["frames"][0], list(drv["frames"]))
    assert found.index == BEST and found.frames_with_face == len(drv["frames"]) and "mesh" in found.backend
    others = [s for i, s in enumerate(found.scores) if i != BEST]
    assert found.scores[BEST] < 0.5 * min(others)


def test_find_best_frame_without_a_face_names_the_input(pose_video):
    drv, src = pose_video
    flat = np.full((SIZE, SIZE, 3), 128, np.uint8)

    def landmarks(img):  # a stand-in landmarker: a face only where the picture is not flat
        return None if img.std() == 0 else np.array([[0, 0], [1, 0], [0, 1.0]]) * (1 + img.mean())

    with pytest.raises(NoFaceError, match="no face found in any of the 2 frames of clip.mp4"):
        find_best_frame(src["frames"][0], [flat, flat], driving_name="clip.mp4", landmarks=landmarks)
    with pytest.raises(NoFaceError, match="no face found in face.png"):
        find_best_frame(flat, list(drv["frames"]), source_name="face.png", landmarks=landmarks)


def _fomm_forward_backward(model, src, frames, index, mt):
    """FOMM demo.py with --best_frame: animate driving[i:] forwards and driving[:i+1] backwards (each from its
    first frame), join as predictions_backward[::-1] + predictions_forward[1:]."""
    from thkit.inference.animate import _prepare, _to_uint8
    from thkit.inference.stream import animate_per_frame

    s = _prepare(src, None, SIZE)
    fr = [_prepare(f, None, SIZE) for f in frames]
    fwd = animate_per_frame(model, s, fr[index:], **mt)
    bwd = animate_per_frame(model, s, fr[:index + 1][::-1], **mt)
    return np.stack([_to_uint8(p) for p in bwd[::-1] + fwd[1:]])


class _KeypointBrightness(torch.nn.Module):
    """A stand-in model whose result is a flat grey set by the animated keypoints (their mean x), so which frame
    relative motion is taken from shows in every pixel; keypoints: the centres of mass of the red, green and blue
    channels (they follow the head)."""

    input_range = (0.0, 1.0)

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def detect(self, image):
        b, c, h, w = image.shape
        ys = torch.linspace(-1, 1, h).view(1, 1, h, 1)
        xs = torch.linspace(-1, 1, w).view(1, 1, 1, w)
        mass = image.sum((2, 3))
        return {"value": torch.stack([(image * xs).sum((2, 3)) / mass, (image * ys).sum((2, 3)) / mass], -1)}

    def encode_source(self, source):
        return {"source": source, "kp_source": self.detect(source), "features": []}

    def animate(self, cache, kp_driving, driving=None):
        grey = (0.5 + 2 * kp_driving["value"][..., 0].mean(1)).clamp(0, 1).view(-1, 1, 1, 1)
        return {"prediction": grey.expand(-1, 3, *cache["source"].shape[-2:])}

    def forward(self, source, driving=None, kp_driving=None):
        return self.animate(self.encode_source(source), kp_driving)


@pytest.mark.parametrize("which", ["stand-in", "fomm/tiny_fixture"])
def test_api_best_frame_is_fomm_forward_backward(pose_video, which):
    import thkit

    drv, src = pose_video
    torch.manual_seed(0)
    model = _KeypointBrightness() if which == "stand-in" else thkit.create_model(which)
    mt = dict(relative=True, relative_jacobian=which != "stand-in", adapt_movement_scale=False)
    got = thkit.animate(src["frames"][0], drv["frames"], model, size=SIZE, best_frame=BEST)
    want = _fomm_forward_backward(model, src["frames"][0], drv["frames"], BEST, mt)
    assert got.shape == want.shape == (len(drv["frames"]), SIZE, SIZE, 3)
    assert np.abs(got.astype(int) - want).max() <= 1
    if which == "stand-in":  # reference frame 0 (the default) gives a different animation
        first = thkit.animate(src["frames"][0], drv["frames"], model, size=SIZE)
        assert np.abs(first.astype(int) - got).min() > 2
        np.testing.assert_array_equal(first, _fomm_forward_backward(model, src["frames"][0], drv["frames"], 0, mt))
    else:
        pytest.importorskip("mediapipe")
        found = thkit.animate(src["frames"][0], drv["frames"], model, find_best_frame=True)
        np.testing.assert_array_equal(found, got)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(best_frame=2, find_best_frame=True), "not both"),
    (dict(best_frame=9), "--best-frame 9 is not a frame of the driving frames (it has 6 frames: 0 .. 5)"),
    (dict(best_frame=-1), "--best-frame -1 is not a frame"),
    (dict(best_frame=2, relative=False), "reference frame of relative motion"),
])
def test_api_reference_errors(pose_video, kwargs, needle):
    import thkit

    drv, src = pose_video
    model = thkit.create_model("fomm/tiny_fixture")
    with pytest.raises(InferenceError) as e:
        thkit.animate(src["frames"][0], drv["frames"], model, **kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)

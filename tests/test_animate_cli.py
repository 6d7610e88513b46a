"""`thkit animate` as LivePortrait's and FOMM's demos are used: -s/-d/-o with a default output path, the recipe from
a model folder, a still driving image (an image or a 1-frame video out), --paste-back at the source's resolution,
--find-best-frame / --best-frame with one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import one_line_error
from PIL import Image

from thkit.cli import main as thkit_main
from thkit.video import iter_frames, probe_video, write_video

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64
RUN = ["--no-progress", "--device", "cpu"]
TINY = ["--recipe", "fomm/tiny_fixture", "--random-weights"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from test_best_frame import BEST, _pose_video

    d = tmp_path_factory.mktemp("animate_cli")
    drv, src = _pose_video()
    Image.fromarray(src["frames"][0]).save(d / "face.png")
    Image.fromarray(drv["frames"][1]).save(d / "still.png")
    write_video(d / "clip.mp4", drv["frames"])
    write_video(d / "blank.mp4", np.full((3, SIZE, SIZE, 3), 128, np.uint8))
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()[:320, 40:440]).resize((200, 160), Image.Resampling.LANCZOS))
    Image.fromarray(photo).save(d / "photo.png")
    return {"dir": d, "face": d / "face.png", "still": d / "still.png", "clip": d / "clip.mp4",
            "blank": d / "blank.mp4", "photo": d / "photo.png", "best": BEST}


def test_short_names_and_default_output(media, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = thkit_main(["animate", *TINY, *RUN, "-s", str(media["face"]), "-d", str(media["clip"])])
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / "animations" / "face--clip.mp4"
    info = probe_video(out)
    assert (info.width, info.height, info.num_frames) == (SIZE, SIZE, 6)
    assert "wrote animations/face--clip.mp4: 6 frames" in capsys.readouterr().out


def test_recipe_from_a_model_folder(media, tmp_path, capsys):
    """A model folder is all --checkpoint needs: its recipe (here 5 keypoints, which fomm/tiny_fixture does not
    have, so only the folder's recipe fits its weights) and size come from it."""
    import thkit
    from thkit.model_folder import save_model_folder

    opts = {"model.keypoint_detector.num_kp": 5, "model.motion.num_kp": 5}
    model = thkit.create_model("fomm/tiny_fixture", cfg_options=opts)
    folder = save_model_folder(tmp_path / "tiny5", {"model": model.state_dict()}, model.recipe.to_dict())
    out = tmp_path / "out.mp4"
    rc = thkit_main(["animate", *RUN, "--checkpoint", str(folder), "-s", str(media["face"]), "-d",
                     str(media["clip"]), "-o", str(out), "--max-frames", "2"])
    assert rc == 0, capsys.readouterr().err
    assert probe_video(out).num_frames == 2
    # the recipe named by hand does not fit these weights
    rc = thkit_main(["animate", *RUN, "--recipe", "fomm/tiny_fixture", "--checkpoint", str(folder), "-s",
                     str(media["face"]), "-d", str(media["clip"]), "-o", str(tmp_path / "bad.mp4")])
    assert rc != 0 and not (tmp_path / "bad.mp4").exists()
    one_line_error(capsys, "does not fit recipe fomm/tiny_fixture", "kp.bias (5,) vs (10,)")


def test_still_driving_image(media, tmp_path, capsys):
    png = tmp_path / "one.png"
    assert thkit_main(["animate", *TINY, *RUN, "-s", str(media["face"]), "-d", str(media["still"]), "-o",
                       str(png)]) == 0
    assert "1 frames 64x64" in capsys.readouterr().out
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (SIZE, SIZE)
    mp4 = tmp_path / "one.mp4"
    assert thkit_main(["animate", *TINY, *RUN, "-s", str(media["face"]), "-d", str(media["still"]), "-o",
                       str(mp4)]) == 0
    assert "audio none in the driving image" in capsys.readouterr().out
    assert len(list(iter_frames(mp4))) == 1 and probe_video(mp4).fps == 25
    # an image output holds one frame: a video driving it is refused before any work
    bad = tmp_path / "many.png"
    assert thkit_main(["animate", *TINY, *RUN, "-s", str(media["face"]), "-d", str(media["clip"]), "-o",
                       str(bad)]) != 0
    one_line_error(capsys, "many.png is an image", "6 frames")
    assert not bad.exists()


def test_paste_back_keeps_the_source_outside_the_face(media, tmp_path, capsys):
    from thkit.inference.face import FaceDetector, find_crop, quiet_native_stderr

    out = tmp_path / "pasted.png"
    rc = thkit_main(["animate", *TINY, *RUN, "-s", str(media["photo"]), "-d", str(media["still"]), "-o", str(out),
                     "--paste-back"])
    assert rc == 0, capsys.readouterr().err
    assert "pasted back into the source" in capsys.readouterr().out
    photo = np.asarray(Image.open(media["photo"]).convert("RGB"))
    res = np.asarray(Image.open(out).convert("RGB"))
    assert res.shape == photo.shape == (160, 200, 3)
    with quiet_native_stderr(), FaceDetector("auto") as det:  # the box animate used (the same detector, scale)
        (left, top, side), _ = find_crop(det, [photo], "photo", 1.8)
    inside = np.zeros(photo.shape[:2], bool)
    inside[top:top + side, left:left + side] = True
    assert side < 160 and not inside.all()
    np.testing.assert_array_equal(res[~inside], photo[~inside])
    centre = (slice(top + side // 4, top + 3 * side // 4), slice(left + side // 4, left + 3 * side // 4))
    assert np.abs(res[centre].astype(int) - photo[centre]).mean() > 5  # the face was replaced
    # the layouts exclude each other
    assert thkit_main(["animate", *TINY, *RUN, "-s", str(media["photo"]), "-d", str(media["still"]), "-o",
                       str(tmp_path / "x.mp4"), "--paste-back", "--side-by-side"]) != 0
    one_line_error(capsys, "--paste-back", "--side-by-side")


def test_find_best_frame_and_best_frame(media, tmp_path, capsys):
    pytest.importorskip("mediapipe")
    out = tmp_path / "best.mp4"
    assert thkit_main(["animate", *TINY, *RUN, "-s", str(media["face"]), "-d", str(media["clip"]), "-o", str(out),
                       "--find-best-frame"]) == 0
    text = capsys.readouterr().out
    assert f"from driving frame {media['best']} (closest to the source's face landmarks)" in text
    assert probe_video(out).num_frames == 6
    assert thkit_main(["animate", *TINY, *RUN, "-s", str(media["face"]), "-d", str(media["clip"]), "-o", str(out),
                       "--best-frame", "2"]) == 0
    assert "relative, adapt-scale off motion from driving frame 2;" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["no_face", "out_of_range", "absolute"])
def test_reference_frame_errors_one_line(media, tmp_path, capsys, case):
    out = tmp_path / "out.mp4"
    args = ["-s", str(media["face"]), "-d", str(media["clip"]), "-o", str(out)]
    if case == "no_face":
        pytest.importorskip("mediapipe")
        args[3] = str(media["blank"])
        args.append("--find-best-frame")
        needles = ["no face found in any of the 3 frames of the driving video", "blank.mp4"]
    elif case == "out_of_range":
        args += ["--best-frame", "6"]
        needles = ["--best-frame 6 is not a frame of the driving video", "clip.mp4", "0 .. 5"]
    else:
        args += ["--best-frame", "1", "--absolute"]
        needles = ["--best-frame picks the reference frame of relative motion", "absolute motion"]
    assert thkit_main(["animate", *TINY, *RUN, *args]) != 0
    one_line_error(capsys, *needles)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_api_writes_with_the_same_options(media, tmp_path):
    import thkit

    torch.manual_seed(0)
    model = thkit.create_model("fomm/tiny_fixture")
    res = thkit.animate(str(media["photo"]), str(media["still"]), model, out=tmp_path / "p.png", paste_back=True)
    assert res.size == (200, 160) and res.frames == 1 and res.crop["source_box"][2] < 160


def test_visualize_panels_keypoint_colours_and_demo_grid(media, tmp_path):
    """FOMM's visualiser layout: source and driving with their keypoints (a colour per keypoint index), deformed,
    occlusion, result; the result panel is the plain animation; the demo's grid shows the same panels."""
    import thkit
    from thkit.engine.visualize import LABEL_HEIGHT, keypoint_colors
    from thkit.inference.animate import _prepare, animate_video
    from thkit.inference.demo import demo_grid

    torch.manual_seed(0)
    model = thkit.create_model("fomm/tiny_fixture")
    frames: list[np.ndarray] = []
    res = animate_video(model, str(media["face"]), str(media["clip"]), tmp_path / "vis.mp4", image_size=SIZE,
                        visualize=True, on_frame=frames.append, max_frames=3, progress=False)
    assert res.panels == ["source", "driving", "deformed", "occlusion", "result"]
    assert len(frames) == 3 and frames[0].shape == (SIZE, 5 * SIZE, 3)
    assert probe_video(tmp_path / "vis.mp4").width == 5 * SIZE
    plain = thkit.animate(str(media["face"]), str(media["clip"]), model, max_frames=3)
    np.testing.assert_array_equal(np.stack(frames)[..., 4 * SIZE:, :], plain)
    # the source panel: each keypoint's centre pixel has its colour (unless a later keypoint's dot covers it)
    occlusion = frames[0][:, 3 * SIZE:4 * SIZE].astype(int)  # grey: R = G = B
    assert (occlusion[..., 0] == occlusion[..., 1]).all() and (occlusion[..., 1] == occlusion[..., 2]).all()
    src = np.array(Image.open(media["face"]).convert("RGB"))
    with torch.inference_mode():
        kp = model.detect(_prepare(src, None, SIZE)[None])["value"][0].numpy()
    px = np.rint((kp + 1) / 2 * (SIZE - 1)).astype(int)
    colours = np.rint(keypoint_colors(len(kp)).numpy() * 255).astype(int)
    assert len({tuple(c) for c in colours}) == len(kp)
    checked = 0
    for k, (x, y) in enumerate(px):
        if all(np.hypot(*(px[j] - px[k])) > 4 for j in range(k + 1, len(kp))):
            np.testing.assert_array_equal(frames[0][y, x].astype(int), colours[k])
            checked += 1
    assert checked >= 1
    grid = demo_grid(frames, res.panels)
    scale, pad = 2, 2  # 64 px tiles are enlarged to 128 in the grid
    tile = SIZE * scale
    assert grid.shape == (LABEL_HEIGHT + 3 * (tile + pad) + pad, 5 * (tile + pad) + pad, 3)
    x, y = px[-1]
    np.testing.assert_array_equal(grid[LABEL_HEIGHT + pad + scale * y, pad + scale * x].astype(int), colours[-1])

"""`thkit app` in a real headless browser: the app runs as its own process on 127.0.0.1 (a tiny model folder made
here), Debian's chromium (driven by Playwright) uploads the repository's sample files, presses Animate and waits for
the player; the video the app wrote must decode to the driving clip's frame count at the model's size, equal what
`thkit animate` writes for the same inputs, and be what the page plays.  Without chromium the test fails with the
line that installs it (CI installs it)."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import one_line_error

from thkit.cli import main as thkit_main
from thkit.cli.app import CHROMIUM_ARGS, SAMPLE_DRIVING, SAMPLE_SOURCE, app_subprocess
from thkit.video import iter_frames, probe_video

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE, DRIVING = SAMPLE_SOURCE, SAMPLE_DRIVING
SIZE = 64  # fomm/tiny_fixture's


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium not found: the web app test needs Debian's chromium "
                    "(apt-get install -y chromium chromium-driver)", pytrace=False)
    return path


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A model folder of fomm/tiny_fixture (random weights): recipe and size come with it."""
    import thkit
    from thkit.model_folder import save_model_folder

    model = thkit.create_model("fomm/tiny_fixture")
    return save_model_folder(tmp_path_factory.mktemp("app") / "tiny", {"model": model.state_dict()},
                             model.recipe.to_dict())


@contextlib.contextmanager
def running_app(folder: Path, out_dir: Path, log: Path):
    """``thkit app`` on ``folder`` in a subprocess (:func:`thkit.cli.app.app_subprocess`), one thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with app_subprocess(["--checkpoint", folder, "--out-dir", out_dir, "--device", "cpu", "--threads", "1"],
                        cwd=out_dir.parent, log=log, env=env) as url:
        yield url


def test_app_in_a_browser_animates_the_samples(model_folder, tmp_path, capsys):
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail('playwright is not installed: pip install -e ".[test]"', pytrace=False)
    n_frames = probe_video(DRIVING).num_frames
    out_dir = tmp_path / "animations"
    log = tmp_path / "app.log"
    with running_app(model_folder, out_dir, log) as url, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=chromium,
                                                    headless=True, args=CHROMIUM_ARGS)
        try:
            page = ctx.new_page()
            page.set_default_timeout(60_000)
            page.goto(url)
            page.wait_for_selector("#animate")
            # the model folder given on the command line is preselected
            assert page.locator("#model input").input_value() == str(model_folder)
            page.locator("#source input[type=file]").set_input_files(str(SOURCE))
            page.locator("#driving input[type=file]").set_input_files(str(DRIVING))
            page.wait_for_selector("#source img")
            page.get_by_text("driving.mp4").first.wait_for()
            page.click("#options button")  # one of animate's options: the side by side layout
            page.locator("#layout").get_by_text("source | driving | result").click()
            page.click("#animate")
            # the player has the video and the browser decoded it (or the app showed an error)
            page.wait_for_function("() => { const v = document.querySelector('#result video');"
                                   " return (v && v.readyState >= 2 && v.videoWidth > 0)"
                                   " || document.querySelector('.toast-body') !== null; }")
            toast = page.locator(".toast-body")
            assert not toast.count(), f"the app showed an error: {toast.first.inner_text()}"
            shown = page.evaluate("() => { const v = document.querySelector('#result video');"
                                  " return {src: v.currentSrc, w: v.videoWidth, h: v.videoHeight, t: v.duration}; }")
            page.wait_for_function("() => document.querySelector('#log textarea').value.startsWith('wrote')")
            text = page.locator("#log textarea").input_value()
            # a choice animate refuses: its one-line error in the page, nothing written
            page.locator("#options").get_by_text("frame N", exact=True).click()
            page.locator("#frame input").fill("99")
            page.click("#animate")
            page.wait_for_selector(".toast-body")
            error = page.locator(".toast-body").first.inner_text()
        finally:
            ctx.close()
    out = out_dir / "source--driving.mp4"  # animate's default name
    assert out.is_file(), log.read_text()[-2000:]
    assert f"wrote {out}: {n_frames} frames {3 * SIZE}x{SIZE}" in text, text
    frames = np.stack(list(iter_frames(out)))
    assert frames.shape == (n_frames, SIZE, 3 * SIZE, 3)  # source | driving | result
    assert shown["src"].endswith("/source--driving.mp4") and (shown["w"], shown["h"]) == (3 * SIZE, SIZE), shown
    assert abs(shown["t"] - n_frames / float(probe_video(DRIVING).fps)) < 0.1, shown
    assert not list(out_dir.glob(".*tmp*")), "a temporary file was left behind"
    assert "--best-frame 99 is not a frame of the driving video" in error and f"(it has {n_frames} frames" in error, \
        error
    assert sorted(p.name for p in out_dir.iterdir()) == ["source--driving.mp4"]
    # the same run by `thkit animate`: the app is that command
    cli_out = tmp_path / "cli.mp4"
    assert thkit_main(["animate", "--checkpoint", str(model_folder), "-s", str(SOURCE), "-d", str(DRIVING), "-o",
                       str(cli_out), "--side-by-side", "--device", "cpu", "--no-progress"]) == 0, \
        capsys.readouterr().err
    cli = np.stack(list(iter_frames(cli_out)))
    assert np.abs(cli.astype(int) - frames.astype(int)).max() <= 2


def test_app_choices_become_animate_arguments(model_folder, tmp_path):
    """What the page's fields set on `thkit animate`'s arguments, and one-line errors for what cannot go together."""
    from thkit.cli.app import animate_args
    from thkit.errors import ThkitError

    a = animate_args(str(SOURCE), str(DRIVING), str(model_folder), out_dir=tmp_path, reference="frame N", frame=3,
                     layout="pasted back into the source", motion="absolute", max_frames=5)
    assert (a.checkpoint, a.recipe, a.best_frame, a.paste_back, a.relative, a.max_frames) == \
        (str(model_folder), None, 3, True, False, 5)
    assert Path(a.out) == tmp_path / "source--driving.mp4" and not a.side_by_side and not a.find_best_frame
    a = animate_args(str(SOURCE), str(DRIVING), "fomm/small", random_weights=True, reference="best match (face "
                     "landmarks)", out_dir=tmp_path, out_name="../x.mp4", size=64)
    assert (a.recipe, a.random_weights, a.find_best_frame, a.size, Path(a.out)) == \
        ("fomm/small", True, True, 64, tmp_path / "x.mp4")  # the output stays in the app's folder
    for kw, needle in ((dict(model="fomm/small"), "needs weights"),
                       (dict(model=str(model_folder), random_weights=True), "holds its weights"),
                       (dict(model=str(model_folder), reference="frame N"), "needs N"),
                       (dict(model=""), "no model")):
        with pytest.raises(ThkitError, match=needle):
            animate_args(str(SOURCE), str(DRIVING), **kw)
    with pytest.raises(ThkitError, match="no driving video"):
        animate_args(str(SOURCE), None, str(model_folder))


def test_without_gradio_one_line_names_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert thkit_main(["app"]) == 2
    one_line_error(capsys, "needs Gradio", 'pip install -e ".[app]"')


def test_missing_model_folder_or_busy_port_is_one_line(tmp_path, capsys):
    assert thkit_main(["app", "--checkpoint", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "out")]) == 2
    one_line_error(capsys, f"--checkpoint {tmp_path / 'nowhere'} does not exist")
    assert not (tmp_path / "out").exists()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert thkit_main(["app", "--port", str(port), "--out-dir", str(tmp_path / "out")]) == 2
    one_line_error(capsys, f"cannot listen on 127.0.0.1:{port}", "pass --port with a free port")

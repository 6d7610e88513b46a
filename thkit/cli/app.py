"""``thkit app``: a local web app (Gradio) around ``thkit animate``.

Upload a source image and a driving video (or a still image), choose a recipe or a model folder and the options of
``thkit animate``, press *Animate* and play the result.  Each run is ``thkit animate`` itself
(:func:`thkit.cli.infer.run_animate` on the animate command's own arguments), so the app and the command line cannot
drift apart; the loaded model is kept between runs.  The video is written atomically into ``--out-dir`` under
animate's default name (``<source stem>--<driving stem>.mp4``).

Gradio is an optional extra (``pip install -e ".[app]"``).  The app never reaches the network: no share link,
no analytics or version check, no server-side rendering, and it listens on 127.0.0.1 unless ``--host`` says
otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

#: the sample media the app offers as examples (our own synthetic heads: scripts/make-samples writes them)
SAMPLES = Path(__file__).resolve().parent.parent / "assets" / "samples"
SAMPLE_SOURCE, SAMPLE_DRIVING = SAMPLES / "source.png", SAMPLES / "driving.mp4"
#: headless chromium's flags for the app on a closed network (without the background-networking ones it waits on the
#: network): the browser test (tests/test_app.py) and scripts/app-screenshot
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
#: what the layout choice sets on animate's arguments
LAYOUTS = {"result": {}, "source | driving | result": {"side_by_side": True},
           "pasted back into the source": {"paste_back": True}}
MOTIONS = ("recipe default", "relative", "absolute")
REFERENCES = ("first frame", "best match (face landmarks)", "frame N")
VIDEO_TYPES = [".mp4", ".mov", ".mkv", ".webm", ".avi", ".png", ".jpg", ".jpeg", ".bmp", ".webp"]


def _require_gradio():
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no telemetry, no version check
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gradio as gr
    except ImportError as e:
        from thkit.inference.errors import InferenceError

        raise InferenceError('thkit app needs Gradio, which is not installed: pip install -e ".[app]" '
                             "(or pip install 'thkit[app]')") from e
    return gr


def _animate_parser() -> argparse.ArgumentParser:
    """``thkit animate``'s own argument parser (its defaults are the app's)."""
    from thkit.cli import infer

    p = argparse.ArgumentParser(prog="thkit")
    infer.add_commands(p.add_subparsers(dest="command"))
    return p


def animate_args(source: str, driving: str, model: str, weights: str = "", random_weights: bool = False,
                 motion: str = MOTIONS[0], reference: str = REFERENCES[0], frame: float | None = None,
                 layout: str = "result", crop: bool = False, max_frames: float | None = None,
                 size: float | None = None, out_dir: str | os.PathLike = "animations", out_name: str = "",
                 device: str = "auto", threads: int | None = None) -> argparse.Namespace:
    """The arguments of ``thkit animate -s SOURCE -d DRIVING ...`` for the app's choices (one-line errors for
    choices that cannot go together)."""
    from thkit.inference.animate import default_output
    from thkit.inference.errors import InferenceError
    from thkit.model_folder import is_model_folder

    if not source:
        raise InferenceError("no source image: upload one (png, jpg, ...)")
    if not driving:
        raise InferenceError("no driving video: upload one (mp4, ...) or a still image")
    model, weights = (model or "").strip(), (weights or "").strip()
    if not model:
        raise InferenceError("no model: choose a recipe name or type a model folder")
    out = Path(out_dir) / Path(out_name.strip()).name if out_name and out_name.strip() else \
        default_output(source, driving, out_dir)
    a = _animate_parser().parse_args(["animate", "-s", str(source), "-d", str(driving), "-o", str(out),
                                      "--no-progress", "--device", device])
    if is_model_folder(model):
        if weights or random_weights:
            raise InferenceError(f"{model} is a model folder, which holds its weights: leave 'weights file' empty "
                                 "and 'random weights' unticked")
        a.checkpoint = model
    else:
        if not weights and not random_weights:
            raise InferenceError(f"recipe {model} needs weights: type a weights file (a model folder, a thkit or an "
                                 "official checkpoint) or tick 'random weights' (a smoke test)")
        a.recipe, a.checkpoint, a.random_weights = model, weights or None, bool(random_weights)
    if motion not in MOTIONS:
        raise InferenceError(f"motion {motion!r} is not one of {', '.join(MOTIONS)}")
    a.relative = {"relative": True, "absolute": False}.get(motion)
    if reference == REFERENCES[1]:
        a.find_best_frame = True
    elif reference == REFERENCES[2]:
        if frame is None or frame < 0 or int(frame) != frame:
            raise InferenceError(f"reference 'frame N' needs N, a driving frame number >= 0, got {frame}")
        a.best_frame = int(frame)
    elif reference != REFERENCES[0]:
        raise InferenceError(f"reference {reference!r} is not one of {', '.join(REFERENCES)}")
    if layout not in LAYOUTS:
        raise InferenceError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    for k, v in LAYOUTS[layout].items():
        setattr(a, k, v)
    a.crop = bool(crop)
    a.max_frames = int(max_frames) if max_frames else None
    a.size = int(size) if size else None
    a.threads = threads
    return a


def build_app(model: str = "", weights: str = "", random_weights: bool = False,
              out_dir: str | os.PathLike = "animations", device: str = "auto", threads: int | None = None):
    """The Gradio Blocks of the app (not launched); ``model`` / ``weights`` / ``random_weights`` are preselected."""
    gr = _require_gradio()
    from thkit.api import list_models
    from thkit.cli.infer import run_animate
    from thkit.errors import ThkitError
    from thkit.inference.animate import is_image_file
    from thkit.video import count_frames

    models: dict = {}  # the loaded model, kept between runs (run_animate's cache)
    choices = ([model] if model else []) + [m for m in list_models() if m != model]

    def animate(source, driving, model, weights, random_weights, motion, reference, frame, layout, crop, max_frames,
                size, out_name, progress=gr.Progress()):
        try:
            args = animate_args(source, driving, model, weights, random_weights, motion, reference, frame, layout,
                                crop, max_frames, size, out_dir, out_name, device, threads)
            total = 1 if is_image_file(driving) else count_frames(driving)
            total = min(total, args.max_frames) if args.max_frames else total
            progress(0, desc="loading the model")
            done = [0]

            def on_frame(_frame) -> None:
                done[0] += 1
                progress((done[0], total), desc="animating", unit="frames")

            res, line = run_animate(args, models, on_frame=on_frame)
        except ThkitError as e:
            raise gr.Error(str(e), print_exception=False) from e
        return str(res.path), line

    with gr.Blocks(title="thkit app", analytics_enabled=False) as app:
        gr.Markdown("# thkit: animate a face\nA source image, a driving video (or a still image), a model: "
                    "the options of `thkit animate`.")
        with gr.Row():
            with gr.Column():
                source = gr.Image(label="source image", type="filepath", image_mode=None, sources=["upload"],
                                  elem_id="source", height=260)
                driving = gr.File(label="driving video (or a still image)", file_types=VIDEO_TYPES,
                                  elem_id="driving", height=120)
                model_in = gr.Dropdown(choices, value=model or None, label="model: a recipe name or a model folder",
                                       allow_custom_value=True, elem_id="model")
                with gr.Row():
                    weights_in = gr.Textbox(weights, label="weights file (for a recipe)", elem_id="weights",
                                            placeholder="model folder, thkit or official checkpoint")
                    random_in = gr.Checkbox(random_weights, label="random weights (smoke test)",
                                            elem_id="random-weights")
                with gr.Accordion("options", open=False, elem_id="options"):
                    motion = gr.Radio(list(MOTIONS), value=MOTIONS[0], label="motion transfer")
                    with gr.Row():
                        reference = gr.Radio(list(REFERENCES), value=REFERENCES[0],
                                             label="reference frame of relative motion")
                        frame = gr.Number(0, label="N", precision=0, minimum=0, elem_id="frame")
                    layout = gr.Radio(list(LAYOUTS), value="result", label="output frames", elem_id="layout")
                    crop = gr.Checkbox(False, label="crop the face (source and driving) before resizing")
                    with gr.Row():
                        max_frames = gr.Number(0, label="only the first N frames (0: all)", precision=0,
                                               minimum=0)
                        size = gr.Number(0, label="model input size (0: the model's)", precision=0, minimum=0)
                    out_name = gr.Textbox("", label=f"output file in {out_dir}",
                                          placeholder="<source>--<driving>.mp4")
                button = gr.Button("Animate", variant="primary", elem_id="animate")
            with gr.Column():
                result = gr.Video(label="result", elem_id="result", interactive=False, autoplay=True, loop=True)
                log = gr.Textbox(label="log", elem_id="log", lines=3, interactive=False)
        samples = [str(SAMPLE_SOURCE), str(SAMPLE_DRIVING)]
        if all(Path(s).is_file() for s in samples):
            gr.Examples([samples], [source, driving], label="sample (thkit's synthetic heads)")
        button.click(animate, [source, driving, model_in, weights_in, random_in, motion, reference, frame, layout,
                               crop, max_frames, size, out_name], [result, log], concurrency_limit=1)
    return app


def _check_port(host: str, port: int) -> None:
    """One line when the app could not listen on ``host:port`` (Gradio's own message is about its settings)."""
    import socket

    from thkit.inference.errors import InferenceError

    if not 0 < port < 65536:
        raise InferenceError(f"--port {port} is not a port number (1 to 65535)")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
            s.bind((host, port))
    except OSError as e:
        raise InferenceError(f"cannot listen on {host}:{port} ({e.strerror or e}): pass --port with a free port, "
                             "or --host with an address of this machine") from e


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def app_subprocess(app_args: Sequence[str], cwd: str | os.PathLike, log: str | os.PathLike | None = None,
                   env: dict[str, str] | None = None, timeout: float = 90.0) -> Iterator[str]:
    """``thkit app APP_ARGS --port <a free port>`` in a subprocess of its own session (its output into ``log``);
    yields the page's URL once it answers, and stops the app and its children afterwards.  An app that exits or
    does not answer within ``timeout`` seconds raises :class:`RuntimeError` with the end of its log.  For the
    browser test and scripts/app-screenshot."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    env = dict(os.environ if env is None else env, GRADIO_ANALYTICS_ENABLED="False")
    with open(log, "w") if log is not None else contextlib.nullcontext() as f:
        proc = subprocess.Popen([sys.executable, "-m", "thkit.cli", "app", *map(str, app_args), "--port", str(port)],
                                stdout=f, stderr=subprocess.STDOUT if f is not None else None, env=env, cwd=cwd,
                                start_new_session=True)

    def tail() -> str:
        return Path(log).read_text()[-2000:] if log is not None else "(output not captured)"

    url = f"http://127.0.0.1:{port}/"
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"thkit app exited with {proc.returncode}: {tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"thkit app did not answer on {url} within {timeout:.0f} s: {tail()}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def cmd_app(args) -> int:
    from thkit.cli._common import set_threads
    from thkit.inference.errors import InferenceError

    if args.checkpoint and args.recipe:
        model, weights = args.recipe, args.checkpoint
    else:
        model, weights = args.checkpoint or args.recipe or "", ""
    if args.checkpoint and not Path(args.checkpoint).exists():
        raise InferenceError(f"--checkpoint {args.checkpoint} does not exist")
    _check_port(args.host, args.port)
    _require_gradio()
    set_threads(args)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(model, weights, args.random_weights, out_dir, args.device, args.threads)
    print(f"thkit app: http://{args.host}:{args.port} (videos in {out_dir}; Ctrl+C stops it)", flush=True)
    app.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, share=False, inbrowser=False, quiet=True, ssr_mode=False,
        mcp_server=False, allowed_paths=[str(out_dir.resolve()), str(SAMPLES)])
    return 0


def add_commands(subparsers) -> None:
    """Add ``thkit app`` to the main parser."""
    p = subparsers.add_parser(
        "app", help="a local web app: upload a face and a driving video, animate, play the result",
        description="A local web app (Gradio; pip install -e \".[app]\") for thkit animate: upload a source image "
                    "and a driving video or still image, choose a recipe or a model folder and animate's options, "
                    "and play the result.  Nothing is sent anywhere; videos are written into --out-dir.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="model preselected in the app: a model folder (its recipe and size come with it), or with "
                        "--recipe a weights file")
    p.add_argument("--recipe", default=None, help="recipe name or file preselected in the app")
    p.add_argument("--random-weights", action="store_true", help="preselect random weights (smoke tests)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--out-dir", default="animations", help="folder the videos are written into")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads")
    p.set_defaults(func=cmd_app)

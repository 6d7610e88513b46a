"""thkit against the official code, side by side in one process: the official networks built from their own code and
config, the same random weights in thkit's model through thkit's registered converter, one driving frame at a time.

Paths (all fp32, batch 1, 256x256, the same source and driving frames):

* ``official``: the official demo's loop body (FOMM ``demo.py`` / ``animate.normalize_kp``, TPSMM ``demo.py``
  ``relative_kp`` + dense motion + inpainting, SMAC ``basicsr/demo.py`` ``estimate_kp`` / ``normalize_kp`` /
  ``estimate_motion_w_kp`` / ``net_g(..., inference=True)``): driving keypoints, relative motion transfer, the whole
  generator with the source re-encoded; source keypoints and the first frame's keypoints once per video;
* ``reference``: thkit's per-frame path in the official order (:class:`thkit.inference.stream.PerFrameAnimator`
  inside :func:`thkit.layers.blocks.reference_ops`: no inference shortcut);
* ``stream``: thkit's streaming path, source cached once per video (:class:`~thkit.inference.stream.StreamingAnimator`,
  what ``thkit animate --backend torch`` runs);
* ``onnxruntime``: the streaming loop over the model's ONNX export (:meth:`thkit.export.OnnxModel.cached`, what
  ``thkit animate --backend onnxruntime`` runs), when onnxruntime is installed.
* ``ort nnpack``: the same with ``nnpack=True`` (``--nnpack``: the per-frame graphs' wide 3x3 convolutions by
  NNPACK's Winograd between onnxruntime segments, :mod:`thkit.nnpack`), where torch has NNPACK.

Frames run interleaved (the order rotating), after one warm-up frame per path.  Printed per path: median ms/frame,
frames/s, speed-up over the official code and over thkit's reference path (wall and CPU time of the process), and
the max |difference| of the prediction from the official one (exactness across the two code bases), from thkit's
reference path, and from thkit's reference path run in float64 (the fp32 rounding floor: with random weights a
network can be sensitive enough to rounding that every fp32 path, the official one included, is 1e-4 off).

The official code is **not** part of this repository: pass a checkout of each repository with ``--repo
METHOD=DIR`` (commits as in ``../shared/fixtures/official/README.md``).  Their own imports need, besides thkit's
environment, ``einops`` (SMAC), ``ffmpeg-python`` (SMAC's ``demo.py``) and ``scikit-learn`` (FOMM's
``animate.py``); put them on ``PYTHONPATH`` (``pip install --target DIR``) rather than into thkit's environment.
Each method runs in its own child process (FOMM and TPSMM both have a top-level ``modules`` package).

    PYTHONPATH=/tmp/offdeps python benchmarks/official.py --repo smac=/tmp/off/synergize-motion-appearance \\
        --repo fomm=/tmp/off/first-order-model --repo tpsmm=/tmp/off/Thin-Plate-Spline-Motion-Model --threads 2
"""
from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
import yaml
from _common import AnimatorPath, load_average, random_frames

#: method -> (thkit recipe, official config file inside the checkout)
METHODS = {
    "fomm": ("fomm/vox256", "config/vox-256.yaml"),
    "tpsmm": ("tpsmm/vox256", "config/vox-256.yaml"),
    "smac": ("smac/vox256", "options/test.yml"),
}
#: recipe overrides that make thkit compute what the official code computes on today's torch (fomm/vox256 samples
#: with align_corners=True, as torch 1.0 did when the released weights were trained; the same cost either way)
SAME_AS_OFFICIAL = {"fomm": {"model.motion.align_corners": False, "model.warper.align_corners": False}}


class _Official:
    """The official demo's per-frame loop: ``start(source (C, H, W))``, ``step(frame (C, H, W)) -> (C, H, W)``."""

    def __init__(self, detect, generate, transfer):
        self.detect, self.generate, self.transfer = detect, generate, transfer

    @torch.no_grad()
    def start(self, source: torch.Tensor) -> None:
        self.source = source.unsqueeze(0)
        self.kp_source = self.detect(self.source)
        self.kp_initial = None

    @torch.no_grad()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        d = frame.unsqueeze(0)
        kp_d = self.detect(d)
        if self.kp_initial is None:
            self.kp_initial = kp_d
        kp = self.transfer(self.kp_source, kp_d, self.kp_initial)
        return self.generate(self.source, self.kp_source, kp)[0]


def _fomm(root: Path, mt: dict) -> tuple[dict, _Official]:
    sys.path.insert(0, str(root))
    from animate import normalize_kp
    from modules.generator import OcclusionAwareGenerator
    from modules.keypoint_detector import KPDetector

    mp = yaml.safe_load((root / METHODS["fomm"][1]).read_text())["model_params"]
    gen = OcclusionAwareGenerator(**mp["generator_params"], **mp["common_params"]).eval()
    kpd = KPDetector(**mp["kp_detector_params"], **mp["common_params"]).eval()

    def transfer(kp_s, kp_d, kp_i):
        return normalize_kp(kp_source=kp_s, kp_driving=kp_d, kp_driving_initial=kp_i,
                            use_relative_movement=mt["relative"], use_relative_jacobian=mt["relative_jacobian"],
                            adapt_movement_scale=mt["adapt_movement_scale"])

    def generate(src, kp_s, kp):
        return gen(src, kp_source=kp_s, kp_driving=kp)["prediction"]

    return {"generator": gen.state_dict(), "kp_detector": kpd.state_dict()}, _Official(kpd, generate, transfer)


def _tpsmm(root: Path, mt: dict) -> tuple[dict, _Official]:
    sys.path.insert(0, str(root))
    from demo import relative_kp  # relative motion with the hull-area scale, as the official demo's default mode
    from modules.bg_motion_predictor import BGMotionPredictor
    from modules.dense_motion import DenseMotionNetwork
    from modules.inpainting_network import InpaintingNetwork
    from modules.keypoint_detector import KPDetector

    if not (mt["relative"] and mt["adapt_movement_scale"]):
        raise SystemExit("tpsmm: the official demo's relative mode adapts the movement scale; so must the recipe")
    mp = yaml.safe_load((root / METHODS["tpsmm"][1]).read_text())["model_params"]
    inpaint = InpaintingNetwork(**mp["generator_params"], **mp["common_params"]).eval()
    kpd = KPDetector(**mp["common_params"]).eval()
    dense = DenseMotionNetwork(**mp["common_params"], **mp["dense_motion_params"]).eval()
    bg = BGMotionPredictor().eval()  # not used by the demo (bg_param=None); its weights complete the checkpoint

    def generate(src, kp_s, kp):
        motion = dense(source_image=src, kp_driving=kp, kp_source=kp_s, bg_param=None, dropout_flag=False)
        return inpaint(src, motion)["prediction"]

    state = {"kp_detector": kpd.state_dict(), "dense_motion_network": dense.state_dict(),
             "inpainting_network": inpaint.state_dict(), "bg_predictor": bg.state_dict()}
    return state, _Official(kpd, generate, lambda s, d, i: relative_kp(kp_source=s, kp_driving=d, kp_driving_initial=i))


def _smac(root: Path, mt: dict) -> tuple[dict, _Official]:
    # basicsr/__init__ imports the training data code (decord); the demo needs only the archs and utils
    pkg = types.ModuleType("basicsr")
    pkg.__path__ = [str(root / "basicsr")]
    sys.modules["basicsr"] = pkg
    sys.path.insert(0, str(root))
    demo = importlib.import_module("basicsr.demo")

    opt = yaml.safe_load((root / METHODS["smac"][1]).read_text())
    net_g = demo.build_network(opt["network_g"]).eval()
    me = demo.build_network(opt["network_motion_estimator"]).eval()

    def transfer(kp_s, kp_d, kp_i):
        return demo.normalize_kp(kp_source=kp_s, kp_driving=kp_d, kp_driving_initial=kp_i,
                                 use_relative_movement=mt["relative"], use_relative_jacobian=mt["relative_jacobian"],
                                 adapt_movement_scale=mt["adapt_movement_scale"])

    def generate(src, kp_s, kp):
        motion = me.estimate_motion_w_kp(kp_source=kp_s, kp_driving=kp, source_image=src)
        return net_g(src, motion, w=1, inference=True)["out"]

    return {"net_g": net_g.state_dict(), "motion_estimator": me.state_dict()}, _Official(me.estimate_kp, generate,
                                                                                          transfer)


BUILDERS = {"fomm": _fomm, "tpsmm": _tpsmm, "smac": _smac}


def run_method(method: str, root: Path, frames: int, seed: int) -> dict:
    """Build both, convert the official weights, time the paths interleaved; rows as dicts."""
    import thkit
    from thkit.checkpoint import load_state_dict_strict
    from thkit.convert import get_converter
    from thkit.inference.animate import motion_settings
    from thkit.inference.stream import PerFrameAnimator, StreamingAnimator

    recipe = METHODS[method][0]
    torch.manual_seed(seed)
    model = thkit.create_model(recipe, size=256, cfg_options=SAME_AS_OFFICIAL.get(method)).requires_grad_(False)
    mt = motion_settings(model.recipe)
    torch.manual_seed(seed)
    state, official = BUILDERS[method](root, mt)
    load_state_dict_strict(model, get_converter(method)(state)["model"], "model")
    lo, hi = (float(v) for v in model.input_range)
    src, drv = random_frames(frames + 1, 256, lo, hi, seed=seed)
    paths = {"official": official, "reference": AnimatorPath("reference", PerFrameAnimator(model, **mt)),
             "stream": AnimatorPath("stream", StreamingAnimator(model, batch_size=1, **mt))}
    startup = None
    cache = tempfile.TemporaryDirectory()
    if importlib.util.find_spec("onnxruntime") is not None:
        from thkit.export import OnnxModel
        from thkit.nnpack import nnpack_available

        ort_model = OnnxModel.cached(model, folder=cache.name)
        startup = ort_model.startup
        paths["onnxruntime"] = AnimatorPath("onnxruntime", StreamingAnimator(ort_model, batch_size=1, **mt))
        if nnpack_available():
            nn_model = OnnxModel.cached(model, folder=cache.name, nnpack=True)
            paths["ort nnpack"] = AnimatorPath("ort nnpack", StreamingAnimator(nn_model, batch_size=1, **mt))
    names = list(paths)
    with torch.inference_mode():
        for p in paths.values():  # a fresh video each; the warm-up frame fixes the motion-transfer reference
            p.start(src)
            p.step(drv[0])
        wall = {n: [] for n in names}
        cpu = {n: [] for n in names}
        outs = {n: [] for n in names}
        for i, d in enumerate(drv[1:]):
            k = i % len(names)
            for n in names[k:] + names[:k]:
                t0, c0 = time.perf_counter(), time.process_time()
                out = paths[n].step(d)
                wall[n].append(time.perf_counter() - t0)
                cpu[n].append(time.process_time() - c0)
                outs[n].append(out.float())
    cache.cleanup()
    # the float64 run of thkit's reference path: how far fp32 rounding alone moves each path's prediction (random
    # weights can make a network sensitive to it: then every fp32 path, the official one too, is off by as much)
    model64 = copy.deepcopy(model).double()
    truth = PerFrameAnimator(model64, **mt)
    with torch.inference_mode():
        truth.set_source(src.double())
        truth.step(drv[0].double())
        outs["float64"] = [truth.step(d.double()).float() for d in drv[1:]]
    del model64, truth
    rows = []
    for n in names:
        rows.append(dict(path=n, ms=statistics.median(wall[n]) * 1000, cpu_ms=statistics.median(cpu[n]) * 1000,
                         diff_official=max(float((a - b).abs().max()) for a, b in zip(outs[n], outs["official"])),
                         diff_reference=max(float((a - b).abs().max()) for a, b in zip(outs[n], outs["reference"])),
                         diff_fp64=max(float((a - b).abs().max()) for a, b in zip(outs[n], outs["float64"]))))
    return dict(method=method, recipe=recipe, rows=rows, startup=startup)


def print_table(result: dict) -> None:
    rows = {r["path"]: r for r in result["rows"]}
    off, ref = rows["official"], rows["reference"]
    for r in result["rows"]:
        print(f"{result['recipe']:<13} {r['path']:<12} {r['ms']:9.1f} {1000 / r['ms']:8.3f} "
              f"{off['ms'] / r['ms']:8.2f}x {ref['ms'] / r['ms']:8.2f}x {r['cpu_ms']:9.1f} "
              f"{off['cpu_ms'] / r['cpu_ms']:8.2f}x {ref['cpu_ms'] / r['cpu_ms']:8.2f}x "
              f"{r['diff_official']:12.1e} {r['diff_reference']:10.1e} {r['diff_fp64']:10.1e}", flush=True)
    if result["startup"]:
        s = result["startup"]
        print(f"{result['recipe']:<13} onnxruntime start-up: export {s['export_s']:.1f} s, sessions "
              f"{s['sessions_s']:.1f} s (a later run finds the export in its cache)", flush=True)


def _child(args) -> None:
    torch.set_num_threads(args.threads)
    method, root = args.child.split("=", 1)
    print(json.dumps(run_method(method, Path(root), args.frames, args.seed)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", action="append", default=[], metavar="METHOD=DIR",
                    help=f"a checkout of the official repository of METHOD ({', '.join(METHODS)})")
    ap.add_argument("--frames", type=int, default=4, help="timed frames per path")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args)
    repos = []
    for item in args.repo:
        method, _, folder = item.partition("=")
        if method not in METHODS or not folder:
            ap.error(f"--repo {item!r}: expected METHOD=DIR with METHOD one of {', '.join(METHODS)}")
        if not (Path(folder) / METHODS[method][1]).is_file():
            ap.error(f"--repo {item!r}: {Path(folder) / METHODS[method][1]} does not exist (expected a checkout of "
                     f"the official {method} repository)")
        repos.append((method, str(Path(folder).resolve())))
    if not repos:
        ap.error("give at least one --repo METHOD=DIR (the official code is not part of this repository)")
    print(f"torch {torch.__version__}, {args.threads} thread(s), 256x256, {args.frames} timed frames per path, "
          f"interleaved; load average {load_average():.1f}")
    print(f"{'recipe':<13} {'path':<12} {'ms/frame':>9} {'frames/s':>8} {'vs off':>9} {'vs ref':>9} {'cpu ms':>9} "
          f"{'cpu: off':>9} {'cpu: ref':>9} {'|d| official':>12} {'|d| ref':>10} {'|d| fp64':>10}")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for method, folder in repos:
        cmd = [sys.executable, __file__, "--child", f"{method}={folder}", "--frames", str(args.frames),
               "--threads", str(args.threads), "--seed", str(args.seed)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            sys.stderr.write(done.stderr[-3000:])
            raise SystemExit(f"{method}: the child process failed (exit {done.returncode}); its error is above")
        print_table(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"load average after: {load_average():.1f}")


if __name__ == "__main__":
    main()

"""Are the LPIPS backbones from PyPI (scripts/fetch-lpips-weights) torchvision's?  thkit's LPIPS-alex on pyiqa's five
calibration pairs against the scores pyiqa publishes for the official ``lpips`` package (``results_official.csv``,
row ``lpips``: AlexNet, v0.1, images in [0, 1] with ``normalize=True``, i.e. fed in [-1, 1]), and LPIPS-vgg beside it.

The pairs come from pyiqa 0.1.16's source distribution on PyPI (``ResultsCalibra/ref_dir`` and ``dist_dir``), which
pip downloads into ``--work-dir`` (8 MB; nothing is installed).  Needs the backbones in ``$THKIT_WEIGHTS_DIR`` (or the
torchvision files) and the LPIPS linear heads (the ``lpips`` or ``torchmetrics`` package).

    python benchmarks/lpips_reference.py --work-dir /tmp/pyiqa
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch


def calibration_pairs(work: Path) -> Path:
    folder = work / "pyiqa-0.1.16" / "ResultsCalibra"
    if not (folder / "results_official.csv").is_file():
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "pyiqa==0.1.16", "-d", str(work)], check=True)
        with tarfile.open(work / "pyiqa-0.1.16.tar.gz") as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("pyiqa-0.1.16/ResultsCalibra/")
                       and m.isfile()]
            tar.extractall(work, members=members, filter="data")
    return folder


def main(argv=None) -> dict:
    from PIL import Image

    from thkit.metrics.lpips_metric import LPIPS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", default="work_dirs/pyiqa")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    folder = calibration_pairs(Path(args.work_dir))
    with open(folder / "results_official.csv") as f:
        rows = list(csv.reader(f))
    names, official = rows[0][1:], next([float(v) for v in r[1:]] for r in rows if r[0] == "lpips")

    def load(path: Path) -> torch.Tensor:
        return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255).permute(2, 0, 1)[None]

    out = {"pairs": names, "official_lpips_alex": official}
    for net in ("alex", "vgg"):
        metric = LPIPS(net=net)
        with torch.no_grad():
            out[f"thkit_lpips_{net}"] = [
                metric.score_frames(load(folder / "dist_dir" / n), load(folder / "ref_dir" / n))[0] for n in names]
        out[f"{net}_backbone"] = Path(metric.weights_files["backbone"]).name
    diff = np.abs(np.array(out["thkit_lpips_alex"]) - np.array(official))
    out["max_abs_diff_alex_vs_official"] = float(diff.max())
    print(f"{'pair':<10}{'official alex':>15}{'thkit alex':>12}{'thkit vgg':>12}")
    for i, n in enumerate(names):
        print(f"{n:<10}{official[i]:>15.5f}{out['thkit_lpips_alex'][i]:>12.5f}{out['thkit_lpips_vgg'][i]:>12.5f}")
    print(f"backbones: {out['alex_backbone']}, {out['vgg_backbone']}; max |thkit - official| (alex) "
          f"{out['max_abs_diff_alex_vs_official']:.1e} (the official scores are printed to 4 significant digits)")
    return out


if __name__ == "__main__":
    main()

"""Evaluation protocols as named presets (``thkit eval --protocol NAME``, ``--list-protocols``).

A protocol fixes everything that makes two evaluations comparable except the model: what is animated with
what (which source frame, which driving frames), the motion transfer, the default metrics and the options they
run with (backend, 8-bit quantisation, which frames are FID's reference set), where the pairs come from, and
the image size of the paper protocol.  Each one is an :class:`EvalProtocol` in a table; :func:`register_protocol`
adds one (a plugin can), :func:`get_protocol` looks one up.  The presets and where each rule comes from:

* ``fomm``: FOMM's ``reconstruction.py`` (first-order-model, ``config/vox-256.yaml``
  ``reconstruction_params``): each test video animates its own frame 0 with absolute keypoints, every frame
  (frame 0 included) is generated and compared with the real one; L1 on the float frames (what the script
  prints), AKD and AED as pose-evaluation computes them on the PNGs the script writes (``uint8`` by floor).
* ``smac``: SMAC's official test (``basicsr`` ``AppMotionCompModel.nondist_validation`` with
  ``FramesMotionTransferTestDataset_PairsList`` and ``options/test.yml``): one generated frame per row of a
  pairs list (``source,driving[,frame|anchor]`` columns of frame paths, the format of DaGAN/MCNet's
  ``data/vox_evaluation.csv``), absolute keypoints, PSNR / L1 / LPIPS-VGG / AKD / AED against the driving
  frame and FID between the results and the *source* frames (one per row), all on 8-bit frames.
* ``cross-id``: FOMM's ``animate.py`` (``animate_params``: 50 pairs, relative motion) scored with the
  cross-identity metrics of MCC / SMAC (Table 3): CSIM, AED and FID against the source, ARD against the driving.
* ``reconstruction``: the data flow of ``fomm`` with every registered metric that applies (not one paper's set).

This module imports nothing heavy: the table is read by ``thkit eval --list-protocols`` and the docs.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from thkit.inference.errors import InferenceError

__all__ = ["EvalProtocol", "PROTOCOLS", "TASKS", "register_protocol", "get_protocol", "protocol_names",
           "describe_protocol", "format_protocols", "ABSOLUTE"]

#: data flows :func:`thkit.inference.evaluate.evaluate` implements
TASKS = {
    "video-reconstruction": "each test video animates one of its own frames; every frame is generated and compared "
                            "with the real one",
    "video-pairs": "the source frame of one video is animated by every frame of another video",
    "frame-pairs": "one generated frame per pairs-list row: the row's source frame animated by the row's driving "
                   "frame",
}
#: absolute motion: the driving keypoints as they are (FOMM's ``standard`` mode)
ABSOLUTE: Mapping[str, bool] = {"relative": False, "relative_jacobian": False, "adapt_movement_scale": False}
_PAIRS = ("none", "optional", "required")


@dataclass(frozen=True)
class EvalProtocol:
    """One evaluation protocol (see the module docstring).

    Args:
        name: what ``--protocol`` takes.
        title: one line.
        task: the data flow, a key of :data:`TASKS`.
        source: which frame animates (words, for reports).
        driving: which frames drive and what the result is compared with (words).
        motion: motion transfer (``relative``, ``relative_jacobian``, ``adapt_movement_scale``); ``None``: the
            recipe's ``motion_transfer``.
        pass_driving: give the driving frame to the model's forward as well (e.g. TPSMM's background predictor),
            as the official reconstruction and test scripts do.
        ground_truth: the driving frame is the ground truth (same identity): pixel metrics apply.
        metrics: the default metrics (``None``: every registered metric that applies).
        metric_options: constructor options each metric gets under this protocol (``--metrics NAME:k=v`` wins).
        pairs: ``'none'``, ``'optional'`` (a CSV or a seeded sample) or ``'required'`` (a CSV).
        num_pairs: default number of pairs (``None``: every row of the CSV).
        image_size: the paper protocol's frame size (evaluations at another size are reported as such).
        origin: the official files the definition follows.
        not_paper_exact: what thkit does differently from, or cannot know about, the official evaluation.
    """

    name: str
    title: str
    task: str
    source: str
    driving: str
    motion: Mapping[str, bool] | None
    pass_driving: bool
    ground_truth: bool
    metrics: tuple[str, ...] | None
    metric_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    pairs: str = "none"
    num_pairs: int | None = None
    image_size: int | None = 256
    origin: str = ""
    not_paper_exact: tuple[str, ...] = ()

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"protocol {self.name!r}: task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.pairs not in _PAIRS:
            raise ValueError(f"protocol {self.name!r}: pairs must be one of {', '.join(_PAIRS)}, got {self.pairs!r}")
        if self.task == "video-reconstruction" and self.pairs != "none":
            raise ValueError(f"protocol {self.name!r}: a video-reconstruction protocol takes no pairs")
        if self.task == "frame-pairs" and self.pairs != "required":
            raise ValueError(f"protocol {self.name!r}: a frame-pairs protocol needs pairs='required'")
        if self.task != "video-reconstruction" and self.pairs == "none":
            raise ValueError(f"protocol {self.name!r}: a {self.task} protocol needs pairs")

    @property
    def fid_reference(self) -> str:
        """Which frames FID compares the results with: ``'target'`` (driving) or ``'source'``."""
        return str(self.metric_options.get("FID", {}).get("reference", "target"))

    def motion_text(self) -> str:
        if self.motion is None:
            return "the recipe's motion_transfer (FOMM vox-256: relative, relative Jacobians, no adapt-scale)"
        if not self.motion.get("relative"):
            return "absolute (the driving keypoints as they are)"
        return (f"relative{', relative Jacobians' if self.motion.get('relative_jacobian') else ''}"
                f"{', adapt-scale' if self.motion.get('adapt_movement_scale') else ''}")

    def metrics_text(self) -> str:
        if self.metrics is None:
            return "every registered metric that applies and can run"
        parts = []
        for m in self.metrics:
            opts = self.metric_options.get(m, {})
            parts.append(m + (f" ({', '.join(f'{k}={v}' for k, v in opts.items())})" if opts else ""))
        return ", ".join(parts)

    def check_pairs(self, pairs: Any) -> None:
        """:class:`~thkit.inference.errors.InferenceError` when a pairs list is given to a protocol without
        pairs, or missing for one that requires it."""
        if pairs is not None and self.pairs == "none":
            with_pairs = ", ".join(n for n in protocol_names() if PROTOCOLS[n].pairs != "none")
            raise InferenceError(f"--pairs is not used by the {self.name} protocol ({TASKS[self.task]}); "
                                 f"protocols with pairs: {with_pairs}")
        if pairs is None and self.pairs == "required":
            raise InferenceError(f"the {self.name} protocol needs --pairs: a CSV with a source,driving header and "
                                 "one row per pair of frame files (.../<video>/<frame>.png, as DaGAN's "
                                 "data/vox_evaluation.csv)")

    def as_dict(self) -> dict[str, Any]:
        """The definition for reports (``meta.protocol_definition`` of ``thkit eval``'s JSON)."""
        return {
            "name": self.name, "title": self.title, "task": self.task, "source": self.source,
            "driving": self.driving, "motion": dict(self.motion) if self.motion is not None else "recipe",
            "pass_driving": self.pass_driving, "ground_truth": self.ground_truth,
            "metrics": list(self.metrics) if self.metrics is not None else "all that apply",
            "metric_options": {k: dict(v) for k, v in self.metric_options.items()},
            "fid_reference": self.fid_reference, "pairs": self.pairs, "num_pairs": self.num_pairs,
            "image_size": self.image_size, "origin": self.origin, "not_paper_exact": list(self.not_paper_exact),
        }


PROTOCOLS: dict[str, EvalProtocol] = {}


def register_protocol(protocol: EvalProtocol, force: bool = False) -> EvalProtocol:
    """Add ``protocol`` to the table (``force`` replaces one of the same name)."""
    if not isinstance(protocol, EvalProtocol):
        raise TypeError(f"register_protocol takes an EvalProtocol, got {type(protocol).__name__}")
    if protocol.name in PROTOCOLS and not force:
        raise ValueError(f"evaluation protocol {protocol.name!r} is already registered")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def protocol_names() -> list[str]:
    return sorted(PROTOCOLS)


def get_protocol(protocol: str | EvalProtocol) -> EvalProtocol:
    """The protocol called ``protocol`` (an :class:`EvalProtocol` is returned as is); an unknown name is an
    :class:`~thkit.inference.errors.InferenceError` listing the known ones."""
    if isinstance(protocol, EvalProtocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise InferenceError(f"unknown evaluation protocol {protocol!r}; known protocols: "
                             f"{', '.join(protocol_names())} (thkit eval --list-protocols describes them)")
    return PROTOCOLS[protocol]


def describe_protocol(p: EvalProtocol) -> list[str]:
    """The definition as ``label: text`` lines (``thkit eval --list-protocols``)."""
    pairs = {"none": "none",
             "optional": f"--pairs CSV, else a seeded sample; {p.num_pairs or 'all'} pairs by default",
             "required": "--pairs CSV (required); " + (f"{p.num_pairs} rows" if p.num_pairs else "every row")
             + " by default"}[p.pairs]
    lines = [
        f"data flow: {TASKS[p.task]}",
        f"source: {p.source}",
        f"driving: {p.driving}",
        f"motion: {p.motion_text()}" + ("; the driving frame is also given to the model" if p.pass_driving else ""),
        f"metrics: {p.metrics_text()}",
        f"FID reference: the {'source' if p.fid_reference == 'source' else 'driving'} frames",
        f"pairs: {pairs}",
        f"image size: {p.image_size or 'the recipe'}" + (" px (paper protocol; other sizes are reported)"
                                                       if p.image_size else ""),
    ]
    if p.origin:
        lines.append(f"follows: {p.origin}")
    lines += [f"not paper-exact: {n}" for n in p.not_paper_exact]
    return lines


def format_protocols() -> str:
    """Every registered protocol with its definition (the text of ``thkit eval --list-protocols``)."""
    out = []
    for name in protocol_names():
        p = PROTOCOLS[name]
        out.append(f"{name}: {p.title}")
        out += [f"  {line}" for line in describe_protocol(p)]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------------
# the presets
# --------------------------------------------------------------------------------------------------------
_RESIZE_NOTE = ("frames stored at another size than the model's are resized (antialiased bilinear); the "
                "official scripts read 256 px frames as they are")
_BACKEND_NOTE = ("AKD, AED, LPIPS and FID are paper numbers only with their paper backends and weights "
                 "(face-alignment S3FD+2DFAN4, OpenFace nn4.small2, torchvision VGG16 + lpips v0.1 heads, "
                 "pytorch-fid Inception); offline backends (AKD:backend=mediapipe) give other numbers")

register_protocol(EvalProtocol(
    name="fomm",
    title="FOMM's reconstruction protocol (reconstruction.py): each test video animates its own first frame",
    task="video-reconstruction",
    source="frame 0 of each test video",
    driving="every frame of the same video, frame 0 included; the real frame is the ground truth",
    motion=ABSOLUTE,
    pass_driving=True,
    ground_truth=True,
    metrics=("L1", "AKD", "AED"),
    metric_options={"AKD": {"backend": "face_alignment", "quantize": "floor"}, "AED": {"quantize": "floor"}},
    origin="first-order-model reconstruction.py and config/vox-256.yaml (reconstruction_params: num_videos 1000, "
           "i.e. all 525 VoxCeleb test videos); AKD/AED by AliaksandrSiarohin/pose-evaluation on the PNGs it writes "
           "((255 * prediction).astype(uint8): floor)",
    not_paper_exact=(
        "reconstruction.py prints only L1; AKD and AED come from pose-evaluation's extract/cmp scripts on its PNG "
        "output, which thkit scores in-process on the same 8-bit (floor) frames",
        _RESIZE_NOTE,
        _BACKEND_NOTE,
    ),
))

register_protocol(EvalProtocol(
    name="smac",
    title="SMAC's official test (basicsr nondist_validation, options/test.yml): one generated frame per "
          "pairs-list row",
    task="frame-pairs",
    source="the source frame a pairs-list row names",
    driving="the driving frame the same row names; it is the ground truth",
    motion=ABSOLUTE,
    pass_driving=True,
    ground_truth=True,
    metrics=("L1", "PSNR", "LPIPS", "FID", "AKD", "AED"),
    metric_options={
        "L1": {"quantize": "round"}, "PSNR": {"quantize": "round"}, "SSIM": {"quantize": "round"},
        "LPIPS": {"net": "vgg", "feed_range": (-1.0, 1.0), "quantize": "round"},
        "FID": {"reference": "source", "quantize": "round"},
        "AKD": {"backend": "face_alignment", "quantize": "round"}, "AED": {"reference": "target", "quantize": "round"},
        "CSIM": {"reference": "target", "quantize": "round"},
    },
    pairs="required",
    num_pairs=None,
    origin="ShaelynZ/synergize-motion-appearance basicsr/models/appmotioncomp_model.py (nondist_validation: "
           "motion_estimator(driving, source) with no normalize_kp, metrics on the saved 8-bit PNGs, FID between "
           "the folders of source and result images), basicsr/data/frames_dataset.py "
           "(FramesMotionTransferTestDataset_PairsList: CSV columns source, driving[, anchor]), options/test.yml "
           "(psnr, fid, l1, lpips, face_akd, face_aed; cross_id: false)",
    not_paper_exact=(
        "SMAC ships no pairs list and its test.yml no dataset block: the CSV format is that of the lists its "
        "loader reads (DaGAN/MCNet data/vox_evaluation.csv: source,driving,frame; 2083 same-video frame pairs); "
        "which list produced the paper's Table 1 is not stated (the paper text describes 50 test videos, each "
        "reconstructed from its first frame: --protocol fomm is that data flow)",
        "the official L1 is on 0-255 values (printed as l1 and l1_255); thkit reports it on [0, 1] (= l1_255)",
        _RESIZE_NOTE + " (SMAC: cv2 INTER_LINEAR to gt_size)",
        _BACKEND_NOTE,
    ),
))

register_protocol(EvalProtocol(
    name="cross-id",
    title="cross-identity animation (FOMM animate.py) with the cross-identity metrics of MCC and SMAC (Table 3)",
    task="video-pairs",
    source="frame 0 of the source video (or the frame a CSV value <video>/<frame file> names)",
    driving="every frame of another video, frame 0 included; there is no ground truth",
    motion=None,
    pass_driving=False,
    ground_truth=False,
    metrics=None,
    metric_options={"AED": {"reference": "source"}, "CSIM": {"reference": "source"}, "FID": {"reference": "source"},
                    "ARD": {}},
    pairs="optional",
    num_pairs=50,
    origin="first-order-model animate.py and frames_dataset.PairedDataset (animate_params: num_pairs 50, "
           "relative motion and Jacobians, adapt_movement_scale False; pairs_list: the first num_pairs CSV rows "
           "whose videos are in the dataset); metrics as MCC/SMAC cross-id (FID vs source, CSIM, ARD)",
    not_paper_exact=(
        "without a CSV, FOMM draws pairs of dataset indices with np.random.seed(0) (a video may drive itself); "
        "thkit draws pairs of different identities (numpy RandomState(seed)), so the pairs differ",
        "MCC/SMAC's own cross-id loader (FramesMotionTransferTestDataset_CrossID_videopair_anchor) skips driving "
        "frame 0 and runs forward and backward from an anchor frame; thkit drives with every frame from frame 0 "
        "as FOMM does",
        _RESIZE_NOTE,
        _BACKEND_NOTE,
    ),
))

register_protocol(EvalProtocol(
    name="reconstruction",
    title="same-identity reconstruction (the data flow of fomm) with every metric that applies",
    task="video-reconstruction",
    source="frame 0 of each test video",
    driving="every frame of the same video, frame 0 included; the real frame is the ground truth",
    motion=ABSOLUTE,
    pass_driving=True,
    ground_truth=True,
    metrics=None,
    origin="FOMM / TPSMM / MRFA --mode reconstruction",
    not_paper_exact=(
        "not one paper's metric set or conventions: every registered metric with its default options "
        "(use fomm or smac for a paper's)",
        _RESIZE_NOTE,
    ),
))

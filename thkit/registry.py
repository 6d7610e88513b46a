"""Component registries of thkit, built on :class:`mmengine.registry.Registry`.

Every swappable part of a talking-head generator lives in exactly one *kind* of registry.  The scope of
all of them is ``thkit`` (this module must stay importable as ``thkit.registry``: mmengine imports
``<scope>.registry`` when it switches scope).  Where mmengine has a root registry for the same concept
(models, datasets, metrics, hooks, visualisation backends) ours is its child, so mmengine's ``Runner``
finds thkit parts under ``default_scope='thkit'``.  The per-slot kinds (keypoint detectors, motion
estimators, warpers, ...) have no parent: a recipe slot can only resolve a part of the right kind.

Register a part with the kind's decorator::

    from thkit.registry import WARPERS

    @WARPERS.register_module()
    class MyWarper(Warper):
        ...

Names must not contain ``'.'`` (mmengine reads it as a scope separator, so the part could never be
found again); :func:`register` checks this for you.
"""
from __future__ import annotations

from dataclasses import dataclass

from mmengine.registry import DATASETS as MM_DATASETS
from mmengine.registry import HOOKS as MM_HOOKS
from mmengine.registry import METRICS as MM_METRICS
from mmengine.registry import MODELS as MM_MODELS
from mmengine.registry import TRANSFORMS as MM_TRANSFORMS
from mmengine.registry import VISBACKENDS as MM_VISBACKENDS
from mmengine.registry import Registry
from mmengine.registry import root as _mm_root
from mmengine.registry.build_functions import build_model_from_cfg

SCOPE = "thkit"


def _reg(name: str, location: str, parent: Registry | None = None, model_like: bool = True) -> Registry:
    return Registry(
        name,
        parent=parent,
        scope=SCOPE,
        locations=[location],
        build_func=build_model_from_cfg if model_like else None,
    )


# --- generator parts (no parent: a slot only resolves parts of its own kind) -----------------------------
KEYPOINT_DETECTORS = _reg("keypoint_detector", "thkit.motion")
MOTION_ESTIMATORS = _reg("motion_estimator", "thkit.motion")
WARPERS = _reg("warper", "thkit.warp")
ENCODERS = _reg("encoder", "thkit.encode")
CODEBOOKS = _reg("codebook", "thkit.codebook")
CODE_ALLOCATIONS = _reg("code_allocation", "thkit.codebook", model_like=False)
COMPENSATORS = _reg("compensator", "thkit.compensate")
DECODERS = _reg("decoder", "thkit.decode")
DISCRIMINATORS = _reg("discriminator", "thkit.models")
ATTENTION_BACKENDS = _reg("attention_backend", "thkit.attention", model_like=False)
LOSSES = _reg("loss", "thkit.losses")
CONVERTERS = _reg("converter", "thkit.convert", model_like=False)
RECTIFIERS = _reg("rectifier", "thkit.motion")
CONDITIONINGS = _reg("conditioning", "thkit.layers.conditioning")

# --- children of mmengine's roots (so the Runner can build them with default_scope='thkit') ------------
MODELS = Registry("model", parent=MM_MODELS, scope=SCOPE, locations=["thkit.models"])
DATASETS = Registry("dataset", parent=MM_DATASETS, scope=SCOPE, locations=["thkit.datasets"])
TRANSFORMS = Registry("transform", parent=MM_TRANSFORMS, scope=SCOPE, locations=["thkit.datasets"])
METRICS = Registry("metric", parent=MM_METRICS, scope=SCOPE, locations=["thkit.metrics"])

# --- training engine: a thkit child of every other mmengine root the Runner builds from, so that a Runner with
# default_scope='thkit' finds mmengine's own parts through the parent (without "Failed to search registry with
# scope" warnings) and thkit's engine parts (thkit.engine.components) by name ------------------------------
_ENGINE = "thkit.engine.components"
HOOKS = Registry("hook", parent=MM_HOOKS, scope=SCOPE, locations=[_ENGINE])
VISBACKENDS = Registry("vis_backend", parent=MM_VISBACKENDS, scope=SCOPE, locations=[_ENGINE])
RUNNERS = Registry("runner", parent=_mm_root.RUNNERS, scope=SCOPE, locations=[_ENGINE])
RUNNER_CONSTRUCTORS = Registry("runner constructor", parent=_mm_root.RUNNER_CONSTRUCTORS, scope=SCOPE,
                               locations=[_ENGINE])
LOOPS = Registry("loop", parent=_mm_root.LOOPS, scope=SCOPE, locations=[_ENGINE])
STRATEGIES = Registry("strategy", parent=_mm_root.STRATEGIES, scope=SCOPE, locations=[_ENGINE])
DATA_SAMPLERS = Registry("data sampler", parent=_mm_root.DATA_SAMPLERS, scope=SCOPE, locations=[_ENGINE])
MODEL_WRAPPERS = Registry("model_wrapper", parent=_mm_root.MODEL_WRAPPERS, scope=SCOPE, locations=[_ENGINE])
WEIGHT_INITIALIZERS = Registry("weight initializer", parent=_mm_root.WEIGHT_INITIALIZERS, scope=SCOPE,
                               locations=[_ENGINE])
OPTIMIZERS = Registry("optimizer", parent=_mm_root.OPTIMIZERS, scope=SCOPE, locations=[_ENGINE])
OPTIM_WRAPPERS = Registry("optim_wrapper", parent=_mm_root.OPTIM_WRAPPERS, scope=SCOPE, locations=[_ENGINE])
OPTIM_WRAPPER_CONSTRUCTORS = Registry("optimizer wrapper constructor", parent=_mm_root.OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope=SCOPE, locations=[_ENGINE])
PARAM_SCHEDULERS = Registry("parameter scheduler", parent=_mm_root.PARAM_SCHEDULERS, scope=SCOPE,
                            locations=[_ENGINE])
EVALUATOR = Registry("evaluator", parent=_mm_root.EVALUATOR, scope=SCOPE, locations=[_ENGINE])
TASK_UTILS = Registry("task util", parent=_mm_root.TASK_UTILS, scope=SCOPE, locations=[_ENGINE])
VISUALIZERS = Registry("visualizer", parent=_mm_root.VISUALIZERS, scope=SCOPE, locations=[_ENGINE])
LOG_PROCESSORS = Registry("log_processor", parent=_mm_root.LOG_PROCESSORS, scope=SCOPE, locations=[_ENGINE])
INFERENCERS = Registry("inferencer", parent=_mm_root.INFERENCERS, scope=SCOPE, locations=[_ENGINE])
FUNCTIONS = Registry("function", parent=_mm_root.FUNCTIONS, scope=SCOPE, locations=[_ENGINE])


@dataclass(frozen=True)
class Kind:
    """One kind of component: its registry, the interface its parts satisfy, and a short description."""

    name: str
    registry: Registry
    description: str
    interface: str  # the interface class: a name in thkit.interfaces, or a dotted path (resolved lazily)

    def interface_class(self):
        import importlib

        module, _, name = self.interface.rpartition(".")
        return getattr(importlib.import_module(module or "thkit.interfaces"), name)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind("keypoint", KEYPOINT_DETECTORS, "keypoint detectors: image -> keypoints (+ local Jacobians)",
             "KeypointDetector"),
        Kind("motion", MOTION_ESTIMATORS, "motion estimators: source + keypoints -> dense flow + occlusion",
             "MotionEstimator"),
        Kind("warper", WARPERS, "warpers: features + flow (+ occlusion) -> warped features", "Warper"),
        Kind("encoder", ENCODERS, "encoders: source image -> multi-scale features", "Encoder"),
        Kind("codebook", CODEBOOKS, "vector-quantised codebooks (nearest code, VQ losses, usage statistics)",
             "Codebook"),
        Kind("allocation", CODE_ALLOCATIONS, "code allocations: which codes each scale may use", "CodeAllocation"),
        Kind("compensator", COMPENSATORS, "compensators: refine warped features (and flows) per scale", "Compensator"),
        Kind("decoder", DECODERS, "decoders: (compensated) features -> image", "Decoder"),
        Kind("rectifier", RECTIFIERS, "rectifiers: source + driving keypoints -> a code and a warp of the driving "
             "frame (and its keypoints) to the source's frame", "thkit.motion.scale.Rectifier"),
        Kind("conditioning", CONDITIONINGS, "conditionings: a per-frame code added into a decoder's layers",
             "thkit.layers.conditioning.Conditioning"),
        Kind("discriminator", DISCRIMINATORS, "discriminators for adversarial training", "Discriminator"),
        Kind("attention", ATTENTION_BACKENDS, "attention backends (xformers, sdpa, math)", "AttentionBackend"),
        Kind("model", MODELS, "complete models that wire parts together", "TalkingHeadModelBase"),
        Kind("loss", LOSSES, "training losses", "LossModule"),
        Kind("converter", CONVERTERS, "official-checkpoint converters: detect, convert, recipe_from_official",
             "thkit.convert.base.Converter"),
        Kind("metric", METRICS, "evaluation metrics", "MetricBase"),
        Kind("dataset", DATASETS, "datasets", "DatasetBase"),
    ]
}

#: Modules holding the built-in parts.  :func:`import_builtins` imports them all, eagerly, before any
#: plugin is loaded (so a plugin can never steal a built-in name and crash the host later).
BUILTIN_MODULES = sorted({loc for kind in KINDS.values() for loc in kind.registry._locations})

_BUILTINS_IMPORTED = False


def import_builtins() -> None:
    """Import every built-in component module once (idempotent)."""
    global _BUILTINS_IMPORTED
    if _BUILTINS_IMPORTED:
        return
    import importlib

    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)
    for kind in KINDS.values():
        kind.registry._imported = True  # mmengine's lazy-import flag: nothing left to import
    _BUILTINS_IMPORTED = True


def kind_of(name: str) -> Kind:
    """Return the :class:`Kind` called ``name``, with a helpful error listing the kinds that exist."""
    try:
        return KINDS[name]
    except KeyError:
        from thkit.errors import suggest

        raise KeyError(f"unknown component kind {name!r}; {suggest(name, KINDS)}") from None


__all__ = [
    "SCOPE",
    "KINDS",
    "Kind",
    "kind_of",
    "import_builtins",
    "KEYPOINT_DETECTORS",
    "MOTION_ESTIMATORS",
    "WARPERS",
    "ENCODERS",
    "CODEBOOKS",
    "CODE_ALLOCATIONS",
    "COMPENSATORS",
    "DECODERS",
    "DISCRIMINATORS",
    "ATTENTION_BACKENDS",
    "LOSSES",
    "CONVERTERS",
    "RECTIFIERS",
    "CONDITIONINGS",
    "MODELS",
    "DATASETS",
    "TRANSFORMS",
    "METRICS",
    "HOOKS",
    "VISBACKENDS",
    "RUNNERS",
    "RUNNER_CONSTRUCTORS",
    "LOOPS",
    "STRATEGIES",
    "DATA_SAMPLERS",
    "MODEL_WRAPPERS",
    "WEIGHT_INITIALIZERS",
    "OPTIMIZERS",
    "OPTIM_WRAPPERS",
    "OPTIM_WRAPPER_CONSTRUCTORS",
    "PARAM_SCHEDULERS",
    "EVALUATOR",
    "TASK_UTILS",
    "VISUALIZERS",
    "LOG_PROCESSORS",
    "INFERENCERS",
    "FUNCTIONS",
]

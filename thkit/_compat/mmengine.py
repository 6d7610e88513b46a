"""mmengine 0.10.x on today's setuptools and torch.

* ``pkg_resources`` is gone from recent setuptools; mmengine's ``is_installed`` / ``get_installed_path``
  import it lazily and crash (this breaks ``read_base`` from installed packages and ``pkg::`` bases).
  We replace both, in every module that bound them by name, with ``importlib``-based versions.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os.path as osp

_APPLIED = False


def is_installed(package: str) -> bool:
    """``importlib`` replacement of :func:`mmengine.utils.is_installed` (no ``pkg_resources``)."""
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def get_installed_path(package: str) -> str:
    """``importlib`` replacement of :func:`mmengine.utils.get_installed_path`."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise importlib.metadata.PackageNotFoundError(package)
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    return osp.dirname(spec.origin)


def apply() -> None:
    """Patch mmengine once (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    import mmengine.utils
    import mmengine.utils.package_utils as pu

    targets = [pu, mmengine.utils]
    try:
        import mmengine.config.config as cc

        targets.append(cc)
    except ImportError:  # pragma: no cover - mmengine layout change
        pass
    for mod in targets:
        if hasattr(mod, "is_installed"):
            mod.is_installed = is_installed
        if hasattr(mod, "get_installed_path"):
            mod.get_installed_path = get_installed_path
    _APPLIED = True


# ==========================================================================================================
# Training-engine workarounds (applied by :func:`apply_engine`, called when thkit builds a Runner).  Each one is
# tested in tests/test_compat.py.  mmengine's Runner is imported lazily: ``import thkit`` stays light.
#
#  B1  torch >= 2.6 loads with ``weights_only=True``; mmengine pickles ``HistoryBuffer`` / numpy objects into
#      every checkpoint, so ``resume`` fails.  Fix: checkpoints are written as plain containers + tensors
#      (:func:`to_plain`), and the local loader reads them with ``weights_only=True`` and rebuilds the objects
#      (:func:`from_plain`).  torch's safe default stays on; nothing is unpickled beyond tensors.
#  --  mmengine writes checkpoints (and ``last_checkpoint``) in place, and ``max_keep_ckpts`` deletes the old
#      checkpoint *before* writing the new one: a crash mid-write can leave no usable checkpoint.  Fix:
#      :func:`atomic_save_checkpoint` (temp file + fsync + rename) and :func:`save_checkpoint_with_step`
#      (write, then point ``last_checkpoint`` at it atomically, then delete stale ones).
#  B2  ``launcher='pytorch'`` calls ``torch.cuda.set_device`` even for gloo on CPU.  Fix:
#      :func:`init_cpu_distributed` initialises the process group first (the Runner then skips its own init).
#  B3  the Runner passes ``device_ids=[LOCAL_RANK]`` to DDP, which CPU modules reject.  Fix:
#      :func:`ddp_wrapper_cfg` sets ``device_ids=None`` on CPU.
#  B4  ``CheckpointHook.before_train`` always builds a ``FileClient`` "to keep backward compatibility" (unused
#      when ``file_client_args`` is None, as in every thkit recipe), and ``FileClient`` / ``HardDiskBackend`` log
#      that they "will be deprecated": two WARNING lines in every training log and demo that nobody can act on.
#      Fix: :func:`without_file_client_deprecation` drops exactly those two records while the hook runs.
# ==========================================================================================================
_ENGINE_APPLIED = False
_PLAIN_TAG = "__thkit_plain__"
_ORIGINAL_SAVE = None


class PlainCheckpointError(TypeError):
    """An object in a training checkpoint cannot be stored as plain data (names its path in the checkpoint)."""


def to_plain(obj, path: str = "checkpoint",
             drop_unknown_under: tuple[str, ...] = ("checkpoint.message_hub.runtime_info",)):
    """A copy of ``obj`` that ``torch.load(weights_only=True)`` can read: tensors, numbers, strings, ``None``
    and dicts / lists / tuples of them.  mmengine's ``HistoryBuffer``, numpy arrays / scalars, ``Counter``
    and sets are encoded as tagged dicts that :func:`from_plain` turns back into the same objects.

    Anything else raises :class:`PlainCheckpointError` naming its path, except under ``drop_unknown_under``
    (mmengine's free-form runtime info), where it is left out with a warning.
    """
    import collections

    import numpy as np
    import torch

    if isinstance(obj, np.generic):  # before float: np.float64 is a float subclass, pickled as a numpy scalar
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor, torch.dtype, torch.device, torch.Size)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return {_PLAIN_TAG: "ndarray_object", "items": to_plain(obj.tolist(), path, drop_unknown_under)}
        return {_PLAIN_TAG: "ndarray", "data": torch.from_numpy(np.ascontiguousarray(obj).copy())}
    try:
        from mmengine.logging import HistoryBuffer
    except ImportError:  # pragma: no cover
        HistoryBuffer = ()  # type: ignore[assignment]
    if HistoryBuffer and isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {_PLAIN_TAG: "HistoryBuffer", "log": to_plain(np.asarray(log), path),
                "count": to_plain(np.asarray(count), path), "max_length": int(obj.max_length)}
    if isinstance(obj, collections.Counter):
        return {_PLAIN_TAG: "Counter", "items": [[to_plain(k, path), int(v)] for k, v in obj.items()]}
    if isinstance(obj, (set, frozenset)):
        return {_PLAIN_TAG: "set", "items": [to_plain(v, path) for v in obj]}
    if isinstance(obj, dict):  # dict, OrderedDict, defaultdict -> dict / OrderedDict
        out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise PlainCheckpointError(f"{path} has a key of type {type(k).__name__} ({k!r}); only str / int keys "
                                           "can be stored in a weights-only checkpoint")
            sub = f"{path}.{k}"
            try:
                out[k] = to_plain(v, sub, drop_unknown_under)
            except PlainCheckpointError:
                if path in drop_unknown_under:
                    import warnings

                    warnings.warn(f"{sub} ({type(v).__name__}) cannot be stored in a weights-only checkpoint; "
                                  "left out", stacklevel=2)
                    continue
                raise
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, f"{path}[{i}]", drop_unknown_under) for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise PlainCheckpointError(
        f"{path} holds a {type(obj).__module__}.{type(obj).__qualname__}, which a weights-only checkpoint cannot "
        "store (only tensors, numbers, strings and containers of them)")


def from_plain(obj):
    """Inverse of :func:`to_plain` (untagged data passes through unchanged)."""
    import collections

    if isinstance(obj, dict):
        tag = obj.get(_PLAIN_TAG) if _PLAIN_TAG in obj else None
        if tag is None:
            out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
            for k, v in obj.items():
                out[k] = from_plain(v)
            return out
        import numpy as np

        if tag == "ndarray":
            return obj["data"].numpy()
        if tag == "ndarray_object":
            return np.array(from_plain(obj["items"]), dtype=object)
        if tag == "HistoryBuffer":
            from mmengine.logging import HistoryBuffer

            return HistoryBuffer(list(from_plain(obj["log"])), list(from_plain(obj["count"])), int(obj["max_length"]))
        if tag == "Counter":
            return collections.Counter({from_plain(k): v for k, v in obj["items"]})
        if tag == "set":
            return {from_plain(v) for v in obj["items"]}
        raise ValueError(f"unknown plain-checkpoint tag {tag!r}")
    if isinstance(obj, list):
        return [from_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(from_plain(v) for v in obj)
    return obj


def _is_local(filename) -> bool:
    s = str(filename)
    return "://" not in s or s.startswith("file://")


def atomic_save_checkpoint(checkpoint: dict, filename, file_client_args=None, backend_args=None) -> None:
    """Replacement of ``mmengine.runner.checkpoint.save_checkpoint``: the checkpoint is converted with
    :func:`to_plain` and, for local paths, written atomically (:func:`thkit.checkpoint.atomic_save`)."""
    plain = to_plain(checkpoint)
    if _is_local(filename) and file_client_args is None and not backend_args:
        from thkit.checkpoint import atomic_save

        atomic_save(plain, str(filename)[7:] if str(filename).startswith("file://") else filename)
        return
    _ORIGINAL_SAVE(plain, filename, file_client_args=file_client_args, backend_args=backend_args)


def load_local_checkpoint(filename, map_location=None):
    """Replacement of mmengine's local checkpoint loader: ``torch.load(weights_only=True)`` (torch's safe
    default) and :func:`from_plain`.  A file that holds pickled Python objects is refused with a clear error;
    it is not unpickled."""
    import os.path as osp

    import torch

    from thkit.errors import CheckpointError

    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    try:
        obj = torch.load(filename, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError / RuntimeError variants
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{filename} cannot be read with weights_only=True (it holds pickled Python objects, e.g. a checkpoint "
            f"written by plain mmengine); thkit does not unpickle checkpoints. Detail: {first}") from e
    return from_plain(obj)


def atomic_write_text(path, text: str) -> None:
    """Write a small text file atomically (:func:`thkit.checkpoint.atomic_write`)."""
    from thkit.checkpoint import atomic_write

    atomic_write(path, lambda f: f.write(text), mode="w")


def save_checkpoint_with_step(hook, runner, step: int, meta: dict) -> None:
    """``CheckpointHook._save_checkpoint_with_step`` in a crash-safe order: write the new checkpoint
    (atomically), point ``last_checkpoint`` at it (atomically), and only then delete checkpoints beyond
    ``max_keep_ckpts``.  mmengine deletes first and writes in place."""
    import collections
    import os.path as osp

    from mmengine.dist import is_main_process

    hub = runner.message_hub
    old_ids, old_last = list(getattr(hook, "keep_ckpt_ids", [])), hub.get_info("last_ckpt")
    ids, stale = list(old_ids), []
    if hook.max_keep_ckpts > 0 and not (ids and ids[-1] == step):
        ids.append(step)
        while len(ids) > hook.max_keep_ckpts:
            stale.append(ids.pop(0))
    if hook.max_keep_ckpts > 0:
        hub.update_info("keep_ckpt_ids", list(ids))  # saved inside the checkpoint, as mmengine does
    ckpt_filename = hook.filename_tmpl.format(step)
    last = hook.file_backend.join_path(hook.out_dir, ckpt_filename)
    hub.update_info("last_ckpt", last)
    try:
        runner.save_checkpoint(hook.out_dir, ckpt_filename, hook.file_client_args, save_optimizer=hook.save_optimizer,
                               save_param_scheduler=hook.save_param_scheduler, meta=meta, by_epoch=hook.by_epoch,
                               backend_args=hook.backend_args, **hook.args)
    except BaseException:
        if hook.max_keep_ckpts > 0:
            hub.update_info("keep_ckpt_ids", old_ids)
        if old_last is not None:
            hub.update_info("last_ckpt", old_last)
        raise
    hook.last_ckpt = last
    if hook.max_keep_ckpts > 0:
        hook.keep_ckpt_ids = collections.deque(ids, hook.max_keep_ckpts)
    if not is_main_process():
        return
    atomic_write_text(osp.join(runner.work_dir, "last_checkpoint"), hook.last_ckpt)
    for old in stale:
        path = hook.file_backend.join_path(hook.out_dir, hook.filename_tmpl.format(old))
        if path == hook.last_ckpt:
            continue
        if hook.file_backend.isfile(path):
            hook.file_backend.remove(path)
        elif hook.file_backend.isdir(path):
            hook.file_backend.rmtree(path)


#: the start of the two log lines mmengine's ``FileClient`` and ``HardDiskBackend`` print when built (B4)
FILE_CLIENT_DEPRECATIONS = ('"FileClient" will be deprecated in future',
                            '"HardDiskBackend" is the alias of "LocalBackend" and the former will be deprecated')


class _DropMessages:
    """A ``logging`` filter that drops records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]):
        self.prefixes = prefixes
        self.dropped: list[str] = []

    def filter(self, record) -> bool:
        message = str(record.getMessage())
        if message.startswith(self.prefixes):
            self.dropped.append(message)
            return False
        return True


@contextlib.contextmanager
def without_file_client_deprecation():
    """Within the block, mmengine's current logger drops the ``FileClient`` / ``HardDiskBackend`` deprecation
    lines (B4) and nothing else.  mmengine logs them with ``print_log(logger='current')``."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    drop = _DropMessages(FILE_CLIENT_DEPRECATIONS)
    logger.addFilter(drop)
    try:
        yield drop
    finally:
        logger.removeFilter(drop)


def init_cpu_distributed(backend: str = "gloo", timeout_s: float | None = None) -> bool:
    """B2: initialise ``torch.distributed`` from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``/``PORT``) ourselves, so mmengine's ``init_dist`` (which calls ``torch.cuda.set_device``) is
    skipped.  Returns True when a process group is (now) initialised."""
    import datetime
    import os

    import torch.distributed as dist

    if not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    kwargs = {}
    if timeout_s is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=float(timeout_s))
    dist.init_process_group(backend=backend, init_method="env://", **kwargs)
    return True


def ddp_wrapper_cfg(cfg: dict | None, device_type: str) -> dict:
    """B3: the Runner's ``model_wrapper_cfg`` with ``device_ids=None`` on CPU (cfg values beat the Runner's
    ``device_ids=[LOCAL_RANK]`` default)."""
    out = dict(cfg or {})
    out.setdefault("type", "MMDistributedDataParallel")
    out.setdefault("broadcast_buffers", False)
    if device_type == "cpu":
        out["device_ids"] = None
    return out


def apply_engine() -> None:
    """Apply the Runner-side workarounds once (idempotent): plain + atomic checkpoint saving in every module
    that bound mmengine's ``save_checkpoint``, and the weights-only local checkpoint loader."""
    global _ENGINE_APPLIED, _ORIGINAL_SAVE
    apply()
    if _ENGINE_APPLIED:
        return
    import mmengine.runner
    import mmengine.runner.checkpoint as ckpt
    import mmengine.runner.runner as rr

    _ORIGINAL_SAVE = ckpt.save_checkpoint
    for mod in (ckpt, rr, mmengine.runner):
        if getattr(mod, "save_checkpoint", None) is _ORIGINAL_SAVE:
            mod.save_checkpoint = atomic_save_checkpoint
    ckpt.CheckpointLoader.register_scheme(prefixes="", force=True)(load_local_checkpoint)
    _ENGINE_APPLIED = True

"""Import every registered training-engine part (the ``locations`` of thkit's engine registries), and apply
the Runner-side mmengine workarounds (:func:`thkit._compat.mmengine.apply_engine`), so that a Runner built
from a thkit config by plain mmengine (``Runner.from_cfg`` with ``default_scope='thkit'``) saves and loads
checkpoints the same way ``thkit train`` does."""
from thkit._compat.mmengine import apply_engine
from thkit.engine import data, hooks, keypoint_transfer, loop, optim, parts, trainer  # noqa: F401

apply_engine()

__all__ = ["data", "hooks", "keypoint_transfer", "loop", "optim", "parts", "trainer"]

"""Import every registered training-engine part (the ``locations`` of thkit's engine registries)."""
from thkit.engine import data, hooks, loop, optim, trainer  # noqa: F401

__all__ = ["data", "hooks", "loop", "optim", "trainer"]

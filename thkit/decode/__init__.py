"""Decoders: (compensated) warped features -> image."""
from thkit._imports import import_submodules

__all__ = import_submodules(__name__, __path__)

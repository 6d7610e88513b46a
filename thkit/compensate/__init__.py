"""Compensators: refine warped features (and flows) per scale (SMAC MCC/ACC, MCNet memory, ...)."""
from thkit._imports import import_submodules

__all__ = import_submodules(__name__, __path__)

"""Compatibility shims for third-party packages on today's torch/setuptools, each in one place, each tested.

Applied once, at ``import thkit``.  See :mod:`thkit._compat.mmengine`.
"""
from thkit._compat.mmengine import apply as _apply_mmengine

_apply_mmengine()

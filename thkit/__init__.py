"""thkit: every part of a one-shot talking-head generator as a swappable, registered component."""
from thkit import _compat  # noqa: F401  (mmengine on today's torch/setuptools; see thkit/_compat)

__version__ = "0.1.0"

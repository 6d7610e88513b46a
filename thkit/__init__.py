"""thkit: every part of a one-shot talking-head generator as a swappable, registered component.

The front door (:mod:`thkit.api`)::

    import thkit
    model = thkit.create_model("smac/small")
    thkit.list_models("fomm/*")
"""
from thkit import _compat  # noqa: F401  (mmengine on today's torch/setuptools; see thkit/_compat)

__version__ = "0.1.0"

_API = ("animate", "convert_checkpoint", "create_model", "list_models", "load_recipe", "model_info")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    # the API is imported on first use, so `import thkit` stays light (and the CLI's start-up fast)
    if name in _API:
        from thkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'thkit' has no attribute {name!r}")

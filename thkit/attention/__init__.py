"""Attention backends (xformers, torch SDPA, plain math reference) and the front door :func:`attention`.

``attention(q, k, v, mask=None, backend=None)`` with ``(B, tokens, heads, head_dim)`` tensors; the default
backend is chosen by :func:`use_backend` / :func:`set_default_backend` / ``THKIT_ATTENTION`` / ``'auto'``
(see :mod:`thkit.attention.dispatch`).  Mask conventions: :mod:`thkit.attention._masks`.
"""
from thkit._imports import import_submodules

__all__ = import_submodules(__name__, __path__)

from thkit.attention._masks import key_padding_to_mask  # noqa: E402
from thkit.attention.dispatch import (  # noqa: E402
    ENV_VAR,
    BackendUnavailableError,
    UnknownBackendError,
    attention,
    check_backend_name,
    default_backend_name,
    describe_backends,
    get_backend,
    registered_backends,
    resolve_backend,
    set_default_backend,
    use_backend,
)

__all__ += [
    "ENV_VAR",
    "BackendUnavailableError",
    "UnknownBackendError",
    "attention",
    "check_backend_name",
    "default_backend_name",
    "describe_backends",
    "get_backend",
    "key_padding_to_mask",
    "registered_backends",
    "resolve_backend",
    "set_default_backend",
    "use_backend",
]

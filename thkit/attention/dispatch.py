"""The front door :func:`attention` and the choice of the default backend.

Which backend a call uses, first match wins:

1. the ``backend=`` argument of the call (or of the module that makes it), unless ``None``;
2. the innermost :func:`use_backend` context (per thread / task: a :class:`contextvars.ContextVar`);
3. :func:`set_default_backend` (process-wide);
4. the environment variable ``THKIT_ATTENTION`` (read at call time);
5. ``'auto'`` (xformers > sdpa > math, whichever can run the call).

A backend named explicitly that cannot run here raises :class:`BackendUnavailableError` (it never
silently falls back: only ``'auto'`` chooses).  An unknown name raises :class:`UnknownBackendError`
listing the closest registered names.
"""
from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from thkit.attention._masks import key_padding_to_mask, merge_masks
from thkit.attention.backends import (  # noqa: F401  (importing it registers the built-in backends)
    BackendUnavailableError,
    UnknownBackendError,
    check_backend_name,
    get_backend,
    registered_backends,
)

Tensor = torch.Tensor

ENV_VAR = "THKIT_ATTENTION"

_CONTEXT: contextvars.ContextVar[str | None] = contextvars.ContextVar("thkit_attention_backend", default=None)
_GLOBAL: str | None = None
def default_backend_name() -> str:
    """The backend a call with ``backend=None`` uses (before ``'auto'`` is resolved)."""
    ctx = _CONTEXT.get()
    if ctx is not None:
        return ctx
    if _GLOBAL is not None:
        return _GLOBAL
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return check_backend_name(env, where=f"environment variable {ENV_VAR}")
    return "auto"


def set_default_backend(name: str | None) -> None:
    """Set the process-wide default backend (``None`` restores the env var / ``'auto'``)."""
    global _GLOBAL
    _GLOBAL = None if name is None else check_backend_name(name)


@contextmanager
def use_backend(name: str) -> Iterator[str]:
    """``with use_backend('math'): ...``: calls with ``backend=None`` inside use ``name``."""
    token = _CONTEXT.set(check_backend_name(name))
    try:
        yield name
    finally:
        _CONTEXT.reset(token)


def resolve_backend(name: str | None = None, q: Tensor | None = None) -> str:
    """The concrete backend a call would use (``None`` -> default, ``'auto'`` -> its choice for ``q``)."""
    name = default_backend_name() if name is None else check_backend_name(name)
    if name == "auto":
        return get_backend("auto").choose(q)
    return name


def describe_backends() -> dict[str, str]:
    """``{name: 'available: ...' | 'unavailable: ...'}`` for every registered backend (for ``thkit info``)."""
    out = {}
    for name in registered_backends():
        b = get_backend(name)
        ok = b.available()
        why = b.reason() if hasattr(b, "reason") else ""
        out[name] = f"{'available' if ok else 'unavailable'}: {why}"
    return out


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, *, key_padding_mask: Tensor | None = None,
              scale: float | None = None, dropout_p: float = 0.0, backend: str | None = None) -> Tensor:
    """Multi-head scaled dot-product attention ``softmax(q k^T * scale + mask) v`` through a backend.

    Args:
        q: ``(B, M, H, D)`` queries; ``k``: ``(B, N, H, D)``; ``v``: ``(B, N, H, Dv)``.
        mask: bool keep mask (True = attend) or additive float mask, broadcastable to ``(B, H, M, N)``
            (2-D = ``(M, N)``, 3-D = ``(B, M, N)``).
        key_padding_mask: ``(B, N)`` bool, **True = ignore that key** (``nn.MultiheadAttention``'s
            convention); combined with ``mask``.
        scale: logit scale, default ``1/sqrt(D)``.
        dropout_p: dropout on the attention weights (pass 0 in eval).
        backend: a registered backend name; ``None`` = the current default (see module docstring).

    Returns ``(B, M, H, Dv)``.  Query rows that can see no key give zeros.
    """
    name = default_backend_name() if backend is None else check_backend_name(backend)
    impl = get_backend(name)
    if name != "auto" and not impl.available():
        raise BackendUnavailableError(
            f"attention backend {name!r} is unavailable: {impl.reason()}; use 'auto' or one of "
            f"{', '.join(n for n in registered_backends() if get_backend(n).available())}"
        )
    if key_padding_mask is not None:
        mask = merge_masks(mask if mask is None or mask.dim() == 4 else _as4d(mask),
                           key_padding_to_mask(key_padding_mask, k.shape[1]), q.dtype)
    return impl(q, k, v, mask=mask, scale=scale, dropout_p=dropout_p)


def _as4d(mask: Tensor) -> Tensor:
    if mask.dim() == 2:
        return mask[None, None]
    if mask.dim() == 3:
        return mask[:, None]
    raise ValueError(f"mask must be 2-D, 3-D or 4-D; got shape {tuple(mask.shape)}")

"""The attention backends: ``math`` (reference), ``sdpa`` (torch), ``xformers`` (optional) and ``auto``.

Every backend is a plain object (not an ``nn.Module``: it holds no weights) registered in
:data:`thkit.registry.ATTENTION_BACKENDS` and called as::

    out = backend(q, k, v, mask=None, scale=None, dropout_p=0.0)

with ``q`` ``(B, M, H, D)``, ``k`` ``(B, N, H, D)``, ``v`` ``(B, N, H, Dv)`` and ``out`` ``(B, M, H, Dv)``
(the layout of xformers; the one transposition SDPA needs happens inside).  It computes
``softmax(q k^T * scale + mask) v`` per head, ``scale`` defaulting to ``1/sqrt(D)``.  Masks follow
:mod:`thkit.attention._masks` (bool = keep, float = additive; rows with no visible key give zeros).
``available()`` says whether the backend can run in this process.

Use them through :func:`thkit.attention.attention` (which also picks the default backend) rather than
directly.
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from thkit.attention._masks import canonical_mask, dead_rows, to_additive, zero_dead_rows
from thkit.errors import ThkitError, suggest
from thkit.interfaces import AttentionBackend
from thkit.registry import ATTENTION_BACKENDS

_INSTANCES: dict[tuple[str, type], object] = {}


class UnknownBackendError(ThkitError, ValueError):
    """No attention backend of that name is registered."""


class BackendUnavailableError(ThkitError, RuntimeError):
    """The attention backend exists but cannot run in this process (missing package, no CUDA, ...)."""


def registered_backends() -> list[str]:
    """Names of every registered attention backend, sorted."""
    return sorted(ATTENTION_BACKENDS.module_dict)


def check_backend_name(name: str, where: str = "") -> str:
    """Return ``name`` if it is a registered backend, else raise :class:`UnknownBackendError`."""
    if not isinstance(name, str) or name not in ATTENTION_BACKENDS.module_dict:
        src = f" (from {where})" if where else ""
        raise UnknownBackendError(
            f"unknown attention backend {name!r}{src}; {suggest(str(name), registered_backends())} "
            f"(registered: {', '.join(registered_backends())})"
        )
    return name


def get_backend(name: str):
    """The (cached) backend object registered as ``name``."""
    check_backend_name(name)
    cls = ATTENTION_BACKENDS.module_dict[name]
    key = (name, cls)
    if key not in _INSTANCES:
        _INSTANCES[key] = cls()
    return _INSTANCES[key]


Tensor = torch.Tensor

#: preference order of the ``auto`` backend, best first
AUTO_ORDER: tuple[str, ...] = ("xformers", "sdpa", "math")


def check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    """Raise a ``ValueError`` naming the mismatch unless q, k, v have the ``(B, M, H, D)`` layout."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"attention expects {name} as (B, tokens, heads, head_dim); got shape {tuple(t.shape)}")
    if not (q.shape[0] == k.shape[0] == v.shape[0]):
        raise ValueError(f"batch sizes differ: q {q.shape[0]}, k {k.shape[0]}, v {v.shape[0]}")
    if k.shape[1] != v.shape[1]:
        raise ValueError(f"k has {k.shape[1]} tokens but v has {v.shape[1]}")
    if not (q.shape[2] == k.shape[2] == v.shape[2]):
        raise ValueError(f"head counts differ: q {q.shape[2]}, k {k.shape[2]}, v {v.shape[2]}")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"q and k head dims differ: {q.shape[3]} vs {k.shape[3]}")


def default_scale(head_dim: int) -> float:
    """``sqrt(1 / D)``, written exactly as ``torch.nn.functional.multi_head_attention_forward`` does."""
    return math.sqrt(1.0 / float(head_dim))


class _Backend(AttentionBackend):
    name: str = ""

    def available(self) -> bool:  # pragma: no cover - overridden
        return True

    def supports(self, q: Tensor) -> bool:
        """Whether this backend can run on tensors like ``q`` (device, dtype)."""
        return True

    def reason(self) -> str:
        """Why the backend is (un)available, in words."""
        return "available" if self.available() else "unavailable"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


@ATTENTION_BACKENDS.register_module(name="math")
class MathAttention(_Backend):
    """Reference attention: ``softmax((q * scale) k^T + mask) v`` with explicit matrices.

    The operation order is that of ``nn.MultiheadAttention``'s weight-returning path (scale ``q`` first,
    then the product, then the mask, then softmax), so it is the closest to the official SMAC numbers.
    Memory is O(B·H·M·N).  :meth:`probabilities` returns the attention weights too.
    """

    name = "math"

    def available(self) -> bool:
        return True

    def reason(self) -> str:
        return "reference: explicit matmul + softmax (always available)"

    def probabilities(self, q: Tensor, k: Tensor, mask: Tensor | None = None, scale: float | None = None) -> Tensor:
        """The attention weights ``(B, H, M, N)`` (rows with no visible key are zero)."""
        check_qkv(q, k, k)
        cmask = canonical_mask(mask, q, k)
        return self._probs(q, k, cmask, scale)

    def _probs(self, q: Tensor, k: Tensor, mask: Tensor | None, scale: float | None) -> Tensor:
        scale = default_scale(q.shape[-1]) if scale is None else scale
        logits = torch.matmul(q.transpose(1, 2) * scale, k.permute(0, 2, 3, 1))  # (B, H, M, N)
        if mask is None:
            return torch.softmax(logits, dim=-1)
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, float("-inf"))
            dead = dead_rows(mask).unsqueeze(-1)
        else:
            logits = logits + mask
            dead = torch.isneginf(logits).all(dim=-1, keepdim=True)
        # a row with no visible key: give softmax finite input, then zero the row (no NaN, no NaN grad); done
        # unconditionally (no data-dependent branch, so torch.compile keeps one graph): rows that see a key are
        # left as they are by both fills
        logits = logits.masked_fill(dead, 0.0)
        return torch.softmax(logits, dim=-1).masked_fill(dead, 0.0)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, scale: float | None = None,
                 dropout_p: float = 0.0) -> Tensor:
        check_qkv(q, k, v)
        probs = self._probs(q, k, canonical_mask(mask, q, k), scale)
        if dropout_p > 0.0:
            probs = F.dropout(probs, p=dropout_p)
        return torch.matmul(probs, v.transpose(1, 2)).transpose(1, 2)


@ATTENTION_BACKENDS.register_module(name="sdpa")
class SdpaAttention(_Backend):
    """:func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient / math kernels
    chosen by torch).  The ``(B, M, H, D) -> (B, H, M, D)`` layout change is a view on the way in and out."""

    name = "sdpa"

    def available(self) -> bool:
        return hasattr(F, "scaled_dot_product_attention")

    def reason(self) -> str:
        return (f"torch {torch.__version__} scaled_dot_product_attention" if self.available()
                else f"torch {torch.__version__} has no scaled_dot_product_attention")

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, scale: float | None = None,
                 dropout_p: float = 0.0) -> Tensor:
        check_qkv(q, k, v)
        cmask = canonical_mask(mask, q, k)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=cmask, dropout_p=dropout_p,
            scale=scale,
        ).transpose(1, 2)
        return zero_dead_rows(out, cmask)


@ATTENTION_BACKENDS.register_module(name="xformers")
class XFormersAttention(_Backend):
    """``xformers.ops.memory_efficient_attention`` (CUDA only; an optional extra: ``pip install thkit[xformers]``).

    ``available()`` never trusts a successful import: xformers imports fine on machines where it cannot run
    (no CUDA, no kernels for this GPU, or a wheel built for another torch).  The first call makes a real
    tiny attention call on the GPU and compares it with the reference; the verdict is cached for the process
    (:meth:`reason` says why).  xformers itself is imported only then.
    """

    name = "xformers"
    _status: tuple[bool, str] | None = None  # class-level cache: one probe per process

    def available(self) -> bool:
        return self._probe()[0]

    def reason(self) -> str:
        return self._probe()[1]

    def supports(self, q: Tensor) -> bool:
        return q.is_cuda and self.available()

    @classmethod
    def _probe(cls) -> tuple[bool, str]:
        if cls._status is None:
            cls._status = cls._run_probe()
        return cls._status

    @classmethod
    def reset_probe(cls) -> None:
        """Forget the cached verdict (tests; after installing xformers in a running process)."""
        cls._status = None

    @staticmethod
    def _run_probe() -> tuple[bool, str]:
        if not torch.cuda.is_available():
            return False, "CUDA is not available (xformers has no CPU kernels)"
        try:
            import xformers
            import xformers.ops as xops
        except Exception as e:  # noqa: BLE001 - any import failure means unavailable
            return False, f"xformers cannot be imported: {type(e).__name__}: {e}"
        try:
            g = torch.Generator(device="cpu").manual_seed(0)
            q, k, v = (torch.randn(1, 8, 2, 16, generator=g).cuda() for _ in range(3))
            out = xops.memory_efficient_attention(q, k, v)
            ref = MathAttention()(q, k, v)
            torch.cuda.synchronize()
            if not torch.allclose(out, ref, atol=1e-3, rtol=1e-3):
                return False, "xformers test call returned wrong values (a wheel built for another torch/GPU?)"
        except Exception as e:  # noqa: BLE001 - the probe must never crash the caller
            return False, f"xformers test call failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return True, f"xformers {getattr(xformers, '__version__', '?')} on {torch.cuda.get_device_name()}"

    @staticmethod
    def _bias(mask: Tensor, q: Tensor, k: Tensor) -> Tensor:
        """An additive bias in q's dtype, last dimension memory-aligned to 8 and broadcast with ``expand``
        (xformers' requirements for tensor biases), without materialising broadcast dimensions."""
        add = to_additive(mask, q.dtype)
        n = add.shape[-1]
        buf = torch.empty(*add.shape[:-1], n + (-n) % 8, dtype=q.dtype, device=q.device)[..., :n]
        buf.copy_(add)
        B, M, H, _ = q.shape
        return buf.expand(B, H, M, k.shape[1])

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, scale: float | None = None,
                 dropout_p: float = 0.0) -> Tensor:
        check_qkv(q, k, v)
        if not q.is_cuda:
            raise RuntimeError(
                f"the 'xformers' attention backend needs CUDA tensors, got {q.device.type}; "
                "use backend 'sdpa' or 'auto'"
            )
        ok, why = self._probe()
        if not ok:
            raise BackendUnavailableError(f"attention backend 'xformers' is unavailable: {why}")
        import xformers.ops as xops

        cmask = canonical_mask(mask, q, k)
        bias = None if cmask is None else self._bias(cmask, q, k)
        # broadcast (stride-0) memories, e.g. codes shared by the batch: give the kernel real strides
        k, v = (t.contiguous() if 0 in t.stride()[:3] else t for t in (k, v))
        out = xops.memory_efficient_attention(q, k, v, attn_bias=bias, p=dropout_p, scale=scale)
        return zero_dead_rows(out, cmask)


@ATTENTION_BACKENDS.register_module(name="auto")
class AutoAttention(_Backend):
    """The best backend that can run the call: xformers (CUDA tensors, working install) > sdpa > math.

    :meth:`choose` says which one a call (or, without ``q``, this machine) gets.
    """

    name = "auto"
    _announced: set[str] = set()

    def available(self) -> bool:
        return True

    def choose(self, q: Tensor | None = None) -> str:
        for name in AUTO_ORDER:
            b = get_backend(name)
            if b.available() and (q is None or b.supports(q)):
                self._announce(name, q)
                return name
        return "math"

    def _announce(self, name: str, q: Tensor | None) -> None:
        where = "this machine" if q is None else f"{q.device.type} tensors"
        if where not in self._announced:
            self._announced.add(where)
            logging.getLogger("thkit.attention").info("attention backend 'auto' uses %r for %s", name, where)

    def reason(self) -> str:
        return f"picks {self.choose()!r} here (order: {' > '.join(AUTO_ORDER)})"

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, scale: float | None = None,
                 dropout_p: float = 0.0) -> Tensor:
        return get_backend(self.choose(q))(q, k, v, mask=mask, scale=scale, dropout_p=dropout_p)

"""Attention masks: one canonical form for every backend.

Conventions (the same as :func:`torch.nn.functional.scaled_dot_product_attention`):

* a **boolean** ``mask`` is a *keep* mask: ``True`` = this query may attend to this key, ``False`` = it
  may not;
* a **floating** ``mask`` is *additive*: it is added to the scaled logits (``-inf`` removes a key);
* shapes broadcast against the logits ``(B, H, M, N)``; a 2-D mask is ``(M, N)``, a 3-D mask is
  ``(B, M, N)`` (one per batch element, shared by the heads), a 4-D mask is ``(B|1, H|1, M|1, N)``.

A **key-padding mask** ``(B, N)`` follows :class:`torch.nn.MultiheadAttention` instead: ``True`` = this key
is padding and is *ignored* (SMAC passes exactly this from its flow, quirk 11).  Turn it into a keep mask
with :func:`key_padding_to_mask` (shape ``(B, 1, 1, N)``) before handing it to a backend.

A query row whose keys are all removed has no defined softmax.  ``nn.MultiheadAttention`` returns NaN
there; every thkit backend returns **zeros** for such rows (as torch's SDPA does on CPU), so one fully
padded sample cannot poison a batch.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def key_padding_to_mask(key_padding_mask: Tensor, num_keys: int | None = None) -> Tensor:
    """``(B, N)`` padding mask (True = ignore the key) -> ``(B, 1, 1, N)`` keep mask (True = attend).

    A floating padding mask is taken as additive and only reshaped.
    """
    if key_padding_mask.dim() != 2:
        raise ValueError(
            f"key_padding_mask must be (B, N) with True = ignore that key; got shape {tuple(key_padding_mask.shape)}"
        )
    if num_keys is not None and key_padding_mask.shape[1] != num_keys:
        raise ValueError(
            f"key_padding_mask covers {key_padding_mask.shape[1]} keys but there are {num_keys} keys"
        )
    m = key_padding_mask[:, None, None, :]
    return ~m if m.dtype == torch.bool else m


def merge_masks(a: Tensor | None, b: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Combine two canonical masks (keep-bool or additive float) into one (bool if both are bool)."""
    if a is None:
        return b
    if b is None:
        return a
    if a.dtype == torch.bool and b.dtype == torch.bool:
        return a & b
    return to_additive(a, dtype) + to_additive(b, dtype)


def to_additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A keep-bool mask as an additive one (0 keep, -inf drop); a float mask cast to ``dtype``."""
    if mask.dtype == torch.bool:
        out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return out.masked_fill_(~mask, float("-inf"))
    return mask.to(dtype)


def canonical_mask(mask: Tensor | None, q: Tensor, k: Tensor) -> Tensor | None:
    """Validate ``mask`` for ``q`` (B, M, H, D) / ``k`` (B, N, H, D) and return it 4-D, broadcastable to
    the logits ``(B, H, M, N)`` (bool stays bool, floats are cast to ``q.dtype``)."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a tensor (bool keep mask or additive float), got {type(mask).__name__}")
    B, M, H, _ = q.shape
    N = k.shape[1]
    if mask.dim() == 2:
        m = mask[None, None]
    elif mask.dim() == 3:
        m = mask[:, None]
    elif mask.dim() == 4:
        m = mask
    else:
        raise ValueError(
            f"mask must be 2-D (M, N), 3-D (B, M, N) or 4-D (B, H, M, N); got shape {tuple(mask.shape)}"
        )
    want = (B, H, M, N)
    for got, full, name in zip(m.shape, want, "BHMN"):
        if got != full and not (got == 1 and name != "N"):
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the attention logits "
                f"(B, H, M, N) = {want} (dimension {name}: {got} vs {full})"
            )
    if m.dtype != torch.bool:
        if not m.is_floating_point():
            raise TypeError(f"mask must be bool (True = keep) or floating (additive); got {m.dtype}")
        m = m.to(q.dtype)
    return m


def dead_rows(mask: Tensor) -> Tensor:
    """``(B|1, H|1, M|1)`` bool: query rows that can see no key under the canonical ``mask``."""
    if mask.dtype == torch.bool:
        return ~mask.any(dim=-1)
    return torch.isneginf(mask).all(dim=-1)


def zero_dead_rows(out: Tensor, mask: Tensor | None) -> Tensor:
    """Zero the rows of ``out`` (B, M, H, D) whose query sees no key (see the module docstring)."""
    if mask is None:
        return out
    dead = dead_rows(mask)  # (B|1, H|1, M|1)
    # no data-dependent branch (``if dead.any()``): the graph stays whole under torch.compile / export, and a
    # fill where nothing is dead leaves ``out``'s values as they are
    return out.masked_fill(dead.transpose(1, 2).unsqueeze(-1), 0.0)

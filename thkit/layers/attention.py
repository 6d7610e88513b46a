"""Multi-head attention with ``nn.MultiheadAttention``'s parameters, computed through a thkit backend.

:class:`BackendMultiheadAttention` is a drop-in for :class:`torch.nn.MultiheadAttention` (packed
``in_proj_weight`` / ``in_proj_bias``, ``out_proj.weight`` / ``out_proj.bias``, the same initialisation,
the same ``(L, B, E)`` default layout and mask conventions), so official state dicts load 1:1, but the
attention itself runs in :func:`thkit.attention.attention` (xformers / SDPA / math, see
:mod:`thkit.attention.dispatch`).  Vaswani et al. 2017, eq. (1) and §3.2.2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thkit.attention import attention, check_backend_name, get_backend

Tensor = torch.Tensor


class BackendMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (no ``kdim``/``vdim``, ``bias_k``, ``add_zero_attn``) over a thkit backend.

    Args:
        embed_dim: model width E (split into ``num_heads`` heads of ``E // num_heads``).
        num_heads: number of heads.
        dropout: dropout on the attention weights (training only).
        bias: learn ``in_proj_bias`` and ``out_proj.bias``.
        batch_first: inputs are ``(B, L, E)`` instead of ``(L, B, E)``.
        backend: attention backend name; ``None`` = the current default at call time.

    ``forward(query, key, value, key_padding_mask=None, need_weights=False, attn_mask=None)`` returns
    ``(output, weights)`` like the torch module (``weights`` is ``None`` unless ``need_weights``; then it is
    computed by the ``math`` backend).  Mask conventions are torch's: ``key_padding_mask`` ``(B, S)`` and a
    boolean ``attn_mask`` ``(L, S)`` / ``(B*H, L, S)`` use **True = ignore**; float masks are additive.
    ``key``/``value`` may have batch size 1 while ``query`` has B (a memory shared by the batch, e.g. a
    codebook): they are projected once and broadcast.  Note ``need_weights`` defaults to ``False`` here.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False, backend: str | None = None):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.backend = None if backend is None else check_backend_name(backend)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        else:
            self.register_parameter("in_proj_bias", None)
        # created before the in-projection is initialised, as torch does: the same seed gives the same weights
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.constant_(self.in_proj_bias, 0.0)
            nn.init.constant_(self.out_proj.bias, 0.0)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention, backend: str | None = None) -> BackendMultiheadAttention:
        """A copy of ``mha``'s weights (which must use packed, same-size projections)."""
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("only nn.MultiheadAttention with kdim = vdim = embed_dim, no bias_k/v and no "
                             "add_zero_attn can be converted")
        new = cls(mha.embed_dim, mha.num_heads, dropout=mha.dropout, bias=mha.in_proj_bias is not None,
                  batch_first=mha.batch_first, backend=backend)
        new.load_state_dict(mha.state_dict())
        return new.to(mha.in_proj_weight.device)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}, backend={self.backend!r}")

    # -- projections ----------------------------------------------------------------------------------
    def _w(self, i: int, n: int = 1) -> tuple[Tensor, Tensor | None]:
        E = self.embed_dim
        w = self.in_proj_weight[i * E:(i + n) * E]
        b = None if self.in_proj_bias is None else self.in_proj_bias[i * E:(i + n) * E]
        return w, b

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """In-projection, sharing matmuls where inputs are the same object (as torch's packed path)."""
        if key is value:
            if query is key:
                return F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
            q = F.linear(query, *self._w(0))
            k, v = F.linear(key, *self._w(1, 2)).chunk(2, dim=-1)
            return q, k, v
        if query is key:
            q, k = F.linear(query, *self._w(0, 2)).chunk(2, dim=-1)
            return q, k, F.linear(value, *self._w(2))
        return F.linear(query, *self._w(0)), F.linear(key, *self._w(1)), F.linear(value, *self._w(2))

    # -- masks (torch conventions -> thkit keep/additive masks) ------------------------------------------
    def _attn_mask(self, attn_mask: Tensor | None, B: int, L: int, S: int, dtype: torch.dtype) -> Tensor | None:
        if attn_mask is None:
            return None
        m = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask.to(dtype)
        if m.dim() == 2:
            if tuple(m.shape) != (L, S):
                raise ValueError(f"attn_mask of shape {tuple(m.shape)} should be (L, S) = {(L, S)}")
            return m
        if m.dim() == 3:
            if tuple(m.shape) != (B * self.num_heads, L, S):
                raise ValueError(
                    f"attn_mask of shape {tuple(m.shape)} should be (B*num_heads, L, S) = {(B * self.num_heads, L, S)}"
                )
            return m.view(B, self.num_heads, L, S)
        raise ValueError(f"attn_mask must be 2-D or 3-D; got shape {tuple(m.shape)}")

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = False, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                backend: str | None = None) -> tuple[Tensor, Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.dim() != 3 or t.shape[-1] != self.embed_dim:
                lay = "(B, L, E)" if self.batch_first else "(L, B, E)"
                raise ValueError(f"{name} must be {lay} with E={self.embed_dim}; got shape {tuple(t.shape)}")
        same_kv, same_qk = key is value, query is key
        if not self.batch_first:  # -> (B, L, E) views; identities kept so projections can be shared
            tq = query.transpose(0, 1)
            tk = tq if same_qk else key.transpose(0, 1)
            tv = tk if same_kv else value.transpose(0, 1)
            query, key, value = tq, tk, tv
        B, L, _ = query.shape
        if key.shape[0] not in (1, B) or value.shape[0] != key.shape[0] or key.shape[1] != value.shape[1]:
            raise ValueError(f"key {tuple(key.shape)} / value {tuple(value.shape)} (batch-first) do not match "
                             f"the query's batch {B}")
        S = key.shape[1]
        q, k, v = self._project(query, key, value)
        H, D = self.num_heads, self.head_dim
        q = q.view(B, L, H, D)
        k = k.view(k.shape[0], S, H, D).expand(B, S, H, D)
        v = v.view(v.shape[0], S, H, D).expand(B, S, H, D)

        mask = self._attn_mask(attn_mask, B, L, S, q.dtype)
        if key_padding_mask is not None and tuple(key_padding_mask.shape) != (B, S):
            raise ValueError(f"key_padding_mask of shape {tuple(key_padding_mask.shape)} should be (B, S) = {(B, S)}")
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            from thkit.attention._masks import key_padding_to_mask, merge_masks

            full = mask if mask is None or mask.dim() == 4 else mask[None, None]
            if key_padding_mask is not None:
                full = merge_masks(full, key_padding_to_mask(key_padding_mask), q.dtype)
            probs = get_backend("math").probabilities(q, k, full)
            weights = probs.mean(dim=1) if average_attn_weights else probs
            if dropout_p > 0.0:
                probs = F.dropout(probs, p=dropout_p)
            out = torch.matmul(probs, v.transpose(1, 2)).transpose(1, 2)
        else:
            out = attention(q, k, v, mask, key_padding_mask=key_padding_mask, dropout_p=dropout_p,
                            backend=backend if backend is not None else self.backend)
        if self.batch_first:
            out = self.out_proj(out.reshape(B, L, self.embed_dim))
        else:
            out = self.out_proj(out.transpose(0, 1).reshape(L, B, self.embed_dim))
        if unbatched:
            out = out.squeeze(1)
            weights = None if weights is None else weights.squeeze(0)
        return out, weights

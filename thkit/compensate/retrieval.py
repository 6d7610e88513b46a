"""Codebook retrieval transformer: the token mixer of SMAC's motion and appearance compensation (MCC / ACC).

SMAC §3.2-3.3 (Fig. 3): the queries (1024 tokens of a 32×32 grid) first attend to each other, then
*retrieve* from the codebook by cross-attention with the codes as keys and values, then pass a
convolutional feed-forward.  One layer, as the official ``TransformerLayer``:

    h = LN1(x);  x = x + SelfAttn(q = h + pos, k = h + pos, v = h, key_padding_mask)
    h = LN2(x);  x = x + CrossAttn(q = h + pos, k = v = codes)
    h = LN3(x);  x = x + Conv3x3(GELU(Conv3x3(h as a (B, E, h, w) map)))

Pre-LayerNorm (eps 1e-5), GELU (exact erf), the FFN as two 3×3 convolutions over the token grid
(E -> 2E -> E in SMAC), no projection of the codes beyond the attention's own in-projection, the position
embedding added to queries and keys but never to the codes.  The attention modules are
:class:`~thkit.layers.attention.BackendMultiheadAttention` (``nn.MultiheadAttention``'s parameters, any
backend), so the parameter names are the official ones (``self_attn.in_proj_weight``, ``conv1.weight``,
``norm3.bias``, ...) and a converter only renames the prefix (``motion_block.i.`` -> ``layers.i.``,
``position_emb_motion`` -> ``position_emb``).

Layout: tokens are batch-first ``(B, L, E)`` (the official code uses ``(L, B, E)``; only the view differs),
or a feature map ``(B, E, h, w)``.  Codes are ``(K, E)``, shared by the batch and projected once (the
official code repeats them per sample), or ``(B, K, E)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from thkit.attention import attention, check_backend_name
from thkit.layers.attention import BackendMultiheadAttention
from thkit.layers.blocks import shortcut

Tensor = torch.Tensor

_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


def token_count(image_size: int, token_stride: int = 8) -> int:
    """Tokens of the square grid ``image_size / token_stride`` a side; a ``ValueError`` names the image sizes
    that give a whole grid when this one does not."""
    if isinstance(token_stride, bool) or not isinstance(token_stride, int) or token_stride < 1:
        raise ValueError(f"token_stride must be a positive number of pixels per token, got {token_stride!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size!r}")
    if image_size % token_stride:
        below = image_size - image_size % token_stride
        near = f"{below} or {below + token_stride}" if below else f"{token_stride}"
        raise ValueError(f"image_size={image_size} px gives no whole token grid at token_stride={token_stride} px "
                         f"per token: use a multiple of {token_stride} px (e.g. {near})")
    return (image_size // token_stride) ** 2


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class RetrievalTransformerLayer(nn.Module):
    """One SMAC retrieval layer: self-attention, cross-attention to the codes, conv feed-forward.

    Args:
        dim: token width E (SMAC: 32 for motion, 256 for appearance).
        num_heads: attention heads (SMAC: 8).
        ffn_dim: hidden channels of the conv FFN (default ``2 * dim``, as SMAC).
        kernel_size: FFN convolution size (SMAC: 3).
        dropout: dropout after each sub-block and inside the FFN / attention (SMAC: 0).
        activation: ``'gelu'`` (SMAC) or ``'relu'``.
        norm_eps: LayerNorm epsilon (torch default 1e-5, as SMAC).
        backend: attention backend name (``None`` = the default at call time).
    """

    def __init__(self, dim: int, num_heads: int = 8, ffn_dim: int | None = None, kernel_size: int = 3,
                 dropout: float = 0.0, activation: str = "gelu", norm_eps: float = 1e-5, backend: str | None = None):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same-size convolution), got {kernel_size}")
        ffn_dim = 2 * dim if ffn_dim is None else ffn_dim
        self.dim = dim
        self.activation = activation
        self.self_attn = BackendMultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True, backend=backend)
        self.cross_attn = BackendMultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True, backend=backend)
        self.conv1 = nn.Conv2d(dim, ffn_dim, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(ffn_dim, dim, kernel_size, padding=kernel_size // 2)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        #: reuse the codes' key/value projections while neither the codes nor the weights change (inference)
        self.cache_codes = True
        self._code_kv: dict[tuple, tuple] = {}

    def _retrieve(self, q: Tensor, codes: Tensor) -> Tensor:
        """``cross_attn(q, codes, codes)``.  The codes' key/value projection depends on weights only, so without
        autograd it is computed once per code selection and reused (:meth:`_code_projection`); the rest is
        ``BackendMultiheadAttention.forward``'s own sequence of operations, so the result is bit-identical."""
        attn = self.cross_attn
        if not (self.cache_codes and shortcut("code_cache")) or (attn.training and attn.dropout > 0.0) \
                or attn.in_proj_bias is None or torch.compiler.is_compiling():
            return attn(q, codes, codes)[0]
        B, L, E = q.shape
        H, D = attn.num_heads, attn.head_dim
        k, v = self._code_projection(codes).chunk(2, dim=-1)
        S = k.shape[1]
        qh = F.linear(q, *attn._w(0)).view(B, L, H, D)
        k = k.view(k.shape[0], S, H, D).expand(B, S, H, D)
        v = v.view(v.shape[0], S, H, D).expand(B, S, H, D)
        return attn.out_proj(attention(qh, k, v, backend=attn.backend).reshape(B, L, E))

    def _code_projection(self, codes: Tensor) -> Tensor:
        """``codes (1|B, K, E) -> (1|B, K, 2E)``: the in-projection to keys and values, cached.  The entry holds
        the codes and the weights it was made from (so their memory cannot be reused by other tensors) and their
        version counters (an in-place update, e.g. an optimiser step or ``load_state_dict``, invalidates it)."""
        w, b = self.cross_attn._w(1, 2)
        weight, bias = self.cross_attn.in_proj_weight, self.cross_attn.in_proj_bias
        key = (codes.data_ptr(), tuple(codes.shape), codes.stride(), codes.dtype, codes.device)
        versions = (codes._version, weight._version, bias._version)
        hit = self._code_kv.get(key)
        if hit is not None and hit[0] is weight and hit[1] is bias and hit[3] == versions:
            return hit[4]
        kv = F.linear(codes, w, b)
        if len(self._code_kv) >= 16:  # one entry per code selection (scale) in use; never grows without bound
            self._code_kv.clear()
        self._code_kv[key] = (weight, bias, codes, versions, kv)
        return kv

    def _apply(self, fn, *args, **kwargs):
        self._code_kv = {}  # new parameter tensors (.to(), .half(), ...): the cached projections are stale
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x: Tensor, codes: Tensor, size: int | Sequence[int], pos: Tensor | None = None,
                key_padding_mask: Tensor | None = None) -> Tensor:
        """``x`` (B, L, E) tokens of an ``size = (h, w)`` grid (row-major), ``codes`` (K, E) or (B, K, E),
        ``pos`` (L, E) or (B, L, E), ``key_padding_mask`` (B, L) bool, True = ignore that token as a key in
        the self-attention.  Returns (B, L, E)."""
        B, L, E = x.shape
        h, w = _pair(size)
        if h * w != L:
            raise ValueError(f"size {(h, w)} has {h * w} positions but there are {L} tokens")
        if codes.dim() == 2:
            codes = codes.unsqueeze(0)
        if codes.dim() != 3 or codes.shape[-1] != E or codes.shape[0] not in (1, B):
            raise ValueError(f"codes must be (K, {E}) or ({B}, K, {E}); got shape {tuple(codes.shape)}")

        t = self.norm1(x)
        qk = t if pos is None else t + pos
        x = x + self.dropout1(self.self_attn(qk, qk, t, key_padding_mask=key_padding_mask)[0])

        t = self.norm2(x)
        q = t if pos is None else t + pos
        x = x + self.dropout2(self._retrieve(q, codes))

        t = self.norm3(x).transpose(1, 2).reshape(B, E, h, w)
        t = self.conv2(self.dropout(_ACTIVATIONS[self.activation](self.conv1(t))))
        return x + self.dropout3(t.reshape(B, E, L).transpose(1, 2))


class RetrievalTransformer(nn.Module):
    """A stack of :class:`RetrievalTransformerLayer` sharing one position embedding (SMAC: 2 layers).

    Args:
        dim, num_heads, ffn_dim, kernel_size, dropout, activation, norm_eps, backend: per layer (see there).
        num_layers: depth (SMAC: 2).
        position_embedding: learn a position embedding ``position_emb`` ``(num_tokens, dim)``, zero-initialised
            as SMAC's ``position_emb_motion`` / ``position_emb_app``.
        image_size: side of the images the model runs on (px).  The token grid follows it: ``image_size /
            token_stride`` tokens a side (SMAC: 32 × 32 = 1024 at 256 px, 16 × 16 at 128 px).  A part built
            from a recipe gets the recipe's ``image_size`` (:func:`thkit.builder.build`).
        token_stride: image pixels per token (SMAC: 8, the stride of the VQGAN latent and of the flow tokens).
        num_tokens: tokens the position embedding covers; ``None`` (the default): ``(image_size //
            token_stride) ** 2``.  An explicit value wins over the image size.
        masked_layers: layers whose self-attention applies the key-padding mask: a tuple of layer indices or
            ``'all'``.  SMAC applies it in the **first** layer only (fixture quirk 11), the default.

    ``forward(x, codes, size=None, key_padding_mask=None, pos=None)``: ``x`` is a map ``(B, E, h, w)`` (the
    output is a map too) or tokens ``(B, L, E)`` with ``size = (h, w)``; ``codes`` ``(K, E)`` / ``(B, K, E)``
    (e.g. ``codebook.codes(allocation.codes(scale, S, N))``); ``pos`` overrides the own embedding.
    """

    def __init__(self, dim: int, num_layers: int = 2, num_heads: int = 8, ffn_dim: int | None = None,
                 kernel_size: int = 3, dropout: float = 0.0, activation: str = "gelu", norm_eps: float = 1e-5,
                 position_embedding: bool = True, image_size: int = 256, token_stride: int = 8,
                 num_tokens: int | None = None, masked_layers: Sequence[int] | str = (0,), backend: str | None = None):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if backend is not None:
            check_backend_name(backend)
        self.dim = dim
        self.num_tokens = token_count(image_size, token_stride) if num_tokens is None else int(num_tokens)
        if self.num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        if masked_layers == "all":
            masked = tuple(range(num_layers))
        elif isinstance(masked_layers, str):
            raise ValueError(f"masked_layers must be a tuple of layer indices or 'all', got {masked_layers!r}")
        else:
            masked = tuple(int(i) for i in masked_layers)
            bad = [i for i in masked if not 0 <= i < num_layers]
            if bad:
                raise ValueError(f"masked_layers {bad} out of range for num_layers={num_layers}")
        self.masked_layers = masked
        self.layers = nn.ModuleList(
            RetrievalTransformerLayer(dim, num_heads, ffn_dim, kernel_size, dropout, activation, norm_eps, backend)
            for _ in range(num_layers)
        )
        if position_embedding:
            self.position_emb = nn.Parameter(torch.zeros(self.num_tokens, dim))
        else:
            self.register_parameter("position_emb", None)

    def set_backend(self, backend: str | None) -> None:
        """Switch every attention of the stack to ``backend`` (``None`` = the default at call time)."""
        if backend is not None:
            check_backend_name(backend)
        for m in self.modules():
            if isinstance(m, BackendMultiheadAttention):
                m.backend = backend

    def forward(self, x: Tensor, codes: Tensor, size: int | Sequence[int] | None = None,
                key_padding_mask: Tensor | None = None, pos: Tensor | None = None) -> Tensor:
        is_map = x.dim() == 4
        if is_map:
            B, E, h, w = x.shape
            tokens = x.flatten(2).transpose(1, 2)
        elif x.dim() == 3:
            if size is None:
                raise ValueError("tokens (B, L, E) need size=(h, w) of their grid")
            (h, w), tokens, (B, _, E) = _pair(size), x, x.shape
        else:
            raise ValueError(f"x must be a map (B, E, h, w) or tokens (B, L, E); got shape {tuple(x.shape)}")
        if E != self.dim:
            raise ValueError(f"x has width {E} but the transformer has dim={self.dim}")
        L = tokens.shape[1]
        if pos is None and self.position_emb is not None:
            if L != self.num_tokens:
                raise ValueError(f"the learned position embedding covers num_tokens={self.num_tokens} tokens but "
                                 f"the input has {L} ({h}x{w})")
            pos = self.position_emb
        if key_padding_mask is not None and tuple(key_padding_mask.shape) != (B, L):
            raise ValueError(f"key_padding_mask must be (B, L) = {(B, L)}, got {tuple(key_padding_mask.shape)}")
        for i, layer in enumerate(self.layers):
            tokens = layer(tokens, codes, (h, w), pos=pos,
                           key_padding_mask=key_padding_mask if i in self.masked_layers else None)
        if is_map:
            return tokens.transpose(1, 2).reshape(B, E, h, w)
        return tokens

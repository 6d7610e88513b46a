"""Nearest-neighbour vector quantisation with a searchable code subset (VQ-VAE; SMAC eq. 3 and 5).

For a feature ``z`` (channels at dim 1) and the allowed codes ``E' ⊂ E`` (a prefix, a range or any index
set, e.g. from a :mod:`~thkit.codebook.allocation`), each position takes its nearest allowed code
``e = argmin_j ||z - e_j||²`` and the loss is

    L = codebook_weight · ||sg[z] - e||²  +  beta · ||z - sg[e]||²      (means over all elements)

with a straight-through estimator ``z + sg[e - z]`` as the output.  SMAC uses ``beta = 0.25`` and codebook
weight 1, exactly what the official ``VectorQuantizer`` computes.

Numerics follow the official code so results can be compared with its fixture bit for bit where the math
allows: distances ``(z²).sum + (e²).sum - 2 z·eᵀ`` in that order, ``argmin`` (first minimum wins),
``loss = beta·commitment + codebook``, ``quantized = z + (e - z).detach()``, perplexity
``exp(-Σ p log(p + 1e-10))`` over the searched codes, ``mean_distance = mean(d)``.  One deliberate
difference: ``indices`` always index the **full** codebook (the official code returns indices relative to
the start of a range, which only agrees for prefixes); ``local_indices`` are relative to the searched codes.

Code-usage statistics (per process, not saved in checkpoints): an exponential moving average of how many
tokens each code receives per call (updated in training mode, only for the codes searched in that call),
and from it :meth:`usage_stats` (usage perplexity, dead-code count) for training logs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from thkit.interfaces import Codebook
from thkit.registry import CODEBOOKS

Tensor = torch.Tensor


@CODEBOOKS.register_module()
class VectorQuantizer(Codebook):
    """A learnable codebook ``embedding.weight`` ``(num_codes, dim)`` with nearest-code lookup.

    Args:
        num_codes: codebook size N (SMAC: 1024 motion codes, 1024 appearance codes).
        dim: code width (SMAC: 32 motion, 256 appearance).
        beta: commitment weight, the β of ``β·||z - sg[e]||²`` (SMAC: 0.25).
        codebook_weight: weight of ``||sg[z] - e||²`` (SMAC: 1).
        usage_decay: EMA decay of the per-code usage counts.
        dead_threshold: a code is *dead* when its EMA usage is below this many tokens per call.
        init: ``'uniform'`` = U(-1/N, 1/N) as the official code (CodeFormer / VQGAN lineage).

    ``forward(z, codes=None)``: ``z`` is ``(B, dim, *spatial)``; ``codes`` selects the searchable codes:
    ``None`` (all), an int ``n`` (the prefix ``[0, n)``), a ``slice`` / ``(lo, hi)`` range, or a 1-D
    LongTensor of indices.  Returns a dict with ``quantized`` (straight-through, shape of ``z``),
    ``indices`` ``(B, *spatial)`` into the full codebook, ``local_indices``, ``loss``, ``codebook_loss``,
    ``commitment_loss``, ``perplexity``, ``mean_distance`` and ``num_codes_searched``.
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, codebook_weight: float = 1.0,
                 usage_decay: float = 0.99, dead_threshold: float = 0.01, init: str = "uniform"):
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"num_codes and dim must be positive, got num_codes={num_codes}, dim={dim}")
        if not 0.0 <= usage_decay < 1.0:
            raise ValueError(f"usage_decay must be in [0, 1), got {usage_decay}")
        self.num_codes = num_codes
        self.dim = dim
        self.beta = float(beta)
        self.codebook_weight = float(codebook_weight)
        self.usage_decay = float(usage_decay)
        self.dead_threshold = float(dead_threshold)
        self.embedding = nn.Embedding(num_codes, dim)
        if init == "uniform":
            nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)
        elif init != "normal":
            raise ValueError(f"init must be 'uniform' (official) or 'normal' (torch's N(0, 1)), got {init!r}")
        self.register_buffer("usage_ema", torch.zeros(num_codes), persistent=False)
        self.register_buffer("usage_calls", torch.zeros((), dtype=torch.long), persistent=False)

    @property
    def weight(self) -> Tensor:
        return self.embedding.weight

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, dim={self.dim}, beta={self.beta}, codebook_weight={self.codebook_weight}"

    # -- code subsets -------------------------------------------------------------------------------------
    def resolve_codes(self, codes=None) -> slice | Tensor:
        """Normalise a code selection to a ``slice`` (contiguous; a view of the weight) or a LongTensor."""
        n = self.num_codes
        if codes is None:
            return slice(0, n)
        if isinstance(codes, bool):
            raise TypeError("codes must be None, an int prefix, a slice, a (lo, hi) pair or a LongTensor")
        if isinstance(codes, int):
            if not 1 <= codes <= n:
                raise ValueError(f"a code prefix must be in [1, {n}] for a codebook of {n} codes, got {codes}")
            return slice(0, codes)
        if isinstance(codes, tuple) and len(codes) == 2:
            codes = slice(*codes)
        if isinstance(codes, slice):
            lo, hi, step = codes.indices(n)
            if step != 1 or hi <= lo:
                raise ValueError(f"code range {codes} is empty or strided for a codebook of {n} codes")
            if codes.stop is not None and codes.stop > n:
                raise ValueError(f"code range {codes} goes past the codebook size {n}")
            return slice(lo, hi)
        if isinstance(codes, Tensor):
            if codes.dim() != 1 or codes.numel() == 0 or codes.dtype not in (torch.long, torch.int32, torch.int64):
                raise ValueError(f"a code index set must be a non-empty 1-D integer tensor, got {codes.dtype} "
                                 f"of shape {tuple(codes.shape)}")
            lo, hi = int(codes.min()), int(codes.max())
            if lo < 0 or hi >= n:
                raise ValueError(f"code indices must be in [0, {n - 1}], got range [{lo}, {hi}]")
            return codes.to(device=self.weight.device, dtype=torch.long)
        raise TypeError(f"codes must be None, an int prefix, a slice, a (lo, hi) pair or a LongTensor; got "
                        f"{type(codes).__name__}")

    def codes(self, codes=None) -> Tensor:
        """The selected code vectors ``(K, dim)`` (a view for ranges; gradients reach the codebook)."""
        sel = self.resolve_codes(codes)
        return self.weight[sel] if isinstance(sel, slice) else self.weight.index_select(0, sel)

    def lookup(self, indices: Tensor, channels_first: bool = True) -> Tensor:
        """Code vectors for full-codebook ``indices`` ``(B, *spatial)`` -> ``(B, dim, *spatial)``
        (or ``(B, *spatial, dim)`` with ``channels_first=False``)."""
        out = F.embedding(indices, self.weight)
        return out.movedim(-1, 1).contiguous() if channels_first else out

    # -- quantisation ---------------------------------------------------------------------------------------
    def forward(self, z: Tensor, codes=None) -> dict[str, Tensor]:
        if z.dim() < 2 or z.shape[1] != self.dim:
            raise ValueError(f"VectorQuantizer expects z as (B, {self.dim}, *spatial) (channels at dim 1), got "
                             f"shape {tuple(z.shape)}")
        sel = self.resolve_codes(codes)
        emb = self.codes(sel)  # (K, dim)
        zl = z.movedim(1, -1).contiguous()  # (B, *spatial, dim), rows ordered (b, y, x)
        flat = zl.view(-1, self.dim)

        dist = (flat ** 2).sum(dim=1, keepdim=True) + (emb ** 2).sum(1) - 2 * torch.matmul(flat, emb.t())
        mean_distance = torch.mean(dist)
        local = torch.argmin(dist, dim=1)
        full = local + sel.start if isinstance(sel, slice) else sel[local]

        zq = F.embedding(local, emb).view(zl.shape)
        commitment = torch.mean((zq.detach() - zl) ** 2)
        codebook = torch.mean((zq - zl.detach()) ** 2)
        loss = self.beta * commitment + self.codebook_weight * codebook
        zq = zl + (zq - zl).detach()  # straight-through

        counts = torch.bincount(local, minlength=emb.shape[0])
        p = counts.to(flat.dtype) / flat.shape[0]
        perplexity = torch.exp(-torch.sum(p * torch.log(p + 1e-10)))
        if self.training:
            self._update_usage(sel, counts)

        spatial = z.shape[2:]
        return {
            "quantized": zq.movedim(-1, 1).contiguous(),
            "indices": full.view(z.shape[0], *spatial),
            "local_indices": local.view(z.shape[0], *spatial),
            "loss": loss,
            "codebook_loss": codebook,
            "commitment_loss": commitment,
            "perplexity": perplexity,
            "mean_distance": mean_distance,
            "num_codes_searched": emb.shape[0],
        }

    # -- usage statistics -----------------------------------------------------------------------------------
    @torch.no_grad()
    def _update_usage(self, sel: slice | Tensor, counts: Tensor) -> None:
        d = self.usage_decay
        ema = self.usage_ema
        ema[sel] = ema[sel] * d + counts.to(ema.dtype) * (1.0 - d)
        self.usage_calls += 1

    @torch.no_grad()
    def reset_usage(self) -> None:
        self.usage_ema.zero_()
        self.usage_calls.zero_()

    @torch.no_grad()
    def dead_codes(self, codes=None, threshold: float | None = None) -> Tensor:
        """Full-codebook indices (among ``codes``) whose EMA usage is below ``threshold`` tokens per call."""
        sel = self.resolve_codes(codes)
        thr = self.dead_threshold if threshold is None else threshold
        idx = torch.arange(self.num_codes, device=self.usage_ema.device)[sel]
        return idx[self.usage_ema[sel] < thr]

    @torch.no_grad()
    def usage_stats(self, codes=None, threshold: float | None = None) -> dict[str, float]:
        """Scalars for a training log: ``usage_perplexity`` (of the EMA usage distribution), ``dead_codes``,
        ``dead_fraction``, ``active_codes`` and ``usage_calls``, over ``codes`` (default all)."""
        sel = self.resolve_codes(codes)
        ema = self.usage_ema[sel]
        total = float(ema.sum())
        if total > 0:
            p = ema / total
            ppl = math.exp(-float(torch.sum(p * torch.log(p + 1e-10))))
        else:
            ppl = 0.0
        dead = int(self.dead_codes(sel, threshold).numel())
        k = int(ema.numel())
        return {"usage_perplexity": ppl, "dead_codes": dead, "dead_fraction": dead / k, "active_codes": k - dead,
                "usage_calls": int(self.usage_calls)}

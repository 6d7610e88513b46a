"""Code allocations: which codes of one shared codebook each scale may use (SMAC §3.3, Tab. 4 ablation).

The N codes are cut into ``num_groups`` equal, consecutive groups (official SMAC: groups = number of
scales = 4, so 256 codes per group for N = 1024).  A scale then uses:

* ``shared``      every code, ``[0, N)`` (the paper's "sharing all codes"; official flag
  ``motion_codebook_split`` / ``app_codebook_split = False``);
* ``equal``       its own group only, ``[s·g, (s+1)·g)`` (the paper's "splitting equally"; official
  ``wo_motion_cdbk_share`` / ``wo_app_cdbk_share = True``);
* ``progressive`` the first ``s + 1`` groups, ``[0, (s+1)·g)`` (the official default: coarse scales see few
  codes, fine scales see more; capped at all groups).

**Scales are 0-based and ordered coarse to fine**: ``scale = 0`` is the coarsest scale (SMAC's 32×32
feature, the official ``k = 1``), ``scale = num_scales - 1`` the finest (256×256, official ``k = 4``).

Interface (:class:`thkit.interfaces.CodeAllocation`): ``indices(scale, num_scales, num_codes)`` returns
the code indices (into the full codebook) as a LongTensor.  The built-ins are contiguous ranges, so they
also give ``bounds(...) -> (lo, hi)`` and ``codes(...) -> slice``, which a codebook can use as a view.
"""
from __future__ import annotations

import torch

from thkit.interfaces import CodeAllocation
from thkit.registry import CODE_ALLOCATIONS


class GroupedAllocation(CodeAllocation):
    """Base of the built-in allocations: ``num_groups`` equal consecutive groups of codes.

    Args:
        num_groups: how many groups the codebook is cut into; ``None`` = one group per scale (official).
    """

    name = ""

    def __init__(self, num_groups: int | None = None):
        if num_groups is not None and (not isinstance(num_groups, int) or isinstance(num_groups, bool)
                                       or num_groups < 1):
            raise ValueError(f"num_groups must be a positive int or None (= one group per scale), got {num_groups!r}")
        self.num_groups = num_groups

    # -- helpers ----------------------------------------------------------------------------------------
    def groups(self, num_scales: int) -> int:
        """The number of groups used for ``num_scales`` scales."""
        return num_scales if self.num_groups is None else self.num_groups

    def group_size(self, num_scales: int, num_codes: int) -> int:
        """Codes per group; raises if ``num_codes`` does not split evenly."""
        g = self.groups(num_scales)
        if num_codes % g != 0:
            raise ValueError(
                f"{self.name} code allocation: num_codes={num_codes} cannot be split into num_groups={g} equal "
                f"groups ({num_codes} % {g} = {num_codes % g}); use a codebook size divisible by {g}"
            )
        return num_codes // g

    @staticmethod
    def _check(scale: int, num_scales: int, num_codes: int) -> None:
        if not isinstance(num_scales, int) or num_scales < 1:
            raise ValueError(f"num_scales must be a positive int, got {num_scales!r}")
        if not isinstance(scale, int) or not 0 <= scale < num_scales:
            raise ValueError(
                f"scale must be a 0-based index, coarse to fine, in [0, {num_scales - 1}] for "
                f"num_scales={num_scales}; got {scale!r}"
            )
        if not isinstance(num_codes, int) or num_codes < 1:
            raise ValueError(f"num_codes must be a positive int, got {num_codes!r}")

    # -- the interface ------------------------------------------------------------------------------------
    def bounds(self, scale: int, num_scales: int, num_codes: int) -> tuple[int, int]:
        """``(lo, hi)``: scale ``scale`` (0-based, coarse to fine) uses codes ``lo <= i < hi``."""
        raise NotImplementedError

    def indices(self, scale: int, num_scales: int, num_codes: int) -> torch.Tensor:
        """The code indices (into the full codebook) scale ``scale`` may use, as a LongTensor."""
        lo, hi = self.bounds(scale, num_scales, num_codes)
        return torch.arange(lo, hi, dtype=torch.long)

    def codes(self, scale: int, num_scales: int, num_codes: int) -> slice:
        """The same codes as a ``slice`` (what :class:`~thkit.codebook.vq.VectorQuantizer` takes as a view)."""
        return slice(*self.bounds(scale, num_scales, num_codes))

    def table(self, num_scales: int, num_codes: int) -> list[tuple[int, int]]:
        """``[(lo, hi), ...]`` for every scale, coarse to fine (for logs and ``thkit build``)."""
        return [self.bounds(s, num_scales, num_codes) for s in range(num_scales)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_groups={self.num_groups})"


@CODE_ALLOCATIONS.register_module(name="shared")
class SharedAllocation(GroupedAllocation):
    """Every scale sees all ``num_codes`` codes (groups play no role)."""

    name = "shared"

    def bounds(self, scale: int, num_scales: int, num_codes: int) -> tuple[int, int]:
        self._check(scale, num_scales, num_codes)
        return 0, num_codes


@CODE_ALLOCATIONS.register_module(name="equal")
class EqualAllocation(GroupedAllocation):
    """Disjoint equal groups, one per scale: scale ``s`` uses group ``s`` only."""

    name = "equal"

    def bounds(self, scale: int, num_scales: int, num_codes: int) -> tuple[int, int]:
        self._check(scale, num_scales, num_codes)
        g = self.groups(num_scales)
        if scale >= g:
            raise ValueError(
                f"equal code allocation: scale {scale} needs group {scale}, but there are only num_groups={g} "
                f"groups for num_scales={num_scales}; use num_groups >= {num_scales}"
            )
        size = self.group_size(num_scales, num_codes)
        return scale * size, (scale + 1) * size


@CODE_ALLOCATIONS.register_module(name="progressive")
class ProgressiveAllocation(GroupedAllocation):
    """Scale ``s`` (0-based) uses the first ``min(s + 1, num_groups)`` groups (official SMAC default)."""

    name = "progressive"

    def bounds(self, scale: int, num_scales: int, num_codes: int) -> tuple[int, int]:
        self._check(scale, num_scales, num_codes)
        size = self.group_size(num_scales, num_codes)
        return 0, min(scale + 1, self.groups(num_scales)) * size

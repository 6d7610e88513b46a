"""Data order and data randomness that resume exactly, on any number of processes and loader workers.

* :class:`ResumableInfiniteSampler`: an endless stream of shuffled indices (a fresh permutation per pass,
  seeded by ``(seed, pass)``), dealt round-robin to the ranks like mmengine's ``InfiniteSampler``.  It can
  start at any position without reading the data it skips (:meth:`~ResumableInfiniteSampler.set_start`),
  and it hands every sample its own random seed, a function of ``(seed, position in the global stream)``.
* :class:`SeededDataset`: wraps a dataset so that item ``(index, sample_seed)`` is produced with all global
  generators (python, numpy, torch) seeded from ``sample_seed`` and restored afterwards.  The random frame
  pair and the augmentation of a sample are thus fixed by its position in the stream, whatever the number
  of loader workers or processes, and loading data never shifts the training step's random stream.

Together they make ``--resume`` continue with exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from thkit.engine.rng import isolated_rng
from thkit.registry import DATA_SAMPLERS, DATASETS


def sample_seed(seed: int, position: int) -> int:
    """A 63-bit seed for the sample at ``position`` of the global stream (numpy ``SeedSequence`` of both)."""
    state = np.random.SeedSequence([int(seed) % (2**63), int(position)]).generate_state(1, np.uint64)
    return int(state[0] % (2**63))


@DATA_SAMPLERS.register_module()
class ResumableInfiniteSampler(Sampler):
    """Endless shuffled sampler that can resume at any sample and gives each sample a seed.

    Yields ``(index, sample_seed)`` pairs; wrap the dataset in :class:`SeededDataset` (``thkit train`` does
    this for you).  Rank ``r`` of ``W`` takes elements ``r, r + W, r + 2W, ...`` of the global stream.

    Args:
        dataset: the dataset (only its length is used).
        shuffle: a new random permutation per pass (else ``0..N-1`` repeated).
        seed: stream seed (the Runner passes the experiment seed); ``None`` draws one shared by all ranks.
    """

    def __init__(self, dataset: Any, shuffle: bool = True, seed: int | None = None):
        from mmengine.dist import get_dist_info, sync_random_seed

        self.rank, self.world_size = get_dist_info()
        self.size = len(dataset)
        if self.size < 1:
            raise ValueError("ResumableInfiniteSampler: the dataset is empty")
        self.shuffle = bool(shuffle)
        self.seed = int(sync_random_seed() if seed is None else seed)
        self.start = 0  # samples of this rank already consumed
        self._perm: tuple[int, torch.Tensor] | None = None

    def set_start(self, samples_per_rank: int) -> None:
        """Start the next iteration after ``samples_per_rank`` samples of this rank (e.g. ``iter * batch``)."""
        if samples_per_rank < 0:
            raise ValueError(f"set_start: expected a non-negative sample count, got {samples_per_rank}")
        self.start = int(samples_per_rank)

    def set_epoch(self, epoch: int) -> None:
        """Accepted for mmengine's ``DistSamplerSeedHook``; the stream is already endless."""

    def global_index(self, position: int) -> int:
        """The dataset index at ``position`` of the global stream."""
        epoch, k = divmod(int(position), self.size)
        if not self.shuffle:
            return k
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
            self._perm = (epoch, torch.randperm(self.size, generator=g))
        return int(self._perm[1][k])

    def position(self, local: int) -> int:
        """Global stream position of this rank's ``local``-th sample."""
        return int(local) * self.world_size + self.rank

    def __iter__(self) -> Iterator[tuple[int, int]]:
        local = self.start
        while True:
            pos = self.position(local)
            yield self.global_index(pos), sample_seed(self.seed, pos)
            local += 1

    def __len__(self) -> int:
        return self.size


@DATASETS.register_module()
class SeededDataset(Dataset):
    """A dataset whose item ``(index, seed)`` is computed under global generators seeded with ``seed``.

    Plain integer indices pass through unchanged (then the wrapped dataset draws from whatever state the
    generators are in, as usual).  Attributes of the wrapped dataset are reachable through this one.

    Args:
        dataset: the wrapped dataset, or its config (built from ``DATASETS``).
    """

    def __init__(self, dataset: Any):
        if isinstance(dataset, dict):
            dataset = DATASETS.build(dataset)
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if isinstance(key, (tuple, list)):
            index, seed = key
            with isolated_rng(int(seed)):
                return self.dataset[int(index)]
        return self.dataset[key]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"SeededDataset({self.dataset!r})"


__all__ = ["ResumableInfiniteSampler", "SeededDataset", "sample_seed"]

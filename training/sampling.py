"""Category-weighted sampling, deterministic per step, sharded across processes.

Every training step ``s`` draws its global batch from a generator seeded with
``(seed, s)``, with replacement, item ``i`` having probability proportional to its
weight. Process ``r`` of ``W`` takes slice ``r`` of that batch. So a run resumed at
step ``s`` sees exactly the samples it would have seen, and a 2-process run sees
the same global batches as a 1-process run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from recon_core.network.categories import CATEGORIES

__all__ = ["category_item_weights", "StepBatchSampler"]


def category_item_weights(
    item_categories: Sequence[int], balance: float = 1.0, proportions: dict[str, float] | None = None
) -> torch.Tensor:
    """Sampling weight of each item.

    Args:
        item_categories: category index of each item.
        balance: weight ``count(category) ** -balance`` (0: as in the data; 1: categories equally likely).
        proportions: explicit share per category name (normalised); overrides ``balance``.

    Returns:
        (N,) float64 weights summing to 1. Items of unknown category (index < 0) get 0.
    """
    counts = Counter(c for c in item_categories if c >= 0)
    if not counts:
        raise ValueError("No training items: render the data set first (training/render.py).")
    if proportions is not None:
        names = [c.name for c in CATEGORIES]
        unknown = sorted(set(proportions) - set(names))
        if unknown:
            raise ValueError(f"Unknown categories in category_weights: {', '.join(unknown)}.")
        share = {names.index(k): float(v) for k, v in proportions.items()}
        w = torch.tensor([share.get(c, 0.0) / counts[c] if c >= 0 else 0.0 for c in item_categories],
                         dtype=torch.float64)
    else:
        w = torch.tensor([counts[c] ** -balance if c >= 0 else 0.0 for c in item_categories], dtype=torch.float64)
    if w.sum() <= 0:
        raise ValueError("Sampling weights are all zero: give some category a positive share.")
    return w / w.sum()


class StepBatchSampler(Sampler[list[int]]):
    """Yields this process's share of the global batch for steps ``start .. steps - 1``.

    Args:
        weights: (N,) item sampling weights.
        global_batch: samples per step over all processes (divisible by ``world_size``).
        steps: last step (exclusive).
        seed: base seed.
        rank, world_size: this process and the number of processes.
        start: first step (for resuming).
    """

    def __init__(self, weights: torch.Tensor, global_batch: int, steps: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, start: int = 0):
        if global_batch % world_size:
            raise ValueError(f"batch_size {global_batch} must be divisible by the number of processes {world_size}.")
        self.weights, self.global_batch, self.steps = weights, global_batch, steps
        self.seed, self.rank, self.world_size, self.start = seed, rank, world_size, start
        self.local = global_batch // world_size

    def global_indices(self, step: int) -> torch.Tensor:
        """(global_batch,) item indices of step ``step``."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return torch.multinomial(self.weights, self.global_batch, replacement=True, generator=g)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            idx = self.global_indices(step)
            yield idx[self.rank * self.local:(self.rank + 1) * self.local].tolist()

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

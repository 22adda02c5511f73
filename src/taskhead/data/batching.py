"""Batches of text groups (pairs, triplets) for embedding models.

``TextGroupCollator`` pads each position of a group separately. ``NoDuplicatesSampler`` orders the rows so
that no training batch holds the same text twice: losses with in-batch negatives (MultipleNegativesRanking)
treat every other text of a batch as a negative, and a duplicate would be a false negative.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import torch

from taskhead.data.collate import PadCollator
from taskhead.errors import DataError

TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class TextGroupCollator(PadCollator):
    """Features ``{input_ids, attention_mask, ..., "more": [{input_ids, ...}, ...], "labels"?}`` (the first
    text at the top level, the others in ``more``) become ``{"texts": [padded batch per position],
    "labels": float tensor}``. Plain single-text features are padded as by ``PadCollator``."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if "more" not in features[0]:
            return super().__call__(features)
        width = len(features[0]["more"])
        if any(len(f["more"]) != width for f in features):
            raise ValueError("a batch mixes groups of different sizes (pairs with triplets)")
        pad = super().__call__
        texts = [pad([{k: f[k] for k in TEXT_KEYS if k in f} for f in features])]
        texts += [pad([f["more"][j] for f in features]) for j in range(width)]
        batch: dict[str, Any] = {"texts": texts}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([float(f["labels"]) for f in features], dtype=torch.float32)
        return batch


class NoDuplicatesSampler(torch.utils.data.Sampler[int]):
    """Row indices in batch-aligned order such that no batch holds a text twice, in any position.

    Each epoch a seeded permutation (cut into length-sorted mega-batches when ``lengths`` is given, for
    little padding) is filled greedily into batches: a row that shares a text with the batch being filled
    waits for a later one. Every batch but the last is full, so the DataLoader's consecutive batches are
    exactly these. Rows still waiting at the end (a text shared by more rows than there are batches) are
    replaced by re-drawn rows that fit (``repeated`` counts them). The order of the full batches is shuffled;
    the partial batch comes last.

    Raises:
        DataError: fewer than ``batch_size`` rows are free of shared texts, so no batch can be filled.
    """

    def __init__(
        self,
        groups: Sequence[Sequence[Hashable]],
        batch_size: int,
        *,
        seed: int,
        lengths: Sequence[int] | None = None,
        mega_batches: int = 50,
    ) -> None:
        self.keys = [frozenset(g) for g in groups]
        self.batch_size = batch_size
        self.seed = seed
        self.lengths = list(lengths) if lengths is not None else None
        self.mega = batch_size * mega_batches
        self.epoch = 0
        self.disjoint = self._disjoint_rows()
        if len(self.disjoint) < min(batch_size, len(self.keys)):
            raise DataError(
                [
                    f"train: batches of train.batch_size={batch_size} rows with no text in common are "
                    f"impossible: only {len(self.disjoint)} rows share no text (the loss takes the other "
                    f"rows of a batch as negatives); lower train.batch_size to {len(self.disjoint)} or add "
                    f"rows"
                ]
            )

    def _disjoint_rows(self, tries: int = 20) -> list[int]:
        """Up to ``batch_size`` rows sharing no text: a batch that can always be filled. Greedy, in row order
        and then in up to ``tries`` seeded random orders; the largest set found."""
        g = torch.Generator()
        g.manual_seed(self.seed)
        best: list[int] = []
        for attempt in range(tries + 1):
            order = (
                range(len(self.keys))
                if attempt == 0
                else torch.randperm(len(self.keys), generator=g).tolist()
            )
            rows: list[int] = []
            seen: set[Hashable] = set()
            for i in order:
                if self.keys[i].isdisjoint(seen):
                    rows.append(i)
                    seen |= self.keys[i]
                    if len(rows) == self.batch_size:
                        return rows
            best = max(best, rows, key=len)
        return best

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.keys)

    def _order(self, g: torch.Generator) -> list[int]:
        perm = torch.randperm(len(self.keys), generator=g).tolist()
        lengths = self.lengths
        if lengths is None:
            return perm
        return [
            i
            for s in range(0, len(perm), self.mega)
            for i in sorted(perm[s : s + self.mega], key=lengths.__getitem__)
        ]

    def _fill(self, size: int, candidates: list[int], batch: list[int], seen: set[Hashable]) -> list[int]:
        """Add candidates that fit to ``batch`` (in order, up to ``size``); returns those that did not."""
        left = []
        for i in candidates:
            if len(batch) < size and self.keys[i].isdisjoint(seen):
                batch.append(i)
                seen |= self.keys[i]
            else:
                left.append(i)
        return left

    def plan(self, epoch: int) -> tuple[list[list[int]], int]:
        """The batches of one epoch and how many rows were re-drawn in place of rows that did not fit."""
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + epoch)
        order = self._order(g)
        n, bs = len(order), self.batch_size
        sizes = [bs] * (n // bs) + ([n % bs] if n % bs else [])
        batches: list[list[int]] = []
        waiting: list[int] = []
        position = 0
        for size in sizes:
            batch: list[int] = []
            seen: set[Hashable] = set()
            waiting = self._fill(size, waiting, batch, seen)
            while len(batch) < size and position < n:
                waiting += self._fill(size, [order[position]], batch, seen)
                position += 1
            if len(batch) < size:  # only rows that clash are left: re-draw rows that fit
                self._fill(size, torch.randperm(n, generator=g).tolist(), batch, seen)
            if len(batch) < size:  # the greedy choice was unlucky: a set known to fit
                waiting += batch
                batch = [self.disjoint[j] for j in torch.randperm(len(self.disjoint), generator=g)[:size]]
            batches.append(batch)
        full = [b for b in batches if len(b) == bs]
        shuffled = [full[j] for j in torch.randperm(len(full), generator=g).tolist()]
        return shuffled + [b for b in batches if len(b) != bs], len(waiting)

    def __iter__(self) -> Iterator[int]:
        batches, _ = self.plan(self.epoch)
        for batch in batches:
            yield from batch

"""Which samples a rank trains on, in which order, and how a resumed run continues the same epoch.

``EpochSampler`` shuffles each epoch from the run's seed and the epoch number (as ``DistributedSampler`` does,
so each rank gets its own share) and yields ``(epoch, index)`` keys, from which the dataset draws each sample's
random crop (``nst_fast.data.crop_generator``): the crops depend only on the seed, the epoch and the sample,
never on how many loader workers there are or on where a run was interrupted. ``ResumableLoader`` counts the
batches the training loop took and gives Lightning that position as the loader's ``state_dict``, which goes
into the checkpoint; ``load_state_dict`` makes the next pass skip exactly those samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from nst_fast.errors import ConfigError

SampleKey = tuple[int, int]
"""``(epoch, index)``: a sample of the dataset at a given epoch."""


class EpochSampler(DistributedSampler):
    """This rank's share of each epoch, shuffled from ``seed`` and the epoch, as ``(epoch, index)`` keys.

    A ``DistributedSampler`` (Lightning then leaves it in place under DDP) whose ``resume_at`` makes the next
    pass over epoch ``epoch`` start after its first ``position`` samples.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, position: int) -> None:
        """Make the next pass be epoch ``epoch``, starting at its ``position``-th sample of this rank."""
        self.set_epoch(epoch)
        self._resume = (epoch, position)

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        start = 0
        if self._resume is not None:
            epoch, position = self._resume
            self._resume = None
            start = position if epoch == self.epoch else 0
        indices = list(super().__iter__())
        return iter([(self.epoch, index) for index in indices[start:]])


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over an ``EpochSampler`` whose ``state_dict`` is its position: the epoch and the number of
    batches the training loop has taken from it. Lightning stores it in checkpoints (``loops.fit_loop.state_dict
    .combined_loader``) and hands it back to ``load_state_dict`` on resume, before the first batch is drawn.
    """

    def __init__(self, dataset: Dataset, sampler: EpochSampler, batch_size: int, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **kwargs)
        self.batches_taken = 0
        self._resumed_batches = 0

    def __iter__(self) -> Iterator[Any]:
        self.batches_taken, self._resumed_batches = self._resumed_batches, 0
        for batch in super().__iter__():
            self.batches_taken += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches", "batch_size", "world_size"}``: where the training loop is in this rank's epoch."""
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        return {
            "epoch": sampler.epoch,
            "batches": self.batches_taken,
            "batch_size": self.batch_size or 0,
            "world_size": sampler.num_replicas,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state``: the rest of its epoch, or the next epoch when that one was finished. Raises
        ``ConfigError`` when the batch size or the number of ranks differs (the position would mean other samples)
        or when ``state`` was saved by another kind of loader (a streamed set's)."""
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        if not {"epoch", "batches", "batch_size", "world_size"} <= set(state):
            raise ConfigError(
                f"the checkpoint's data position ({sorted(state)}) was not saved by a photo folder's loader: resume "
                "with the data the run was trained on (data=stream for a streamed set)"
            )
        saved = (state["batch_size"], state["world_size"])
        if saved != (self.batch_size, sampler.num_replicas):
            raise ConfigError(
                f"the checkpoint's data position was saved with data.batch_size={saved[0]} on {saved[1]} device(s), "
                f"but this run has data.batch_size={self.batch_size} on {sampler.num_replicas}: resume with the same "
                "batch size and number of devices to continue its epoch"
            )
        epoch, batches = state["epoch"], state["batches"]
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        sampler.resume_at(epoch, batches * (self.batch_size or 0))
        self._resumed_batches = batches

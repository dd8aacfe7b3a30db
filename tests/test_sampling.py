"""Resumable sampling: each rank's share of an epoch, and a loader that continues exactly where it stopped."""

import pytest
import torch
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from nst_fast.errors import ConfigError
from nst_fast.sampling import EpochSampler, ResumableLoader


class Keys(Dataset):
    """Returns the key it is asked for, so that batches show exactly which samples were drawn."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key):
        return torch.tensor(key)


def loader(length: int = 10, batch_size: int = 2, rank: int = 0, world: int = 1, workers: int = 0) -> ResumableLoader:
    dataset = Keys(length)
    return ResumableLoader(dataset, EpochSampler(dataset, world, rank, seed=5), batch_size, num_workers=workers)


def keys(batches) -> list[tuple[int, int]]:
    return [tuple(key) for batch in batches for key in batch.tolist()]


def epoch(dataloader: ResumableLoader, number: int) -> list[tuple[int, int]]:
    """Epoch ``number`` as Lightning takes it: ``set_epoch``, then ``len(loader)`` batches, the iterator never exhausted
    (a resumed epoch: the batches left)."""
    dataloader.sampler.set_epoch(number)
    batches = iter(dataloader)
    first = next(batches)
    return keys([first] + [next(batches) for _ in range(len(dataloader) - dataloader.batches_taken)])


def test_ranks_share_each_epoch_like_a_distributed_sampler() -> None:
    ranks = [loader(length=12, rank=rank, world=2) for rank in (0, 1)]
    for number in (0, 1):
        shares = [epoch(ranks[rank], number) for rank in (0, 1)]
        assert all(e == number for share in shares for e, _ in share), "keys carry the epoch"
        indices = [[index for _, index in share] for share in shares]
        assert not set(indices[0]) & set(indices[1]) and set(indices[0]) | set(indices[1]) == set(range(12))
        for rank in (0, 1):  # the same order as torch's own sampler with the same seed
            reference = DistributedSampler(range(12), num_replicas=2, rank=rank, shuffle=True, seed=5)
            reference.set_epoch(number)
            assert indices[rank] == list(reference)
    assert epoch(ranks[0], 0) != epoch(ranks[0], 1), "each epoch is shuffled anew"


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("taken", [0, 1, 4])
def test_resume_continues_the_epoch_then_the_next(workers: int, taken: int) -> None:
    uninterrupted = loader(workers=workers)
    expected = epoch(uninterrupted, 2) + epoch(uninterrupted, 3)
    first = loader(workers=workers)
    first.sampler.set_epoch(2)
    batches = iter(first)
    seen = keys([next(batches) for _ in range(taken)])
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": taken, "batch_size": 2, "world_size": 1}
    resumed = loader(workers=workers)
    resumed.load_state_dict(state)
    rest = epoch(resumed, 2)  # Lightning sets the epoch it resumes, then the next one
    assert resumed.state_dict()["batches"] == 5, "the count goes on from the resumed position"
    assert seen + rest + epoch(resumed, 3) == expected


def test_a_finished_epoch_resumes_with_the_next() -> None:
    first = loader()
    expected_next = epoch(loader(), 1)
    epoch(first, 0)
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    assert epoch(resumed, 1) == expected_next


def test_resume_refuses_another_batch_size_world_size_or_loader() -> None:
    state = {"epoch": 0, "batches": 2, "batch_size": 2, "world_size": 1}
    with pytest.raises(ConfigError, match="data.batch_size=2 on 1 device"):
        loader(batch_size=4).load_state_dict(state)
    with pytest.raises(ConfigError, match="on 2"):
        loader(world=2).load_state_dict(state)
    with pytest.raises(ConfigError, match="not saved by a photo folder's loader"):
        loader().load_state_dict({"dataset": {}, "current_epoch": 1})

"""WindowDataset and train_val_split: windows, random crops, splits and DataLoader workers."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vrnnkit.data import WindowDataset, open_sequences, train_val_split
from vrnnkit.errors import DataError

NUM_SEQUENCES, NUM_FRAMES = 6, 10


def labelled_videos() -> np.ndarray:
    """(N, T, 4, 4) uint8 whose every pixel of frame t of sequence n holds 10 * n + t."""
    labels = 10 * np.arange(NUM_SEQUENCES)[:, None] + np.arange(NUM_FRAMES)[None, :]
    return np.broadcast_to(labels[:, :, None, None], (NUM_SEQUENCES, NUM_FRAMES, 4, 4)).astype(
        np.uint8
    )


def labels_of(window: torch.Tensor) -> list[int]:
    """Recover the 10 * n + t label of each frame of a (T, 1, 4, 4) window."""
    return torch.round(window[:, 0, 0, 0] * 255).int().tolist()


def test_fixed_windows_start_every_stride_frames():
    dataset = WindowDataset(labelled_videos(), seq_len=4, stride=3, layout="NTHW")
    assert len(dataset) == NUM_SEQUENCES * 3  # starts 0, 3, 6
    assert dataset[0].shape == (4, 1, 4, 4) and dataset[0].dtype == torch.float32
    assert labels_of(dataset[0]) == [0, 1, 2, 3]
    assert labels_of(dataset[2]) == [6, 7, 8, 9]
    assert labels_of(dataset[4]) == [13, 14, 15, 16]


def test_default_stride_cuts_windows_without_overlap():
    dataset = WindowDataset(labelled_videos(), seq_len=4, layout="NTHW")
    assert [labels_of(dataset[i]) for i in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(dataset) == NUM_SEQUENCES * 2


def test_random_crops_are_consecutive_frames_of_their_sequence_and_reproducible():
    dataset = WindowDataset(labelled_videos(), seq_len=3, random_crop=True, layout="NTHW")
    assert len(dataset) == NUM_SEQUENCES
    torch.manual_seed(0)
    first = [labels_of(dataset[1]) for _ in range(30)]
    starts = {labels[0] - 10 for labels in first}
    assert all(labels == list(range(labels[0], labels[0] + 3)) for labels in first)
    assert starts <= set(range(NUM_FRAMES - 3 + 1)) and len(starts) > 3
    torch.manual_seed(0)
    assert [labels_of(dataset[1]) for _ in range(30)] == first


def test_indices_restrict_the_windows_to_those_sequences():
    dataset = WindowDataset(labelled_videos(), seq_len=5, indices=[4, 1], layout="NTHW")
    assert [labels_of(dataset[i])[0] for i in range(len(dataset))] == [40, 45, 10, 15]


def test_vector_sequences_give_time_by_feature_windows():
    vectors = np.arange(2 * 8 * 3, dtype=np.float64).reshape(2, 8, 3)
    dataset = WindowDataset(vectors, seq_len=4, layout="NTD")
    assert len(dataset) == 4 and dataset[3].shape == (4, 3)
    np.testing.assert_array_equal(dataset[3].numpy(), vectors[1, 4:8])


def test_window_longer_than_the_sequences_is_rejected():
    with pytest.raises(
        DataError, match=f"seq_len from 1 to the {NUM_FRAMES} frames.*found seq_len=11"
    ):
        WindowDataset(labelled_videos(), seq_len=11, layout="NTHW")


def test_split_is_disjoint_complete_and_reproducible():
    train, val = train_val_split(50, 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(50))
    again_train, again_val = train_val_split(50, 0.2, seed=3)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert not np.array_equal(val, train_val_split(50, 0.2, seed=4)[1])


def test_split_keeps_every_window_of_a_sequence_on_one_side():
    train_ids, val_ids = train_val_split(NUM_SEQUENCES, 0.34, seed=0)
    train = WindowDataset(labelled_videos(), seq_len=2, indices=train_ids, layout="NTHW")
    val = WindowDataset(labelled_videos(), seq_len=2, indices=val_ids, layout="NTHW")
    sources = [{labels_of(data[i])[0] // 10 for i in range(len(data))} for data in (train, val)]
    assert sources[0].isdisjoint(sources[1]) and sources[0] | sources[1] == set(
        range(NUM_SEQUENCES)
    )


@pytest.mark.parametrize(("count", "fraction"), [(1, 0.5), (10, 0.0), (10, 1.0)])
def test_split_rejects_what_cannot_be_split(count, fraction):
    with pytest.raises(DataError, match="train_val_split: expected"):
        train_val_split(count, fraction)


def test_dataloader_workers_read_memory_mapped_windows(tmp_path):
    np.save(tmp_path / "videos.npy", labelled_videos())
    dataset = WindowDataset(open_sequences(tmp_path / "videos.npy", layout="NTHW"), seq_len=5)
    loader = DataLoader(dataset, batch_size=4, num_workers=2)
    batches = list(loader)
    assert [batch.shape[0] for batch in batches] == [4, 4, 4]
    found = torch.cat(batches)
    expected = torch.stack([dataset[i] for i in range(len(dataset))])
    assert torch.equal(found, expected)

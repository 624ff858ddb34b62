"""MNIST files, sequential MNIST and the Moving MNIST generator."""

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrnnkit.data import load_mnist, moving_mnist, read_idx, sequential_mnist
from vrnnkit.data.moving_mnist import MAX_SPEED, _step
from vrnnkit.errors import DataError

MNIST_FOLDER = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="module")
def mnist():
    if not (MNIST_FOLDER / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST test digits not found in {MNIST_FOLDER}")
    return load_mnist(MNIST_FOLDER, "test")


def block_digits(value: int, count: int = 5, size: int = 28) -> np.ndarray:
    """Solid square "digits": every pixel of a drawn digit is known, so frames can be checked."""
    return np.full((count, size, size), value, np.uint8)


def idx_bytes(values: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, values.ndim]) + b"".join(
        int(size).to_bytes(4, "big") for size in values.shape
    )
    return header + values.tobytes()


# --- MNIST files -------------------------------------------------------------------------


def test_load_mnist_reads_the_published_test_set(mnist):
    images, labels = mnist
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert images.mean() == pytest.approx(33.79, abs=0.01)


def test_read_idx_reads_raw_and_gzip_files_alike(tmp_path):
    values = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "raw").write_bytes(idx_bytes(values))
    (tmp_path / "packed.gz").write_bytes(gzip.compress(idx_bytes(values)))
    np.testing.assert_array_equal(read_idx(tmp_path / "raw"), values)
    np.testing.assert_array_equal(read_idx(tmp_path / "packed.gz", magic=2051), values)


def test_read_idx_converts_big_endian_values(tmp_path):
    values = np.array([1.5, -2.25, 1e6], dtype=">f4")
    (tmp_path / "floats").write_bytes(idx_bytes(values, type_code=0x0D))
    found = read_idx(tmp_path / "floats")
    assert found.dtype == np.float32 and found.dtype.isnative
    np.testing.assert_array_equal(found, [1.5, -2.25, 1e6])


def test_load_mnist_reads_uncompressed_files(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([3, 1, 4], np.uint8)))
    found_images, found_labels = load_mnist(tmp_path)
    np.testing.assert_array_equal(found_images, images)
    assert found_labels.tolist() == [3, 1, 4]


def test_load_mnist_rejects_labels_that_do_not_match_the_images(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(DataError, match="3 images and 2 labels"):
        load_mnist(tmp_path)


# --- sequential MNIST --------------------------------------------------------------------


def test_sequential_mnist_reads_rows_as_steps():
    images = np.zeros((2, 28, 28), np.uint8)
    images[1, 5] = 255  # row 5 of image 1 becomes step 5
    images[0, :, 3] = 102
    steps = sequential_mnist(images)
    assert steps.shape == (2, 28, 28) and steps.dtype == np.float32
    assert steps[1, 5].tolist() == [1.0] * 28 and steps[1].sum() == 28
    np.testing.assert_allclose(steps[0, :, 3], 0.4)


def test_sequential_mnist_binarises_above_the_threshold():
    images = np.array([[[0, 127, 128, 255] * 7] * 28], np.uint8)
    steps = sequential_mnist(images, threshold=0.5)
    assert set(np.unique(steps).tolist()) == {0.0, 1.0}
    assert steps[0, 0, :4].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_sequential_mnist_of_real_digits_is_in_unit_range(mnist):
    steps = sequential_mnist(mnist[0][:100])
    assert steps.min() == 0.0 and steps.max() == 1.0
    assert steps.mean() == pytest.approx(mnist[0][:100].mean() / 255, rel=1e-5)


# --- Moving MNIST ------------------------------------------------------------------------


def expected_frames(digits: np.ndarray, positions: np.ndarray, canvas: int) -> np.ndarray:
    """An independent, loop-by-loop drawing of one video from its trajectory."""
    length, count, _ = positions.shape
    height, width = digits.shape[1:]
    frames = np.zeros((length, canvas, canvas), np.int64)
    for t in range(length):
        for d in range(count):
            x, y = np.rint(positions[t, d]).astype(int)
            frames[t, y : y + height, x : x + width] += digits[d]
    return np.minimum(frames, 255)


@pytest.mark.parametrize("stochastic", [False, True])
def test_frames_are_drawn_at_the_rounded_trajectory(stochastic):
    digits = block_digits(200, count=1)  # two overlapping blocks reach 400, clipped to 255
    videos, paths = moving_mnist(
        digits, 6, length=12, stochastic=stochastic, seed=1, return_trajectories=True
    )
    assert videos.shape == (6, 12, 64, 64) and videos.dtype == np.uint8
    assert set(np.unique(videos).tolist()) == {0, 200, 255}  # the seed makes digits overlap
    for n in range(6):
        np.testing.assert_array_equal(
            videos[n], expected_frames(digits[[0, 0]], paths.positions[n], 64)
        )


@given(
    num_digits=st.integers(1, 3),
    canvas=st.integers(29, 48),
    stochastic=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25, deadline=None)
def test_every_digit_is_drawn_whole_inside_the_canvas(num_digits, canvas, stochastic, seed):
    # Blocks of 80 never reach the 255 clip with up to 3 digits, so each frame's total is exact.
    digits = block_digits(80)
    videos, paths = moving_mnist(
        digits,
        4,
        length=10,
        num_digits=num_digits,
        canvas_size=canvas,
        stochastic=stochastic,
        seed=seed,
        return_trajectories=True,
    )
    assert (videos.sum(axis=(2, 3), dtype=np.int64) == num_digits * 28 * 28 * 80).all()
    assert paths.positions.shape == (4, 10, num_digits, 2)
    assert paths.positions.min() >= 0.0 and paths.positions.max() <= canvas - 28


def test_same_seed_gives_same_videos_and_other_seed_differs():
    digits = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    first = moving_mnist(digits, 3, length=8, seed=5)
    assert np.array_equal(first, moving_mnist(digits, 3, length=8, seed=5))
    assert not np.array_equal(first, moving_mnist(digits, 3, length=8, seed=6))


def test_deterministic_motion_reflects_exactly_at_walls():
    _, (positions, velocities) = moving_mnist(
        block_digits(1), 50, length=40, seed=2, return_trajectories=True
    )
    limit = 64 - 28
    unfolded = positions[:, :-1] + velocities[:, :-1]
    folded = np.where(
        unfolded < 0, -unfolded, np.where(unfolded > limit, 2 * limit - unfolded, unfolded)
    )
    np.testing.assert_allclose(positions[:, 1:], folded, atol=1e-9)
    crossed = (unfolded < 0) | (unfolded > limit)
    assert crossed.any()
    np.testing.assert_array_equal(velocities[:, 1:], np.where(crossed, -1, 1) * velocities[:, :-1])
    assert set(np.unique(velocities)) <= set(range(-MAX_SPEED, MAX_SPEED + 1))


def test_stochastic_motion_changes_velocity_only_at_walls():
    _, (positions, velocities) = moving_mnist(
        block_digits(1), 50, length=40, stochastic=True, seed=2, return_trajectories=True
    )
    limit = 64 - 28
    unfolded = positions[:, :-1] + velocities[:, :-1]
    crossed = ((unfolded < 0) | (unfolded > limit)).any(axis=-1)
    changed = (velocities[:, 1:] != velocities[:, :-1]).any(axis=-1)
    assert changed.any()
    assert not (changed & ~crossed).any()
    # Between hits a digit moves in a straight line at its integer velocity.
    np.testing.assert_allclose(positions[:, 1:][~crossed], unfolded[~crossed], atol=1e-9)
    # Unlike the deterministic variant, a hit does not just flip the component.
    assert (velocities[:, 1:][crossed] != -velocities[:, :-1][crossed]).any()


def test_stochastic_hit_spends_the_rest_of_the_step_with_a_velocity_away_from_the_wall():
    rng = np.random.default_rng(0)
    count = 500
    start = np.column_stack([rng.uniform(0, 3, count), rng.uniform(12, 24, count)])
    velocity = np.column_stack([rng.integers(-4, 0, count), rng.integers(-4, 5, count)]).astype(
        float
    )
    positions, velocities = start.copy(), velocity.copy()
    _step(positions, velocities, np.array([36.0, 36.0]), True, rng)

    hit = start[:, 0] + velocity[:, 0] < 0
    hit_time = start[hit, 0] / -velocity[hit, 0]
    assert hit.sum() > 100
    assert (velocities[hit, 0] >= 1).all() and (velocities[hit, 0] <= MAX_SPEED).all()
    np.testing.assert_allclose(positions[hit, 0], velocities[hit, 0] * (1 - hit_time))
    np.testing.assert_allclose(
        positions[hit, 1],
        start[hit, 1] + velocity[hit, 1] * hit_time + velocities[hit, 1] * (1 - hit_time),
    )
    np.testing.assert_array_equal(velocities[~hit], velocity[~hit])


def test_corner_hit_reflects_both_components():
    positions, velocities = np.array([[1.0, 35.0]]), np.array([[-2.0, 2.0]])
    _step(positions, velocities, np.array([36.0, 36.0]), False, np.random.default_rng(0))
    np.testing.assert_allclose(positions, [[1.0, 35.0]])
    np.testing.assert_array_equal(velocities, [[2.0, -2.0]])


def test_train_and_test_videos_use_disjoint_digits(mnist):
    images = mnist[0]
    train_ids, test_ids = np.arange(8000), np.arange(8000, 10000)
    videos, paths = moving_mnist(
        images, 30, length=2, num_digits=1, indices=test_ids, seed=0, return_trajectories=True
    )
    corners = np.rint(paths.positions[:, 0, 0]).astype(int)
    for video, (x, y) in zip(videos, corners, strict=True):
        drawn = video[0, y : y + 28, x : x + 28]
        matches = np.flatnonzero((images == drawn).all(axis=(1, 2)))
        assert (
            matches.size
            and np.isin(matches, test_ids).all()
            and not np.isin(matches, train_ids).any()
        )


def test_moving_mnist_rejects_indices_outside_the_images():
    with pytest.raises(DataError, match=r"expected indices in \[0, 4\], found values from 3 to 7"):
        moving_mnist(block_digits(1), 2, indices=[3, 7])

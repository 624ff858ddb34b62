"""Reading .npy, .npz, .gif and .mp4 files in every layout, and guessing layouts."""

import pickle
import tempfile
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrnnkit.data import LayoutWarning, SequenceArray, load_sequences, open_sequences
from vrnnkit.errors import DataError

# Axis sizes of the canonical (N, T, C, H, W) test video, all different so a mixed-up axis shows.
N, T, C, H, W, D = 2, 5, 3, 6, 7, 4
IMAGE_LAYOUTS = ["THW", "THWC", "NTHW", "NTHWC", "TNHW", "NTCHW", "TNHWC", "TCHW"]
VECTOR_LAYOUTS = ["TD", "NTD", "TND"]


def canonical_video(layout: str, dtype=np.uint8) -> np.ndarray:
    """A (N, T, C, H, W) video with only the axes that ``layout`` has, every value distinct-ish."""
    sizes = {"N": N if "N" in layout else 1, "C": C if "C" in layout else 1}
    shape = (sizes["N"], T, sizes["C"], H, W)
    return (np.arange(np.prod(shape)) % 251).reshape(shape).astype(dtype)


def stored(canonical: np.ndarray, layout: str) -> np.ndarray:
    """Rearrange a canonical (N, T, C, H, W) or (N, T, D) array into ``layout``."""
    order = "NTCHW" if canonical.ndim == 5 else "NTD"
    squeezed = [axis for axis in order if axis not in layout]
    array = canonical.squeeze(axis=tuple(order.index(axis) for axis in squeezed))
    kept = "".join(axis for axis in order if axis in layout)
    return array.transpose([kept.index(axis) for axis in layout])


@pytest.mark.parametrize("layout", IMAGE_LAYOUTS)
def test_npy_round_trip_in_every_image_layout(tmp_path, layout):
    canonical = canonical_video(layout)
    np.save(tmp_path / "video.npy", stored(canonical, layout))
    loaded = load_sequences(tmp_path / "video.npy", layout=layout)
    assert loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, canonical / 255.0, rtol=1e-6)


@pytest.mark.parametrize("layout", VECTOR_LAYOUTS)
def test_npy_round_trip_in_every_vector_layout(tmp_path, layout):
    canonical = np.random.default_rng(0).normal(size=(N if "N" in layout else 1, T, D))
    np.save(tmp_path / "vectors.npy", stored(canonical, layout))
    loaded = load_sequences(tmp_path / "vectors.npy", layout=layout)
    np.testing.assert_allclose(loaded, canonical.astype(np.float32))  # floats keep their scale


def test_published_moving_mnist_layout_reads_sequence_by_sequence(tmp_path):
    published = np.random.default_rng(0).integers(0, 256, (20, 3, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "mnist_test_seq.npy", published)
    sequences = open_sequences(tmp_path / "mnist_test_seq.npy", layout="TNHW")
    assert len(sequences) == 3 and sequences.frame_shape == (1, 64, 64)
    np.testing.assert_allclose(sequences[2][7, 0], published[7, 2] / 255.0, rtol=1e-6)


def test_npz_reads_the_single_array_or_the_named_one(tmp_path):
    video = canonical_video("NTHW")[:, :, 0]
    np.savez_compressed(tmp_path / "one.npz", frames=video)
    np.savez(tmp_path / "two.npz", frames=video, other=video[:1])
    expected = video[:, :, None] / 255.0
    np.testing.assert_allclose(
        load_sequences(tmp_path / "one.npz", layout="NTHW"), expected, rtol=1e-6
    )
    np.testing.assert_allclose(
        load_sequences(tmp_path / "two.npz", layout="NTHW", key="frames"), expected, rtol=1e-6
    )
    with pytest.raises(DataError, match=r"two\.npz.*found 2 arrays: frames, other"):
        load_sequences(tmp_path / "two.npz", layout="NTHW")
    with pytest.raises(DataError, match="expected an array named 'missing', found frames, other"):
        load_sequences(tmp_path / "two.npz", layout="NTHW", key="missing")


def moving_square(channels: int) -> np.ndarray:
    """(T, H, W, 3) frames of a square moving right, on a two-colour background."""
    frames = np.zeros((6, 32, 48, 3), np.uint8)
    frames[:, 16:, :, 2] = 160
    for t in range(6):
        frames[t, 6:18, 4 + 4 * t : 16 + 4 * t] = (230, 230, 230) if channels == 1 else (250, 40, 0)
    return frames


@pytest.mark.parametrize("channels", [1, 3])
def test_gif_round_trip_is_exact_for_few_colours(tmp_path, channels):
    frames = moving_square(channels)
    if channels == 1:
        frames = frames.max(axis=-1, keepdims=True).repeat(3, axis=-1)
    iio.imwrite(tmp_path / "clip.gif", frames, loop=0)
    loaded = load_sequences(tmp_path / "clip.gif")
    assert loaded.shape == (1, 6, channels, 32, 48)
    np.testing.assert_allclose(
        loaded[0], frames[..., :channels].transpose(0, 3, 1, 2) / 255.0, atol=1e-6
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_mp4_round_trip_within_codec_tolerance(tmp_path, channels):
    frames = moving_square(channels)
    if channels == 1:
        frames = frames.max(axis=-1, keepdims=True).repeat(3, axis=-1)
    iio.imwrite(tmp_path / "clip.mp4", frames, fps=10)
    loaded = load_sequences(tmp_path / "clip.mp4")
    assert loaded.shape == (1, 6, channels, 32, 48)
    error = np.abs(loaded[0] - frames[..., :channels].transpose(0, 3, 1, 2) / 255.0)
    assert error.mean() < 0.02 and error.max() < 0.35  # lossy: edges of saturated colour blur


def test_grey_option_reads_luminance_of_colour_video(tmp_path):
    frames = moving_square(3)
    iio.imwrite(tmp_path / "clip.gif", frames, loop=0)
    loaded = load_sequences(tmp_path / "clip.gif", grey=True)
    luminance = np.rint(frames @ np.array([0.299, 0.587, 0.114])) / 255.0
    assert loaded.shape == (1, 6, 1, 32, 48)
    np.testing.assert_allclose(loaded[0, :, 0], luminance, atol=1e-6)


def test_resize_changes_the_frame_size_and_keeps_constant_frames_constant(tmp_path):
    video = np.full((2, 3, 16, 24), 51, np.uint8)
    np.save(tmp_path / "video.npy", video)
    sequences = open_sequences(tmp_path / "video.npy", layout="NTHW", resize=(8, 12))
    assert sequences.frame_shape == (1, 8, 12)
    loaded = sequences.to_numpy()
    assert loaded.shape == (2, 3, 1, 8, 12)
    np.testing.assert_allclose(loaded, 0.2, atol=1e-6)


def test_npy_is_memory_mapped_and_pickles_without_its_data(tmp_path):
    video = np.random.default_rng(0).integers(0, 256, (4, 10, 32, 32), dtype=np.uint8)
    np.save(tmp_path / "video.npy", video)
    sequences = open_sequences(tmp_path / "video.npy", layout="NTHW")
    payload = pickle.dumps(sequences)
    assert len(payload) < 2000 < video.nbytes
    restored = pickle.loads(payload)
    np.testing.assert_allclose(restored.window(3, 2, 4)[:, 0], video[3, 2:6] / 255.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("shape", "chosen", "alternative"),
    [
        ((5, 6, 7), "THW", "NTD"),
        ((5, 6, 7, 3), "THWC", "NTHW"),
        ((20, 3, 8, 8), "NTHW", "TNHW"),
        ((2, 5, 3, 6, 3), "NTHWC", "NTCHW"),
    ],
)
def test_ambiguous_shape_warns_with_the_chosen_layout(shape, chosen, alternative):
    with pytest.warns(LayoutWarning, match=f"could be .*{alternative}.*; read it as {chosen}"):
        sequences = SequenceArray(np.zeros(shape, np.uint8))
    assert sequences.layout == chosen


@pytest.mark.parametrize(("shape", "chosen"), [((5, 4), "TD"), ((2, 5, 6, 7, 3), "NTHWC")])
def test_unambiguous_shape_is_read_without_warning(shape, chosen):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SequenceArray(np.zeros(shape, np.float32)).layout == chosen


def test_explicit_layout_silences_the_guess():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SequenceArray(np.zeros((5, 6, 7), np.float32), layout="ntd").layout == "NTD"


def test_decoded_video_layout_is_not_guessed(tmp_path):
    iio.imwrite(tmp_path / "clip.gif", moving_square(3), loop=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_sequences(tmp_path / "clip.gif").layout == "THWC"


DTYPES = [np.uint8, np.bool_, np.int16, np.float16, np.float32, np.float64]


@given(
    layout=st.sampled_from(IMAGE_LAYOUTS + VECTOR_LAYOUTS),
    dtype=st.sampled_from(DTYPES),
    sizes=st.fixed_dictionaries(
        {axis: st.integers(1, 4) for axis in "NTHWD"} | {"C": st.sampled_from([1, 3, 4])}
    ),
    through_file=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_any_layout_and_dtype_reads_as_canonical_float32(layout, dtype, sizes, through_file):
    rng = np.random.default_rng(0)
    order = "NTCHW" if "H" in layout else "NTD"
    shape = tuple(sizes[axis] if axis in layout else 1 for axis in order)
    canonical = rng.integers(0, 200, shape).astype(dtype)
    array = stored(canonical, layout)
    if through_file:
        with tempfile.TemporaryDirectory() as folder:
            np.save(Path(folder) / "data.npy", array)
            loaded = load_sequences(Path(folder) / "data.npy", layout=layout)
    else:
        loaded = SequenceArray(array, layout=layout).to_numpy()
    scale = 255.0 if dtype == np.uint8 else 1.0
    assert loaded.dtype == np.float32 and loaded.shape == canonical.shape
    np.testing.assert_allclose(loaded, canonical.astype(np.float64) / scale, rtol=1e-6)


@given(layout=st.sampled_from(IMAGE_LAYOUTS + VECTOR_LAYOUTS), extra=st.sampled_from([-1, 1]))
@settings(max_examples=20, deadline=None)
def test_layout_with_the_wrong_rank_is_rejected(layout, extra):
    shape = (2,) * (len(layout) + extra)
    with pytest.raises(
        DataError, match=f"layout '{layout}' expects a {len(layout)}-D array, found"
    ):
        SequenceArray(np.zeros(shape), layout=layout)

"""--size and --grey on load: parsing, area resizing, luma, and videos decoded frame by frame."""

from __future__ import annotations

import tracemalloc

import imageio.v3 as iio
import numpy as np
import pytest

from vrnnkit.blocks.conv import MIN_SIDE
from vrnnkit.data import SequenceArray, load_sequences, open_sequences
from vrnnkit.data import video as video_module
from vrnnkit.data.frames import LUMA, format_size, grey_frames, parse_size, resize_frames
from vrnnkit.errors import ConfigError, DataError
from vrnnkit.training import TrainConfig


@pytest.mark.parametrize(
    ("value", "size"),
    [("64", (64, 64)), (64, (64, 64)), ("64x48", (64, 48)), (" 64 X 48 ", (64, 48)), ([48, 64], (48, 64)), (None, None)],
)
def test_parse_size_reads_a_square_or_height_x_width(value, size):
    assert parse_size(value) == size


@pytest.mark.parametrize(("value", "message"), [
    ("0", "at least 8x8"), ("7x", "HEIGHTxWIDTH"), ("abc", "HEIGHTxWIDTH"), ("", "HEIGHTxWIDTH"), (True, "HEIGHTxWIDTH"),
    ("x64", "HEIGHTxWIDTH"), ("64x48x3", "HEIGHTxWIDTH"), (2.5, "HEIGHTxWIDTH"), (MIN_SIDE - 1, f"MIN_SIDE = {MIN_SIDE}"),
    ("64x7", "at least 8x8"),
])
def test_parse_size_rejects_what_is_not_a_size_in_one_line(value, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_size(value)
    assert "\n" not in str(info.value) and str(info.value).startswith("--size ")


def test_train_config_keeps_size_as_height_x_width():
    assert TrainConfig.from_dict({"size": 64, "grey": True}).to_dict()["size"] == "64x64"
    assert TrainConfig.from_dict({"size": [64, 48]}).frame_size == (64, 48)
    assert TrainConfig.from_dict({"size": "32x48"}).size == format_size((32, 48)) == "32x48"
    assert TrainConfig().size is None and TrainConfig().grey is False
    with pytest.raises(ConfigError, match="--size 7x"):
        TrainConfig.from_dict({"size": "7x"})


def test_area_shrinking_averages_each_output_pixels_area():
    constant = np.full((2, 3, 12, 18), 0.3, np.float32)
    np.testing.assert_allclose(resize_frames(constant, (4, 6)), 0.3, atol=1e-6)
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32), (1, 1, 4, 8))  # value = column
    np.testing.assert_allclose(resize_frames(ramp, (2, 4))[0, 0], [[0.5, 2.5, 4.5, 6.5]] * 2, atol=1e-6)
    checker = (np.indices((8, 8)).sum(axis=0) % 2).astype(np.float32)[None, None]  # 1-pixel stripes
    np.testing.assert_allclose(resize_frames(checker, (4, 4)), 0.5, atol=1e-6)  # not aliased to 0 or 1
    uneven = np.arange(6, dtype=np.float32)[None, None, None]  # 6 -> 4 columns: windows [0,2) [1,3) [3,5) [4,6)
    np.testing.assert_allclose(resize_frames(uneven, (1, 4))[0, 0, 0], [0.5, 1.5, 3.5, 4.5], atol=1e-6)


def test_enlarging_is_bilinear_and_stays_within_the_values():
    frame = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)[None, None]
    big = resize_frames(frame, (4, 4))[0, 0]
    np.testing.assert_allclose(big[0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)  # align_corners=False
    assert big.min() >= 0.0 and big.max() <= 1.0
    np.testing.assert_allclose(resize_frames(np.full((1, 3, 8, 8), 0.7, np.float32), (16, 12)), 0.7, atol=1e-6)


def test_grey_is_bt601_luma_and_drops_alpha():
    rgba = np.zeros((1, 4, 2, 2), np.float32)
    rgba[0, 0, 0, 0] = rgba[0, 1, 0, 1] = rgba[0, 2, 1, 0] = 1.0
    rgba[0, 3] = 0.5  # alpha
    grey = grey_frames(rgba)
    assert grey.shape == (1, 1, 2, 2) and grey.dtype == np.float32
    np.testing.assert_allclose(grey[0, 0], [[LUMA[0], LUMA[1]], [LUMA[2], 0.0]], atol=1e-6)
    assert grey_frames(np.ones((2, 1, 3, 3), np.float32)).shape == (2, 1, 3, 3)


def test_npy_frames_are_converted_to_grey_and_area_resized_as_they_are_read(tmp_path):
    colour = np.zeros((2, 3, 8, 12, 3), np.float32)
    colour[..., 0] = np.arange(12, dtype=np.float32) / 11  # red ramps along the width
    colour[..., 2] = 1.0
    np.save(tmp_path / "colour.npy", colour)
    sequences = open_sequences(tmp_path / "colour.npy", layout="NTHWC", resize=(4, 6), grey=True)
    assert sequences.frame_shape == (1, 4, 6)
    loaded = sequences.to_numpy()
    red = (np.arange(0, 12, 2) + 0.5) / 11  # the mean of each pair of columns
    np.testing.assert_allclose(loaded[0, 0, 0], np.tile(LUMA[0] * red + LUMA[2], (4, 1)), atol=1e-6)


def test_video_frames_are_resized_as_decoded(tmp_path):
    ramp = np.tile((np.arange(32) * 7)[None, :, None], (16, 1, 3))  # grey, 0..217 by column
    iio.imwrite(tmp_path / "ramp.gif", np.stack([ramp + t for t in range(4)]).astype(np.uint8), loop=0)
    loaded = load_sequences(tmp_path / "ramp.gif", resize=(8, 16))
    assert loaded.shape == (1, 4, 1, 8, 16)  # grey: the channels agree
    expected = (np.arange(0, 32, 2) * 7 + 3.5 + 2) / 255  # frame 2: columns 7k + 2 and 7k + 9 average to 7k + 5.5
    np.testing.assert_allclose(loaded[0, 2, 0], np.tile(expected, (8, 1)), atol=0.5 / 255 + 1e-6)  # stored as uint8


def test_a_colour_mp4_reads_at_any_size_in_grey_or_colour(tmp_path):
    frames = (np.random.default_rng(0).random((5, 48, 80, 3)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "clip.mp4", frames, fps=10, macro_block_size=1)
    assert load_sequences(tmp_path / "clip.mp4", resize=(12, 20)).shape == (1, 5, 3, 12, 20)
    assert load_sequences(tmp_path / "clip.mp4", resize=(16, 16), grey=True).shape == (1, 5, 1, 16, 16)


def test_video_is_read_frame_by_frame_never_whole_at_full_resolution(tmp_path, monkeypatch):
    """60 frames of 360x640x3 are 41 MB at full size; read at 36x64 they must never all be in memory."""
    consumed = []

    def frames(path):
        for index in range(60):
            consumed.append(index)
            yield np.full((360, 640, 3), index * 4, np.uint8)

    def whole_file(*args, **kwargs):
        raise AssertionError("the reader must not decode the whole file at once")

    monkeypatch.setattr(video_module, "video_frames", frames)
    monkeypatch.setattr(video_module, "probe", lambda path: (60, 360, 640))
    monkeypatch.setattr(iio, "imread", whole_file)
    (tmp_path / "long.mp4").write_bytes(b"stand-in: the decoder is replaced")
    tracemalloc.start()
    try:
        sequences = open_sequences(tmp_path / "long.mp4", resize=(36, 64))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert consumed == list(range(60))
    assert sequences.raw_shape == (60, 36, 64) and sequences.dtype == np.uint8
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB: frames were kept at full resolution"
    np.testing.assert_allclose(sequences[0][:, 0, 0, 0], np.arange(60) * 4 / 255, atol=1e-6)


def test_a_video_too_large_at_full_size_asks_for_size_before_decoding(tmp_path, monkeypatch):
    def frames(path):
        raise AssertionError("nothing may be decoded")
        yield

    monkeypatch.setattr(video_module, "video_frames", frames)
    monkeypatch.setattr(video_module, "probe", lambda path: (100_000, 1080, 1920))
    (tmp_path / "film.mp4").write_bytes(b"stand-in")
    with pytest.raises(DataError, match=r"film\.mp4: 100000 frames of 1080x1920 .* pass --size"):
        open_sequences(tmp_path / "film.mp4")


def test_probe_reads_frame_counts_and_sizes_from_metadata(tmp_path):
    frames = np.repeat(np.arange(7, dtype=np.uint8)[:, None, None, None] * 30, 24 * 40 * 3).reshape(7, 24, 40, 3)
    iio.imwrite(tmp_path / "clip.mp4", frames, fps=10, macro_block_size=1)
    iio.imwrite(tmp_path / "clip.gif", frames, loop=0)
    assert video_module.probe(tmp_path / "clip.mp4") == (7, 24, 40)
    assert video_module.probe(tmp_path / "clip.gif") == (7, 24, 40)


def test_resize_and_grey_of_generated_data_keep_its_layout():
    videos = np.zeros((2, 3, 16, 16), np.uint8)
    assert SequenceArray(videos, layout="NTHW", resize=(8, 12), grey=True).frame_shape == (1, 8, 12)

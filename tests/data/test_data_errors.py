"""Bad input: every case raises DataError naming the file, what was expected and what was found."""

import gzip
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vrnnkit.data import SequenceArray, check_unit_range, load_mnist, load_sequences, read_idx
from vrnnkit.errors import DataError


def raises_naming(path, *fragments):
    """Expect a DataError whose message names ``path`` and contains every fragment in order."""
    pattern = ".*".join(re.escape(str(part)) for part in (path, *fragments))
    return pytest.raises(DataError, match=re.compile(pattern, re.DOTALL))


def test_missing_path(tmp_path):
    with raises_naming(tmp_path / "nope.npy", "expected a data file, found no such file"):
        load_sequences(tmp_path / "nope.npy")


def test_directory_instead_of_a_file(tmp_path):
    (tmp_path / "frames.npy").mkdir()
    with raises_naming(tmp_path / "frames.npy", "expected a data file, found a directory"):
        load_sequences(tmp_path / "frames.npy")


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".gif", ".mp4"])
def test_empty_file(tmp_path, suffix):
    (tmp_path / f"empty{suffix}").touch()
    with raises_naming(tmp_path / f"empty{suffix}", "found an empty (0-byte) file"):
        load_sequences(tmp_path / f"empty{suffix}")


def test_unknown_suffix(tmp_path):
    (tmp_path / "frames.csv").write_text("1,2,3")
    with raises_naming(tmp_path / "frames.csv", "expected one of .npy, .npz, .gif, .mp4", "'.csv'"):
        load_sequences(tmp_path / "frames.csv")


def test_text_renamed_to_npy(tmp_path):
    (tmp_path / "notes.npy").write_text("these are not frames\n")
    with raises_naming(tmp_path / "notes.npy", "expected a NumPy .npy file", "magic bytes"):
        load_sequences(tmp_path / "notes.npy")


def test_text_renamed_to_npz(tmp_path):
    (tmp_path / "notes.npz").write_text("these are not frames\n")
    with raises_naming(tmp_path / "notes.npz", "expected a NumPy .npz archive", "not a zip"):
        load_sequences(tmp_path / "notes.npz")


def test_truncated_npy(tmp_path):
    np.save(tmp_path / "cut.npy", np.zeros((4, 8, 8), np.float32))
    content = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(content[:-100])
    with raises_naming(tmp_path / "cut.npy", "expected", "bytes", "found", "truncated"):
        load_sequences(tmp_path / "cut.npy")


def test_object_array_in_npy_is_never_unpickled(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with raises_naming(tmp_path / "objects.npy", "expected a numeric array", "Python objects"):
        load_sequences(tmp_path / "objects.npy")


def test_object_array_in_npz_is_never_unpickled(tmp_path):
    np.savez(tmp_path / "objects.npz", frames=np.array([{"a": 1}], dtype=object))
    with raises_naming(tmp_path / "objects.npz", "expected a numeric array", "unpickling"):
        load_sequences(tmp_path / "objects.npz")


@pytest.mark.parametrize(
    ("values", "found"),
    [
        (np.array([["ab", "cd"], ["ef", "gh"]]), "text"),
        (np.ones((3, 4), np.complex64), "complex"),
        (np.array([[b"x"]]), "bytes"),
    ],
)
def test_non_numeric_dtype(tmp_path, values, found):
    np.save(tmp_path / "values.npy", values)
    with raises_naming(tmp_path / "values.npy", "expected numeric values", found):
        load_sequences(tmp_path / "values.npy")


@pytest.mark.parametrize("shape", [(7,), (2, 2, 2, 2, 2, 2)])
def test_wrong_number_of_dimensions(tmp_path, shape):
    np.save(tmp_path / "values.npy", np.zeros(shape, np.float32))
    with raises_naming(
        tmp_path / "values.npy", "expected a 2-D to 5-D array", f"found a {len(shape)}-D"
    ):
        load_sequences(tmp_path / "values.npy")


def test_empty_array(tmp_path):
    np.save(tmp_path / "values.npy", np.zeros((0, 5, 4), np.float32))
    with raises_naming(
        tmp_path / "values.npy", "expected a non-empty array, found shape (0, 5, 4)"
    ):
        load_sequences(tmp_path / "values.npy", layout="NTD")


@pytest.mark.parametrize(
    ("bad", "found"), [(np.nan, "1 NaN and 0 infinite"), (-np.inf, "0 NaN and 1 infinite")]
)
def test_nan_or_inf_values(tmp_path, bad, found):
    values = np.zeros((3, 5, 4), np.float32)
    values[2, 4, 1] = bad
    np.save(tmp_path / "values.npy", values)
    with raises_naming(tmp_path / "values.npy", "expected finite values", found):
        load_sequences(tmp_path / "values.npy", layout="NTD")


def test_layout_that_does_not_fit_the_rank(tmp_path):
    np.save(tmp_path / "video.npy", np.zeros((5, 8, 8), np.uint8))
    with raises_naming(
        tmp_path / "video.npy",
        "layout 'NTHW' expects a 4-D array",
        "found a 3-D array of shape (5, 8, 8)",
    ):
        load_sequences(tmp_path / "video.npy", layout="NTHW")


def test_layout_that_puts_too_many_channels_on_an_axis(tmp_path):
    np.save(tmp_path / "video.npy", np.zeros((3, 5, 64, 64), np.uint8))
    with raises_naming(
        tmp_path / "video.npy", "puts 64 channels on axis 3", "expected 1 to 4 channels"
    ):
        load_sequences(tmp_path / "video.npy", layout="THWC")


@pytest.mark.parametrize("layout", ["NTHX", "NNHW", "NHWC", "TDHW", "THWD"])
def test_malformed_layout(layout):
    with pytest.raises(DataError, match=f"layout '{layout}' is not valid"):
        SequenceArray(np.zeros((2, 2, 2, 2)), layout=layout)


def test_resize_of_vectors_is_rejected():
    with pytest.raises(DataError, match="resize applies to frames, but layout 'NTD' holds vectors"):
        SequenceArray(np.zeros((2, 3, 4)), layout="NTD", resize=(8, 8))


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_corrupt_video(tmp_path, suffix):
    header = b"GIF89a" if suffix == ".gif" else b"\x00\x00\x00\x18ftypisom"
    (tmp_path / f"broken{suffix}").write_bytes(header + bytes(range(256)) * 4)
    with raises_naming(
        tmp_path / f"broken{suffix}", f"expected a readable {suffix} video", "found a corrupt"
    ):
        load_sequences(tmp_path / f"broken{suffix}")


def test_check_unit_range_accepts_unit_values():
    check_unit_range(np.array([0.0, 0.5, 1.0]), "batch")
    check_unit_range(torch.tensor([[0.0, 1.0]]), "batch")


@pytest.mark.parametrize("values", [np.array([0.2, 1.5]), torch.tensor([-0.1, 0.3])])
def test_check_unit_range_rejects_values_outside(values):
    with pytest.raises(DataError, match=r"batch: expected values in \[0, 1\].*found values from"):
        check_unit_range(values, "batch")


@pytest.mark.parametrize("values", [np.array([0.2, np.nan]), torch.tensor([np.inf, 0.3])])
def test_check_unit_range_rejects_non_finite_values(values):
    with pytest.raises(
        DataError, match=r"batch: expected finite values in \[0, 1\], found NaN or infinite"
    ):
        check_unit_range(values, "batch")


@given(
    values=st.lists(
        st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=20
    )
)
@settings(max_examples=50, deadline=None)
def test_check_unit_range_accepts_exactly_finite_values_in_unit_range(values):
    array = np.array(values, np.float32)
    valid = bool(np.isfinite(array).all() and (array >= 0).all() and (array <= 1).all())
    if valid:
        check_unit_range(array, "batch")
    else:
        with pytest.raises(DataError):
            check_unit_range(array, "batch")


# --- MNIST IDX files ---------------------------------------------------------------------


def test_idx_with_the_wrong_magic_number(tmp_path):
    (tmp_path / "labels").write_bytes(
        bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([1, 2, 3])
    )
    with raises_naming(tmp_path / "labels", "expected IDX magic number 2051, found 2049"):
        read_idx(tmp_path / "labels", magic=2051)


def test_idx_with_a_size_that_does_not_match_the_header(tmp_path):
    (tmp_path / "images.gz").write_bytes(
        gzip.compress(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + b"abc")
    )
    with raises_naming(
        tmp_path / "images.gz", "expected 13 bytes for a uint8 array of shape (5,), found 11 bytes"
    ):
        read_idx(tmp_path / "images.gz")


def test_idx_that_is_not_idx(tmp_path):
    (tmp_path / "images").write_text("hello")
    with raises_naming(
        tmp_path / "images", "expected an IDX header", "found the bytes 68 65 6c 6c"
    ):
        read_idx(tmp_path / "images")


def test_idx_with_corrupt_gzip(tmp_path):
    (tmp_path / "images.gz").write_bytes(gzip.compress(b"\x00" * 100)[:20])
    with raises_naming(
        tmp_path / "images.gz", "expected a readable gzip file, found a corrupt one"
    ):
        read_idx(tmp_path / "images.gz")


def test_mnist_folder_missing(tmp_path):
    with raises_naming(tmp_path / "mnist", "expected a folder holding the MNIST files"):
        load_mnist(tmp_path / "mnist")


def test_mnist_file_missing(tmp_path):
    with raises_naming(
        tmp_path, "expected train-images-idx3-ubyte.gz or train-images-idx3-ubyte, found neither"
    ):
        load_mnist(tmp_path, "train")


def test_resize_to_an_empty_frame_is_rejected():
    with pytest.raises(DataError, match=r"expected resize=\(height, width\) >= 1, found \(0, 4\)"):
        SequenceArray(np.zeros((2, 3, 4, 4)), layout="NTHW", resize=(0, 4))


def test_options_of_other_formats_are_rejected(tmp_path):
    np.save(tmp_path / "video.npy", np.zeros((2, 3, 4, 4), np.uint8))
    with raises_naming(tmp_path / "video.npy", "key= applies to .npz", "found a .npy file"):
        load_sequences(tmp_path / "video.npy", layout="NTHW", key="frames")


def test_grey_of_vectors_is_rejected():
    with pytest.raises(DataError, match="grey applies to frames, but layout 'NTD' holds vectors"):
        SequenceArray(np.zeros((2, 3, 4)), layout="NTD", grey=True)


def test_npz_needing_a_newer_zip_version_is_a_data_error(tmp_path):
    # Found by the fuzzer: zipfile raises NotImplementedError for "zip file version 6.4".
    import struct

    path = tmp_path / "clip.npz"
    np.savez(path, clip=np.zeros((2, 3, 4), np.uint8))
    raw = bytearray(path.read_bytes())
    central = raw.find(b"PK\x01\x02")
    struct.pack_into("<H", raw, central + 6, 64)  # version needed to extract: 6.4
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"clip\.npz"):
        load_sequences(path)

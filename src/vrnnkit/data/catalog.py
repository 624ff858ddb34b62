"""The data sets vrnnkit can fetch itself: where they come from, their checksums, where they go.

    cache_root()                     # $VRNNKIT_DATA, else the platform's user cache folder
    DATASETS["mnist"].folder()       # <cache>/mnist, the folder that --mnist-dir would name

Each file's SHA-256 is of its *content*: for a gzip file, of the decompressed bytes. A gzip
wrapper holds a timestamp and a file name, so two copies of the same MNIST file from two
mirrors differ as .gz files while their content is identical; checking the content accepts
every faithful copy and nothing else. The checksums were computed from the copies this
project's tests use (the MNIST test set in its original IDX form, whose MD5s of the
decompressed files, 2646ac64... and 27ae3e4e..., are the ones published with MNIST).

The download location can be changed with ``$VRNNKIT_DATA_MIRROR``: a base URL under which
each file is at ``<mirror>/<data set>/<file name>`` (the tests serve a local folder this way).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vrnnkit.errors import ConfigError

DATA_ENV = "VRNNKIT_DATA"
MIRROR_ENV = "VRNNKIT_DATA_MIRROR"


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    sha256: str
    """SHA-256 of the content: the decompressed bytes of a ``.gz`` file, the file itself otherwise."""
    size: int
    """Bytes of the file as this project's copy stores it (a progress bar's guess when the server gives none)."""


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    files: tuple[RemoteFile, ...]
    licence: str

    def folder(self, cache: str | os.PathLike[str] | None = None) -> Path:
        """The folder that holds this data set's files in the cache."""
        return (Path(cache) if cache is not None else cache_root()) / self.name

    def url(self, file: RemoteFile) -> str:
        """Where ``file`` is downloaded from: its public location, or ``$VRNNKIT_DATA_MIRROR``."""
        mirror = os.environ.get(MIRROR_ENV)
        return f"{mirror.rstrip('/')}/{self.name}/{file.name}" if mirror else file.url


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_JSB_URL = ("https://raw.githubusercontent.com/czhuang/JSB-Chorales-dataset/"
            "9a7f733ddb4ed91f48da64ac7f0f621c34aadd4d/")

DATASETS: dict[str, Dataset] = {
    "mnist": Dataset(
        "mnist",
        "the MNIST test set (10,000 digits) as IDX files: moving-mnist and seq-mnist read it",
        (
            RemoteFile("t10k-images-idx3-ubyte.gz", _MNIST_URL + "t10k-images-idx3-ubyte.gz",
                       "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 1_648_877),
            RemoteFile("t10k-labels-idx1-ubyte.gz", _MNIST_URL + "t10k-labels-idx1-ubyte.gz",
                       "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 4_542),
        ),
        "MNIST by Yann LeCun, Corinna Cortes and Christopher Burges, CC BY-SA 3.0",
    ),
    "jsb-chorales": Dataset(
        "jsb-chorales",
        "382 Bach chorales as note lists, quarter notes, train/valid/test (Boulanger-Lewandowski et al.)",
        (
            RemoteFile("jsb-chorales-quarter.json", _JSB_URL + "jsb-chorales-quarter.json",
                       "2db9329f1881a1d3f49703ec556bf1d6f84b4f6c1d702c156536e93cf31e1c91", 407_200),
        ),
        "the music is Bach's (public domain); the JSON form is from the JSB-Chorales-dataset repository",
    ),
}

BUILTIN_FILE_DATA = {"jsb-chorales": ("jsb-chorales", "jsb-chorales-quarter.json")}
"""Built-in data names that stand for one downloaded file: name -> (data set, file)."""
MNIST_DATA = ("moving-mnist", "seq-mnist")
"""Built-in data names built from the MNIST download when no --mnist-dir is given."""


def cache_root() -> Path:
    """Where downloaded data sets live: ``$VRNNKIT_DATA``, else the user cache folder of this
    platform (``~/.cache/vrnnkit/data`` on Linux)."""
    chosen = os.environ.get(DATA_ENV)
    if chosen:
        return Path(chosen).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("vrnnkit", appauthor=False)) / "data"


def get_dataset(name: str) -> Dataset:
    """The data set called ``name``; an unknown name lists the known ones."""
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r} to download; known: {', '.join(DATASETS)}")
    return DATASETS[name]

"""One registry for every kind of block: a name maps to a builder.

    @register("decoder", "my-decoder")
    class MyDecoder(nn.Module): ...

    build("decoder", "my-decoder", latent_dim=..., h_dim=..., frame_shape=..., params_per_element=...)
    list_blocks("decoder")

Other packages add blocks without touching vrnnkit through the entry-point group
``vrnnkit.blocks``: each entry point names a module (importing it runs its ``@register`` lines)
or a function that is called with no arguments. Entry points are loaded once, on the first
look-up, so importing vrnnkit stays cheap and a plug-in never has to be imported by hand.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

from vrnnkit.errors import RegistryError

KINDS = ("encoder", "decoder", "prior", "posterior", "rnn", "likelihood")
ENTRY_POINT_GROUP = "vrnnkit.blocks"

_builders: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}
_plugins_loaded = False

T = TypeVar("T", bound=Callable[..., Any])


def _check_kind(kind: str) -> None:
    if kind not in _builders:
        raise RegistryError(f"unknown block kind {kind!r}; the kinds are: {', '.join(KINDS)}")


def register(kind: str, name: str, *, override: bool = False) -> Callable[[T], T]:
    """Decorator that registers a class or function building a block of ``kind`` as ``name``.

    Registering a taken name is an error unless ``override=True``, so two packages cannot
    silently replace each other's blocks.
    """
    _check_kind(kind)
    if not name or not isinstance(name, str):
        raise RegistryError(f"a {kind} block needs a non-empty string name, got {name!r}")

    def decorator(builder: T) -> T:
        existing = _builders[kind].get(name)
        if existing is not None and existing is not builder and not override:
            raise RegistryError(
                f"{kind} block {name!r} is already registered (by {_describe(existing)}); "
                "pass override=True to replace it"
            )
        _builders[kind][name] = builder
        return builder

    return decorator


def _describe(builder: Callable[..., Any]) -> str:
    return f"{getattr(builder, '__module__', '?')}.{getattr(builder, '__qualname__', builder)}"


def load_plugins(*, force: bool = False) -> None:
    """Import the blocks that other packages declare under the ``vrnnkit.blocks`` entry points.

    Called automatically on the first look-up. A plug-in that fails to load is reported with a
    warning and skipped: one broken package must not make vrnnkit unusable.
    """
    global _plugins_loaded
    if _plugins_loaded and not force:
        return
    _plugins_loaded = True
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
            if callable(loaded):
                loaded()
        except Exception as error:  # a plug-in's own bug, reported but not fatal
            warnings.warn(
                f"vrnnkit could not load block plug-in {entry_point.name!r} "
                f"({entry_point.value}): {type(error).__name__}: {error}",
                RuntimeWarning,
                stacklevel=2,
            )


def get_builder(kind: str, name: str) -> Callable[..., Any]:
    """The builder registered for ``kind``/``name``; an unknown name lists the known ones."""
    _check_kind(kind)
    load_plugins()
    try:
        return _builders[kind][name]
    except KeyError:
        known = sorted(_builders[kind])
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise RegistryError(
            f"unknown {kind} block {name!r}.{hint} Registered {kind} blocks: {', '.join(known)}"
        ) from None


def build(kind: str, name: str, **options: Any) -> Any:
    """Build the block registered as ``kind``/``name`` with keyword ``options``."""
    return get_builder(kind, name)(**options)


def list_blocks(kind: str | None = None) -> list[str] | dict[str, list[str]]:
    """Sorted names registered for ``kind``, or a dict of every kind's names when kind is None."""
    load_plugins()
    if kind is None:
        return {k: sorted(names) for k, names in _builders.items()}
    _check_kind(kind)
    return sorted(_builders[kind])


def is_registered(kind: str, name: str) -> bool:
    """Whether ``name`` is a registered block of ``kind``."""
    _check_kind(kind)
    load_plugins()
    return name in _builders[kind]


def unregister(kind: str, name: str) -> None:
    """Remove a registration (for tests and for plug-ins that replace their own blocks)."""
    _check_kind(kind)
    _builders[kind].pop(name, None)

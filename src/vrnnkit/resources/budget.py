"""Memory estimates made before anything large is allocated, against the memory the OS says is free.

    require_memory(needed, "3 frames of 12000x12000", DataError)   # raises when it cannot fit

Available memory is read from the OS, smallest figure wins:

- Linux: ``MemAvailable`` of ``/proc/meminfo``; a cgroup v2 limit (``memory.max`` minus
  ``memory.current``, as in a container); macOS and others: ``os.sysconf`` free pages, or
  the physical memory where the OS keeps no free-page count.
- A soft ``RLIMIT_AS`` (``ulimit -v``) less what the process has mapped already.

``VRNNKIT_MEMORY`` overrides it all: a size (``64G``, ``512M``, ``2000000000``) to assume
instead, or ``off`` to skip the checks (the ``--force`` of ``vrnnkit train`` sets ``off``).
The estimates are lower bounds of what an allocation will take, so a refusal is never a guess
that the work might not fit: it cannot.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

try:
    import resource
except ImportError:  # pragma: no cover (Windows)
    resource = None  # type: ignore[assignment]

from vrnnkit.errors import ConfigError, VRNNKitError

MEMORY_ENV = "VRNNKIT_MEMORY"
"""Environment variable: the memory (bytes, or 64G / 512M) vrnnkit assumes it may use; ``off`` skips every check."""
OVERRIDE_HINT = (f"if it does fit, set {MEMORY_ENV}=off to skip this check (vrnnkit train: --force), "
                 f"or {MEMORY_ENV}=64G, say, for the memory to assume")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)i?[bB]?\s*")
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def format_bytes(count: float) -> str:
    """``1.5e9`` -> ``"1.4 GiB"``: a byte count for people."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:,.1f} {unit}"
    return f"{int(count)} bytes"


def parse_bytes(text: str) -> int:
    """``"64G"`` -> ``68719476736``; a plain number is bytes."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ConfigError(f"{MEMORY_ENV}={text!r}: expected a size such as 64G, 512M or a number of bytes, or off")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def checks_enabled() -> bool:
    """False when ``VRNNKIT_MEMORY=off`` (or ``--force``) turns the memory checks off."""
    return os.environ.get(MEMORY_ENV, "").strip().lower() not in ("off", "0", "no", "false")


def available_memory() -> int | None:
    """Bytes this process may still allocate, as the OS tells (see the module's notes), or
    None when the checks are off or nothing can be read."""
    setting = os.environ.get(MEMORY_ENV, "").strip()
    if not checks_enabled():
        return None
    if setting:
        return parse_bytes(setting)
    figures = [figure for figure in (_meminfo(), _cgroup(), _sysconf(), _address_space()) if figure is not None]
    return max(0, min(figures)) if figures else None


def require_memory(
    needed: int, what: str, error: type[VRNNKitError] = ConfigError, *, purpose: str = "", fix: str = "",
    available: int | None = None, floor: bool = False,
) -> None:
    """Raise ``error`` when ``needed`` bytes exceed the memory available (``available``, or
    as the OS tells): "``what`` needs 160 GiB ``purpose``; this machine has 23 GiB available";
    ``fix`` suggests a smaller choice; ``floor``: ``needed`` is a lower bound ("needs at least")."""
    if not checks_enabled():
        return
    available = available_memory() if available is None else available
    if available is None or needed <= available:
        return
    purpose = f" {purpose}" if purpose else ""
    advice = f"; {fix}" if fix else ""
    raise error(
        f"{what} needs {'at least ' if floor else ''}{format_bytes(needed)}{purpose}; this machine has "
        f"{format_bytes(available)} available{advice}; {OVERRIDE_HINT}"
    )


_OUT_OF_MEMORY = re.compile(
    r"out of memory|can't allocate memory|cannot allocate memory|not enough memory|unable to allocate|"
    r"DefaultCPUAllocator|failed to allocate",
    re.IGNORECASE,
)


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says an allocation failed: ``MemoryError`` (numpy's ``_ArrayMemoryError``
    too), or a ``RuntimeError`` of PyTorch's allocators (CPU, CUDA, MPS)."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    return isinstance(error, RuntimeError) and bool(_OUT_OF_MEMORY.search(str(error)))


def memory_message(error: BaseException) -> str:
    """One line for a failed allocation: what the allocator said, and what to do."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = lines[0] if lines else type(error).__name__
    said = re.sub(r"^\[enforce fail at [^\]]*\]\s*(err == 0\.\s*)?", "", said)
    if len(said) > 200:
        said = said[:197] + "..."
    return (f"out of memory ({said}); choose smaller sizes (--h-dim, --batch-size, --seq-len, --size, "
            "--num-sequences) or free memory; --debug shows where it happened")


def _meminfo() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text(encoding="ascii")
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(match[1]) * 1024 if match else None


def _cgroup() -> int | None:
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text(encoding="ascii").strip()
        if limit == "max":
            return None
        return int(limit) - int((root / "memory.current").read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _sysconf() -> int | None:
    if Path("/proc/meminfo").exists():
        return None  # Linux: MemAvailable counts the page cache that can be freed; free pages do not
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        pages = os.sysconf("SC_AVPHYS_PAGES") if "SC_AVPHYS_PAGES" in os.sysconf_names else os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return None
    return page * pages if page > 0 and pages > 0 else None


def _address_space() -> int | None:
    if resource is None:  # pragma: no cover
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    return soft - _mapped()


def _mapped() -> int:
    """Bytes of address space this process has mapped (VmSize), 0 where the OS does not say."""
    try:
        text = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return 0
    match = re.search(r"^VmSize:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(match[1]) * 1024 if match else 0

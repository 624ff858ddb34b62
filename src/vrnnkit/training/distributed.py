"""The training processes: who this one is, the process group, and the few collectives the
loop needs (all on small tensors, no pickle).

One caller owns the process group: ``process_group`` joins the group ``torchrun`` describes
and leaves it on the way out, unless the group was there already (then its creator owns it).
Either way every process leaves the same way: the processes meet at a last barrier, then the
owner destroys the group, which ends gloo's threads while the interpreter is whole.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from vrnnkit.errors import TrainingError
from vrnnkit.io.atomic import write_json

if dist.is_available():
    # DistributedDataParallel imports this module on first use. Imported after the group is
    # made, its functions' default arguments (group=group.WORLD) keep the default group alive
    # for the life of the interpreter: destroy_process_group then leaves gloo's worker threads
    # running, and one that lets go of a tensor while the interpreter shuts down aborts the
    # process (SIGABRT, "terminate called without an active exception"). Imported first, the
    # defaults are None.
    import torch.distributed.nn.functional


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one, or those ``torchrun`` started)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_world() -> World:
    """The world as ``torch.distributed`` or ``torchrun``'s environment describes it."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def process_group(device_name: str) -> Iterator[World]:
    """Join the process group that ``torchrun`` describes in the environment, if any, for the
    duration of the block: gloo on the CPU, nccl on CUDA. A group that exists already is used
    and left to its creator. On the way out, normally or on an error, the processes meet at a
    last barrier (``VRNNKIT_DDP_TIMEOUT``, or ``PARTING_TIMEOUT`` on an error) before the
    group they made here is destroyed."""
    world = current_world()
    if not world.distributed:
        yield world
        return
    if dist.is_available() and dist.is_initialized():
        with _leaving(owned=False):
            yield world
        return
    if not dist.is_available():
        raise TrainingError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    wants_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    backend = "nccl" if wants_cuda else "gloo"
    if backend == "nccl" and world.local_rank < torch.cuda.device_count():
        torch.cuda.set_device(world.local_rank)  # before any collective: one GPU per process
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=collective_timeout()))
    except (RuntimeError, ValueError) as error:
        raise TrainingError(f"could not join the {world.size} training processes over {backend}: {error}") from None
    with _leaving(owned=True):
        yield current_world()


PARTING_TIMEOUT = 10.0
"""Seconds a process that is stopping on an error waits at the last barrier: the others may
be gone or stuck, and its own error is what matters."""


@contextlib.contextmanager
def _leaving(*, owned: bool) -> Iterator[None]:
    """Leave the block the same way in every process, however the block ends: a last barrier
    (all processes have finished with the group), then, where this block made the group,
    ``destroy_process_group``."""
    try:
        yield
    except BaseException as error:
        _clear_frames(error)
        # The error that ended the block is the one to report.
        with contextlib.suppress(RuntimeError):
            _last_barrier(PARTING_TIMEOUT)
        with contextlib.suppress(RuntimeError):
            _release(owned)
        raise
    try:
        _last_barrier(collective_timeout())
    except RuntimeError as error:
        # The run had finished in this process: a process lost now is a warning, not a failure.
        warnings.warn(f"process {dist.get_rank()} finished, but the others did not all reach the end "
                      f"({_first_line(error)})", stacklevel=2)
    _release(owned)


def _last_barrier(timeout: float) -> None:
    """Wait up to ``timeout`` seconds for every process to arrive, so that none destroys the
    group while another still uses it; RuntimeError when one does not."""
    backend = dist.get_backend()
    if backend == "gloo":
        # gloo's plain barrier would stay on a worker thread after a timeout, and
        # destroy_process_group would wait for it.
        dist.monitored_barrier(timeout=timedelta(seconds=timeout))
    else:
        devices = [torch.cuda.current_device()] if backend == "nccl" else None
        dist.barrier(async_op=True, device_ids=devices).wait(timedelta(seconds=timeout))


def _clear_frames(error: BaseException) -> None:
    """Clear the finished frames of ``error``'s tracebacks (its causes' too): they hold the DDP
    wrapper, whose reducer holds the process group."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is not None and id(current) not in seen:
            seen.add(id(current))
            traceback.clear_frames(current.__traceback__)
            pending += [current.__cause__, current.__context__]


def _release(owned: bool) -> None:
    """Drop what still holds the group (a DDP wrapper in a reference cycle) and, where this
    process made the group, destroy it: that joins gloo's threads now, not at interpreter exit."""
    gc.collect()
    if owned:
        dist.destroy_process_group()


FINISHED_ENV = "VRNNKIT_FINISHED_NOTE"
"""Set by ``vrnnkit train --nproc`` for its processes: a file where rank 0 notes that the run
finished with its final state saved, for the launcher to tell a process that dies after that
from one that dies during the run."""


def note_finished(step: int, world: World) -> None:
    """Rank 0, after the run ended with its final state saved: the note of ``FINISHED_ENV``."""
    path = os.environ.get(FINISHED_ENV)
    if path and world.is_main:
        write_json(path, {"step": step})


def finished_step(path: str | os.PathLike[str]) -> int | None:
    """The step of the note at ``path``, or None where there is none (the run did not finish)."""
    try:
        step = json.loads(Path(path).read_text(encoding="utf-8"))["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if isinstance(step, int) else None


TIMEOUT_ENV = "VRNNKIT_DDP_TIMEOUT"
"""Environment variable: seconds a collective waits for the other processes (default 300)."""
DEFAULT_TIMEOUT = 300


def collective_timeout() -> float:
    """How long (seconds) a process waits in a collective for the others before it gives up:
    ``VRNNKIT_DDP_TIMEOUT``, 5 minutes by default; a process that died is usually noticed at
    once (its connections close), a hung one after this long."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise TrainingError(f"{TIMEOUT_ENV}={text!r}: expected a number of seconds > 0")
    return value


def lost_process(error: RuntimeError, run_dir: object, world: World) -> TrainingError:
    """What a process says when a collective fails because another process is gone."""
    return TrainingError(
        f"process {world.rank} lost contact with the other training processes ({_first_line(error)}); one of them stopped or "
        f"hung for {collective_timeout():g} s ({TIMEOUT_ENV}); continue from the last save with: "
        f"vrnnkit train --resume {run_dir} --nproc {world.size}"
    )


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:200]


def require_group(world: World) -> None:
    """Several processes train together only inside a process group."""
    if world.distributed and not (dist.is_available() and dist.is_initialized()):
        raise TrainingError(
            f"WORLD_SIZE is {world.size} but no process group is set up: train through vrnnkit.train, "
            "or inside vrnnkit.training.process_group"
        )


def resolve_device(name: str, world: World | None = None) -> torch.device:
    """The torch device for ``auto``/``cpu``/``cuda``/``mps``, or a one-line reason it is absent.

    Under ``torchrun`` each process takes the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA GPU is available to this PyTorch build on this machine")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise TrainingError("--device mps: Apple's Metal backend is not available on this machine")
    if name == "cuda" and world is not None and world.distributed:
        if world.local_rank >= torch.cuda.device_count():
            raise TrainingError(
                f"process {world.rank} has local rank {world.local_rank} but this machine has "
                f"{torch.cuda.device_count()} GPUs; start at most one process per GPU"
            )
        name = f"cuda:{world.local_rank}"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def broadcast_text(text: str, world: World) -> str:
    """Rank 0's ``text`` on every rank (a run folder name, say): bytes in a tensor, no pickle."""
    if not world.distributed:
        return text
    data = torch.zeros(1024, dtype=torch.uint8, device=_collective_device())
    encoded = text.encode("utf-8")[:1023]
    if world.is_main:
        data[: len(encoded)] = torch.tensor(list(encoded), dtype=torch.uint8)
    dist.broadcast(data, src=0)
    return bytes(data.cpu().tolist()).rstrip(b"\0").decode("utf-8")


def _collective_device() -> torch.device:
    """Where tensors for collectives live: this process's GPU under nccl, the CPU under gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when ``flag`` is true on any."""
    if not world.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_states(state: torch.Tensor, world: World) -> list[torch.Tensor]:
    """Every rank's random-generator state, on every rank (the checkpoint keeps them all)."""
    if not world.distributed:
        return [state]
    on = _collective_device()
    gathered = [torch.empty_like(state, device=on) for _ in range(world.size)]
    dist.all_gather(gathered, state.to(on))
    return [g.cpu() for g in gathered]


def noise_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s latent noise: each process draws other noise, all from the run's seed."""
    return seed + 1 + 1_000_003 * rank

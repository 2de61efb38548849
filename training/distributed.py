"""Who this process is among the training ranks, and the few collectives the training loop needs.

`torchrun` starts one process per rank and sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE;
`process_group()` reads them, joins the group (nccl on CUDA, else gloo) and yields a `Ranks`. A plain
`python -m training train` is the world of one, `Ranks()`, and every collective is then a no-op, so
the single-process loop is the distributed loop with nothing to talk to.

Data parallelism splits each global batch, never changes it: rank r of N takes rows
[B·r/N, B·(r+1)/N) of the B rows every rank draws identically from the shared seed (the way
DistributedSampler shards one seeded permutation), and cuts them into micro-batches when a rank
may compute fewer rows at once. Losses are scaled so that the gradients summed over ranks and
micro-batches are exactly the gradient of the recipe's batch.

Two timeouts: `peer_timeout` bounds every collective of the loop, so a rank that hangs ends the run;
`solo_timeout` bounds the waits on work rank 0 does alone (training a tokenizer, reading a checkpoint).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

DEFAULT_PEER_TIMEOUT_S = 120.0
DEFAULT_SOLO_TIMEOUT_S = 1800.0
T = TypeVar("T")


class PeerLost(RuntimeError):
    """A collective failed: another rank died, hung past the timeout, or raised."""


def pick_device(local_rank: int, wanted: str = "auto") -> torch.device:
    """`cuda:<local_rank>` when CUDA is present (or asked for), else the CPU."""
    if wanted == "cpu" or (wanted == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def rank_rows(total: int, rank: int, world_size: int) -> range:
    """Rank `rank`'s contiguous share of `total` rows; shares differ by at most one row."""
    return range(total * rank // world_size, total * (rank + 1) // world_size)


def micro_batches(rows: range, micro_batch_size: int) -> list[range]:
    """`rows` cut into the fewest near-equal micro-batches of at most `micro_batch_size` (0: one)."""
    count = 1 if micro_batch_size <= 0 else max(1, -(-len(rows) // micro_batch_size))
    return [
        range(rows.start + len(rows) * index // count, rows.start + len(rows) * (index + 1) // count)
        for index in range(count)
    ]


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks; its collectives do nothing in a world of one."""

    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    peer_timeout_s: float = DEFAULT_PEER_TIMEOUT_S
    # gloo groups for Python objects: `objects` waits peer_timeout_s, `patient` solo_timeout_s.
    objects: Any = None
    patient: Any = None

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run folder and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def rows(self, total: int, micro_batch_size: int = 0) -> list[range]:
        """This rank's micro-batches of a global batch of `total` rows."""
        return micro_batches(rank_rows(total, self.rank, self.world_size), micro_batch_size)

    def check_can_share(self, total: int, what: str) -> None:
        """Fail fast when some rank would get no row of the global batch: the world is too large."""
        if total < self.world_size:
            raise ValueError(
                f"{self.world_size} ranks cannot share a global batch of {total} {what}: every rank "
                f"needs at least one; run at most {total} ranks or raise batch_size"
            )

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks, in float64 (identical on every rank)."""
        if not self.distributed:
            return [float(value) for value in values]
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        with self.talking("summing across ranks"):
            dist.all_reduce(tensor)
        return tensor.tolist()

    def from_main(self, work: Callable[[], T]) -> T:
        """Run `work` on rank 0 alone and hand every rank its result, or its error: a bad recipe or a
        missing checkpoint then fails every rank at once instead of leaving them waiting."""
        if not self.distributed:
            return work()
        result: Any = None
        failure = ""
        if self.is_main:
            try:
                result = work()
            except Exception as error:
                failure = f"{type(error).__name__}: {error}"
                self.broadcast((None, failure), patient=True)
                raise
        result, failure = self.broadcast((result, failure), patient=True)
        if failure:
            raise RuntimeError(f"rank 0 failed, so rank {self.rank} stops too: {failure}")
        return result

    def broadcast(self, value: T, patient: bool = False) -> T:
        """Rank 0's `value` on every rank; `patient` waits solo_timeout_s for rank 0's solo work."""
        if not self.distributed:
            return value
        box = [value]
        with self.talking("waiting for rank 0"):
            dist.broadcast_object_list(box, src=0, group=self.patient if patient else self.objects)
        return box[0]

    def gather(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        with self.talking("gathering from every rank"):
            dist.all_gather_object(gathered, value, group=self.objects)
        return gathered

    def wait_for_all(self) -> None:
        """Line the ranks up (patiently) before a phase with short timeouts starts."""
        if self.distributed:
            with self.talking("waiting for every rank"):
                dist.barrier(group=self.patient)

    def share_weights(self, model: nn.Module) -> None:
        """Copy rank 0's weights into every rank's `model` in place."""
        if not self.distributed:
            return
        with self.talking("receiving rank 0's weights"), torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)

    @contextmanager
    def talking(self, doing: str) -> Iterator[None]:
        """Turn a failed collective into `PeerLost`, naming the ranks that no longer answer."""
        try:
            yield
        except (RuntimeError, dist.DistError) as error:
            if not self.distributed or isinstance(error, PeerLost):
                raise
            raise PeerLost(
                f"rank {self.rank} of {self.world_size}: {doing} failed; {self._silent_ranks()} "
                f"(cause: {str(error).strip()[:240]})"
            ) from error

    def _silent_ranks(self) -> str:
        """Ask every rank to check in (gloo's monitored barrier): rank 0 learns which ones are gone."""
        try:
            dist.monitored_barrier(
                group=self.patient,
                timeout=timedelta(seconds=min(10.0, self.peer_timeout_s)),
                wait_all_ranks=True,
            )
        except RuntimeError as error:
            text = str(error).strip().splitlines()[0][:240]
            return f"a rank died, raised, or hung past the {self.peer_timeout_s:.0f} s timeout ({text})"
        return "every rank still answers, so one raised an error (see its message)"


def wrap_for_training(model: nn.Module, ranks: Ranks, every_parameter_trained: bool) -> nn.Module:
    """The module the loop calls: DistributedDataParallel over `model` when there are several ranks.

    DDP broadcasts rank 0's weights as it is built, so every rank starts from the same model. Buffers
    are not re-broadcast each step: the models keep only constant tables (rotary, positions).
    """
    if not ranks.distributed:
        return model
    device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=device_ids,
        forward_sync_buffers=False,
        find_unused_parameters=not every_parameter_trained,
    )


@contextmanager
def process_group(
    device: str = "auto",
    peer_timeout_s: float = DEFAULT_PEER_TIMEOUT_S,
    solo_timeout_s: float = DEFAULT_SOLO_TIMEOUT_S,
) -> Iterator[Ranks]:
    """Join the ranks torchrun started (a world of one without torchrun) and leave cleanly after."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(local_rank, device)
    if world_size <= 1:
        yield Ranks(device=chosen, peer_timeout_s=peer_timeout_s)
        return
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    dist.init_process_group(
        backend,
        timeout=timedelta(seconds=peer_timeout_s),
        device_id=chosen if chosen.type == "cuda" else None,
    )
    try:
        peer_wait = timedelta(seconds=peer_timeout_s)
        objects = dist.group.WORLD if backend == "gloo" else dist.new_group(backend="gloo", timeout=peer_wait)
        patient = dist.new_group(backend="gloo", timeout=timedelta(seconds=solo_timeout_s))
        yield Ranks(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
            device=chosen,
            peer_timeout_s=peer_timeout_s,
            objects=objects,
            patient=patient,
        )
    except BaseException:
        raise  # no orderly teardown: it would wait on the very peers that failed
    else:
        dist.destroy_process_group()

"""Warm training workers: Ray actors kept between fits that reserve no CPUs or GPUs between them.

A fit reserves its workers' CPUs with a placement group (Ray picks the nodes and waits for free CPUs,
as it does for Ray Train), then leases one idle worker per bundle, on the bundle's node, from the
pool: a named, detached actor that every process of the cluster finds (in the pipeline the fit runs
inside a Ray task). The worker trains with the bundle's thread count; when the fit ends the group is
removed, so the CPUs are free at once for the pipeline's other tasks, while the worker process keeps
its imports (xgboost, lightgbm) for the next fit. Workers idle for longer than TRAINFLOW_POOL_IDLE_S
seconds (default 300) are stopped, and the pool itself once it has none.

GPU fits run on workers made for the fit inside the group: Ray then gives each its own GPU and sets
CUDA_VISIBLE_DEVICES, which it cannot do for a process that already exists.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from trainflow.errors import ResourceError
from trainflow.waiting import bounded_get

POOL_PREFIX = "trainflow-worker-pool"
NAMESPACE = "trainflow"
IDLE_ENV = "TRAINFLOW_POOL_IDLE_S"
DEFAULT_IDLE_S = 300.0
_LEASE_TIMEOUT_S = 60.0  # pool calls and worker address probes are quick; this only bounds a broken cluster


def idle_timeout_s() -> float:
    raw = os.environ.get(IDLE_ENV)
    try:
        value = float(raw) if raw else DEFAULT_IDLE_S
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ResourceError(f"{IDLE_ENV}={raw!r} is invalid: use a number of seconds > 0.")
    return value


@dataclass(frozen=True)
class WorkerAddress:
    """Where a worker is: its node's IP, a port that was free there a moment ago, its process id."""

    ip: str
    port: int
    pid: int


class TrainWorker:
    """One training process. `run` executes a function in it; the function's imports stay loaded."""

    def address(self) -> WorkerAddress:
        import ray

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        return WorkerAddress(ray.util.get_node_ip_address(), port, os.getpid())

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


@functools.cache
def _worker_cls():
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(TrainWorker)


@functools.cache
def _pool_cls():
    import ray

    @ray.remote(num_cpus=0, max_restarts=0)
    class _Pool:
        """Idle and leased workers by node. An async actor: one call at a time runs its bookkeeping."""

        def __init__(self, idle_s: float):
            self._idle_s = idle_s
            self._slots: dict[int, dict] = {}
            self._next = 0
            self._last_use = _now()
            self._reaper = None

        async def acquire(self, node_ids: list[str], owner: list[Any]) -> list[tuple[int, Any]]:
            """One worker per entry of `node_ids`, on that node: (slot, handle). `owner` holds
            an object the leasing process owns: when that process dies, its lease is void."""
            self._start_reaper()
            self._last_use = _now()
            taken = []
            for node in node_ids:
                slot = next((s for s in self._slots.values() if not s["busy"] and s["node"] == node), None)
                if slot is None:
                    handle = _new_worker(node)
                    self._next += 1
                    slot = self._slots[self._next] = {"id": self._next, "node": node, "handle": handle}
                slot["busy"], slot["since"], slot["owner"] = True, _now(), owner[0]
                taken.append((slot["id"], slot["handle"]))
            return taken

        async def prewarm(self, node_id: str, count: int) -> None:
            """At least `count` workers on `node_id`, starting now (idle until a fit leases them)."""
            self._start_reaper()
            self._last_use = _now()
            have = sum(1 for s in self._slots.values() if s["node"] == node_id)
            for _ in range(count - have):
                self._next += 1
                self._slots[self._next] = {"id": self._next, "node": node_id, "handle": _new_worker(node_id),
                                           "busy": False, "since": _now(), "owner": None}

        async def release(self, slot_ids: list[int], discard: list[int]) -> None:
            """Leased workers back to idle; those in `discard` (lost, or stopped mid-fit) are killed."""
            self._last_use = _now()
            for slot_id in slot_ids:
                slot = self._slots.get(slot_id)
                if slot is None:
                    continue
                if slot_id in discard:
                    del self._slots[slot_id]
                    _kill(slot["handle"])
                else:
                    slot["busy"], slot["since"], slot["owner"] = False, _now(), None

        async def stats(self) -> dict[str, int]:
            busy = sum(1 for s in self._slots.values() if s["busy"])
            return {"workers": len(self._slots), "busy": busy, "idle": len(self._slots) - busy,
                    "nodes": len({s["node"] for s in self._slots.values()})}

        def _start_reaper(self) -> None:
            import asyncio

            if self._reaper is None:
                self._reaper = asyncio.get_running_loop().create_task(self._reap())

        async def _reap(self) -> None:
            import asyncio

            while True:
                await asyncio.sleep(min(self._idle_s, 10.0))
                now = _now()
                for slot_id, slot in list(self._slots.items()):
                    if now - slot["since"] <= self._idle_s:
                        continue
                    owner = slot.get("owner") if slot["busy"] else None
                    if owner is not None and await _owner_alive(owner):
                        continue  # a long fit
                    if self._slots.get(slot_id) is not slot or slot.get("owner") is not owner:
                        continue  # released or leased again while the owner was checked
                    # idle for long, or leased by a process that died without giving it back
                    self._slots.pop(slot_id, None)
                    _kill(slot["handle"])
                if not self._slots and now - self._last_use > self._idle_s:
                    _kill(ray.get_runtime_context().current_actor)  # detached: nothing else ends it
                    return

    return _Pool


def _new_worker(node_id: str) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return _worker_cls().options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                                 runtime_env={"env_vars": _thread_env(node_id)}).remote()


def _thread_env(node_id: str) -> dict[str, str]:
    """OpenMP's default team size for a worker on `node_id`: the node's CPUs.

    Ray gives a process that reserves no CPU OMP_NUM_THREADS=1, and XGBoost's OpenMP loops then
    run on one thread whatever `nthread` asks (measured: boosting took 1.7x plain's time on 2 CPUs).
    Each fit still sets its own thread count (nthread, num_threads) from its placement.
    """
    import ray

    cpus = next((n["Resources"].get("CPU", 1) for n in ray.nodes() if n["NodeID"] == node_id), 1)
    return {"OMP_NUM_THREADS": str(max(1, int(cpus)))}


async def _owner_alive(token: Any) -> bool:
    """Whether the process that leased a worker still lives: Ray loses an object with its owner."""
    import asyncio

    from ray.exceptions import ObjectLostError, OwnerDiedError

    try:
        await asyncio.wait_for(token, timeout=5.0)
    except (OwnerDiedError, ObjectLostError):
        return False
    except Exception:  # noqa: BLE001 - cannot tell (a slow GCS): keep the lease
        return True
    return True


def _now() -> float:
    import time

    return time.monotonic()


def _kill(handle: Any) -> None:
    import ray

    with contextlib.suppress(Exception):
        ray.kill(handle, no_restart=True)


def pool_name() -> str:
    """One pool per Ray job: a later job (other code, another runtime env) never gets these workers.
    Fits inside the job's tasks (the pipeline's RayTaskRunner) share it."""
    import ray

    return f"{POOL_PREFIX}-{ray.get_runtime_context().get_job_id()}"


def _pool():
    # On the head node: the pool owns every warm worker, which Ray ends with it, and the head going
    # is the cluster going.
    return _pool_cls().options(name=pool_name(), namespace=NAMESPACE, lifetime="detached",
                               get_if_exists=True, **on_head_node()).remote(idle_timeout_s())


def on_head_node() -> dict:
    """Options that put a helper actor taking no CPU on the head node, where losing a worker node
    cannot take it along (the pool, LightGBM's rendezvous).

    Hard affinity: with soft=True Ray put such an actor on a worker node 5 times in 8 when the head
    has no CPUs (measured on a 3-node test cluster), and a whole-node loss then took it with rank 0.
    A 0-CPU actor always fits the head; without a head in `ray.nodes()` Ray places it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    head = head_node()
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(head, soft=False)} if head else {}


def head_node() -> str | None:
    """The alive head node's id (None when Ray reports none)."""
    import ray

    return next((n["NodeID"] for n in ray.nodes()
                 if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {})), None)


def prewarm(num_workers: int, use_gpu: bool) -> None:
    """Start the workers a planned fit will lease, without waiting for them: their processes start
    while the pipeline goes on to the fit. Only where the placement is known in advance: CPU workers
    on a one-node cluster (with several nodes, the fit's placement group picks the nodes)."""
    import ray

    from trainflow.cluster import cluster_nodes

    if use_gpu or len(cluster_nodes()) != 1:
        return
    _pool().prewarm.remote(ray.get_runtime_context().get_node_id(), num_workers)


def pool_stats() -> dict[str, int]:
    """{"workers", "busy", "idle", "nodes"} of this cluster's pool (zeros when there is none)."""
    import ray

    try:
        handle = ray.get_actor(pool_name(), namespace=NAMESPACE)
    except ValueError:
        return {"workers": 0, "busy": 0, "idle": 0, "nodes": 0}
    return bounded_get(handle.stats.remote(), "the worker pool's statistics", _LEASE_TIMEOUT_S)


@dataclass
class Gang:
    """The workers of one fit attempt, in rank order, with where each one is."""

    workers: list[Any]
    addresses: list[WorkerAddress]

    def lose(self, ranks: list[int]) -> None:
        """Stop workers now and never reuse them: lost, or in the middle of a collective."""
        for rank in set(ranks) - self._lost:
            _kill(self.workers[rank])
        self._lost.update(ranks)

    def __post_init__(self) -> None:
        self._lost: set[int] = set()


_held: contextvars.ContextVar[Reservation | None] = contextvars.ContextVar("trainflow_held", default=None)


@contextlib.contextmanager
def holding(num_workers: int, cpus: int, use_gpu: bool, name: str) -> Iterator[Reservation]:
    """One reservation for a series of fits of this shape in this process (a search's trials):
    Ray frees a removed placement group's CPUs about a second later, so back-to-back fits that each
    reserved their own would wait that second every time. Fits of another shape reserve their own."""
    with reserve(num_workers, cpus, use_gpu, name) as reservation:
        token = _held.set(reservation)
        try:
            yield reservation
        finally:
            _held.reset(token)


@contextlib.contextmanager
def reserve(num_workers: int, cpus: int, use_gpu: bool, name: str) -> Iterator[Reservation]:
    """The CPUs/GPUs of one fit, held until the block ends (a placement group, PACK like Ray Train)."""
    from ray.util.placement_group import placement_group, remove_placement_group

    held = _held.get()
    if held is not None and (held.num_workers, held.cpus, held.use_gpu) == (num_workers, cpus, use_gpu):
        yield held
        return
    bundle = {"CPU": cpus, **({"GPU": 1} if use_gpu else {})}
    group = placement_group([dict(bundle) for _ in range(num_workers)], strategy="PACK",
                            name=f"trainflow-{name}-{uuid.uuid4().hex[:8]}")
    try:
        # Placement was checked against the cluster's totals, so this only waits for CPUs that other
        # work holds, as Ray Train would, up to the task timeout.
        _wait_placed(group, num_workers, cpus, use_gpu)
        yield Reservation(group, num_workers, cpus, use_gpu)
    finally:
        with contextlib.suppress(Exception):
            remove_placement_group(group)


class Reservation:
    """A fit's placement group; `gang()` puts one worker on each of its bundles."""

    def __init__(self, group: Any, num_workers: int, cpus: int, use_gpu: bool):
        self.group, self.num_workers, self.cpus, self.use_gpu = group, num_workers, cpus, use_gpu

    def nodes(self) -> list[str]:
        """The node of each bundle, in bundle (= rank) order."""
        from ray.util.placement_group import placement_group_table

        by_bundle = placement_group_table(self.group)["bundles_to_node_id"]
        return [by_bundle[i] for i in range(self.num_workers)]

    def settle(self, timeout_s: float = 60.0) -> None:
        """After a worker was lost: wait until each bundle's node answers or is known to be dead.
        Ray takes seconds to notice a dead node; a restart leased there meanwhile fails at once, and
        would use up the fit's restarts. Bounded: on a slow cluster the restart goes ahead anyway."""
        import time

        import ray
        from ray.exceptions import RayError
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = set(self.nodes())
        probe = ray.remote(num_cpus=0, max_retries=0)(_node_of_this_process)
        refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(): n
                for n in nodes}
        deadline = time.monotonic() + timeout_s
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        answered = set()
        for ref in ready:
            with contextlib.suppress(RayError):
                answered.add(ray.get(ref))
        doubtful = nodes - answered
        while doubtful & _alive_nodes() and time.monotonic() < deadline:
            time.sleep(0.2)  # Ray offers no event for "declared dead"

    @contextlib.contextmanager
    def gang(self) -> Iterator[Gang]:
        """Workers for one attempt; afterwards pool workers go back idle (or are killed if lost)."""
        if self.use_gpu:
            yield from self._own_gang()
            return
        import ray

        pool, slots, ranks = None, [], []
        gang = None
        try:
            _wait_placed(self.group, self.num_workers, self.cpus, self.use_gpu)  # after a lost node: placed anew
            nodes = self.nodes()
            pool = _pool()
            token = ray.put(None)  # owned by this process: the pool sees when it dies mid-lease
            try:
                taken = _acquire(pool, nodes, token)
            except lost_errors():  # the pool stopped itself (idle) between lookup and call
                pool = _pool()
                taken = _acquire(pool, nodes, token)
            slots = [slot for slot, _ in taken]
            ranks = list(slots)
            workers = [h for _, h in taken]
            addresses: list[WorkerAddress] = []
            for rank, worker in enumerate(workers):
                try:
                    addresses.append(_address(worker))
                except lost_errors():
                    # a warm worker that died while idle (OOM, node trouble): replaced by a new one
                    [(slot, worker)] = _acquire(pool, [nodes[rank]], token)
                    slots.append(slot)
                    ranks[rank], workers[rank] = slot, worker
                    addresses.append(_address(worker))
            gang = Gang(workers, addresses)
            yield gang
        finally:
            if pool is not None and slots:
                lost = {ranks[r] for r in (gang._lost if gang is not None else range(len(ranks)))}
                lost |= set(slots) - set(ranks)  # replaced dead ones
                # waited for: an async actor does not promise call order, so the caller's next
                # fit could otherwise be leased other workers (and lose their warm matrix)
                with contextlib.suppress(Exception):
                    bounded_get(pool.release.remote(slots, sorted(lost)), "the worker pool to take workers back",
                                _LEASE_TIMEOUT_S)

    def _own_gang(self) -> Iterator[Gang]:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        cls = _worker_cls()
        workers = [cls.options(num_cpus=self.cpus, num_gpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(
            self.group, placement_group_bundle_index=i)).remote() for i in range(self.num_workers)]
        try:
            yield Gang(workers, [_address(w) for w in workers])
        finally:
            for worker in workers:
                _kill(worker)


def _wait_placed(group: Any, num_workers: int, cpus: int, use_gpu: bool) -> None:
    import time

    from trainflow.waiting import TIMEOUT_ENV, task_timeout_s

    timeout = task_timeout_s()
    deadline = time.monotonic() + timeout
    if not (group.wait(timeout_seconds=timeout) and _on_alive_nodes(group, deadline)):
        raise ResourceError(
            f"Gave up after {timeout:g}s waiting for {num_workers} worker(s) with {cpus} CPU(s)"
            f"{' and 1 GPU' if use_gpu else ''} each: other work holds the cluster's CPUs (see `ray status`). "
            f"Free them, add nodes, or raise {TIMEOUT_ENV}."
        )


def _on_alive_nodes(group: Any, deadline: float) -> bool:
    """Whether every bundle is on an alive node, waiting until `deadline`. After a node is lost Ray
    moves its bundles elsewhere, but `wait()` answers from the first placement: the table tells."""
    import time

    from ray.util.placement_group import placement_group_table

    while True:
        table = placement_group_table(group)
        if table.get("state") == "CREATED" and set(table["bundles_to_node_id"].values()) <= _alive_nodes():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)  # Ray offers no event for "rescheduled"


def _alive_nodes() -> set[str]:
    import ray

    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


def _node_of_this_process() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _acquire(pool: Any, nodes: list[str], token: Any) -> list[tuple[int, Any]]:
    return bounded_get(pool.acquire.remote(nodes, [token]), "a lease from the worker pool", _LEASE_TIMEOUT_S)


def _address(worker: Any) -> WorkerAddress:
    # a new worker is a new process: bounded by the task timeout, not the short lease one
    return bounded_get(worker.address.remote(), "a training worker process to start")


def lost_errors() -> tuple[type[BaseException], ...]:
    """What Ray raises when a worker process (or the pool) is gone, or cannot start where its node was."""
    from ray.exceptions import ActorUnschedulableError, RayActorError

    return (RayActorError, ActorUnschedulableError)

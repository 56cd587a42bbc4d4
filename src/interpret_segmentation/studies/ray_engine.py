"""The Ray engine: a data-set run's workers as Ray actors, on this machine or a cluster.

Each actor builds the :class:`~interpret_segmentation.studies.work.Worker` of the run once
(the model and its explainers) and explains batches of items, streaming each item's
:class:`~interpret_segmentation.studies.work.ItemResult` back as soon as it is done; the
driver (:func:`~interpret_segmentation.studies.runner.run_items`) writes, so the output
directory is the one a local run writes, and the same seeds give the same maps.

Faults. An actor whose process dies (killed, out of memory, a crash in native code) is
restarted by Ray, and the items of its batches not yet back are sent again; the item it was
working on is tried at most ``1 + max_retries`` times, then gets error rows. Every death is
logged (``logging`` warning of this module). An exception escaping a worker for one item (a
data set whose item cannot be read) becomes error rows for that item, and the run goes on.

Needs the extra ``interpret-segmentation[ray]``. On a cluster every node needs this library
(and the modules the model's class lives in) installed, and the data set's files where the
source reads them.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace

from ..core.validate import check_int, check_number, check_positive

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'interpret-segmentation[ray]'"


class WorkerDiedError(RuntimeError):
    """The Ray worker died every time it tried an item (recorded in the item's error rows)."""


def import_ray():
    """The ``ray`` module, or ModuleNotFoundError saying how to install it."""
    try:
        import ray
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"engine 'ray' needs Ray, which is not installed: "
                                  f"{INSTALL_HINT}", name="ray") from error
    return ray


class RayWorker:
    """One actor's state: the run's worker (model and explainers, built on the first call
    and kept; again after Ray restarted the actor) and the source.

    Parameters
    ----------
    threads : int
        torch's intra-op threads in this actor (its CPUs, so that workers sharing a machine
        do not oversubscribe it).
    use_gpu : bool
        Move the model (an ``nn.Module``) to the GPU Ray gave the actor, unless the explainer
        options name a device.

    Every call takes ``shared``: a list of two ObjectRefs, the run's Work and its source
    (picklable; the actor reads its items itself), put in Ray's object store once.
    """

    def __init__(self, threads: int, use_gpu: bool):
        self.threads, self.use_gpu = threads, use_gpu
        self.worker = self.source = None

    def _build(self, shared: list) -> None:
        if self.worker is not None:
            return
        import ray
        import torch
        from torch import nn

        from .work import ModelBuilder, Worker

        torch.set_num_threads(self.threads)
        work, source = ray.get(shared)
        if self.use_gpu and torch.cuda.is_available() and "device" not in work.explainer_options:
            model = work.model.build() if isinstance(work.model, ModelBuilder) else work.model
            if isinstance(model, nn.Module):
                work = replace(work, model=model.to("cuda"))
        self.worker, self.source = Worker(work), source

    def ready(self, shared: list) -> int:
        """The actor's process id, once its worker is built."""
        self._build(shared)
        return os.getpid()

    def explain(self, shared: list, batch: list):
        """Yields the ItemResult of each (position, todo) of ``batch``, in order."""
        self._build(shared)
        for position, todo in batch:
            yield self.worker.explain(self.source, position, todo)


class RayEngine:
    """Runs a data set's items on ``workers`` Ray actors.

    Parameters
    ----------
    workers : int, default 1
        Actors, each with the model and explainers built once.
    address : str, optional
        None: join the Ray instance this process has already started, else start a local
        one (with as many CPUs as this machine, at least ``workers``); ``"auto"``, a
        ``"host:port"`` or ``"ray://host:port"``: join that cluster.
    gpus_per_worker : float, default 0.0
        GPUs Ray reserves for each actor (fractions share a GPU); with one, the model is run
        on it.
    items_per_batch : int, default 4
        Items per call to an actor (at most; fewer when the data set is too small to give
        every worker a batch). Each actor has up to two calls queued, so it never waits.
    cpus_per_worker : float, optional
        CPUs Ray reserves for each actor, and torch's threads in it (rounded down, at least
        1). Default: the CPUs of the cluster (a started one: of this machine) shared among
        the workers, at most one node's.
    max_retries : int, default 2
        Times an item is sent again after the actor explaining it died.

    ``stats`` holds, after a run, the seconds taken to start or join Ray and until each
    actor was ready, the actors' deaths and the items retried.
    """

    name = "ray"

    def __init__(self, workers: int = 1, address: str | None = None, gpus_per_worker: float = 0.0,
                 items_per_batch: int = 4, cpus_per_worker: float | None = None,
                 max_retries: int = 2):
        self.workers = check_positive(workers, "workers")
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(f"address: expected None, 'auto', 'host:port' or "
                             f"'ray://host:port', got {address!r}")
        self.address = address
        self.gpus_per_worker = check_number(gpus_per_worker, "gpus_per_worker", 0)
        self.items_per_batch = check_positive(items_per_batch, "items_per_batch")
        self.cpus_per_worker = (None if cpus_per_worker is None
                                else check_positive(cpus_per_worker, "cpus_per_worker", float))
        self.max_retries = check_int(max_retries, "max_retries", minimum=0)
        import_ray()
        self.stats: dict = {}

    def __repr__(self) -> str:
        return (f"RayEngine(workers={self.workers}, address={self.address!r}, "
                f"gpus_per_worker={self.gpus_per_worker}, items_per_batch={self.items_per_batch})")

    # -- the cluster ------------------------------------------------------------------------

    def _connect(self, ray) -> bool:
        """Start or join Ray; whether this call did (and so shuts it down afterwards)."""
        if ray.is_initialized():
            return False
        if self.address is None:
            cpus = max(self.workers, os.cpu_count() or 1)
            paths = _driver_paths()
            ray.init(num_cpus=cpus, include_dashboard=False,
                     runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}
                     if paths else None)
        else:
            ray.init(address=self.address)
        return True

    def _actor_cpus(self, ray) -> float:
        if self.cpus_per_worker is not None:
            return self.cpus_per_worker
        total = ray.cluster_resources().get("CPU", 1.0)
        largest = max((node.get("Resources", {}).get("CPU", 0.0) for node in ray.nodes()
                       if node.get("Alive")), default=total)
        share = total / self.workers
        return share if share < 1 else float(max(1, min(math.floor(share), largest)))

    def _check_gpus(self, ray, started: bool) -> None:
        if not self.gpus_per_worker:
            return
        largest = max((node.get("Resources", {}).get("GPU", 0.0) for node in ray.nodes()
                       if node.get("Alive")), default=0.0)
        if largest >= self.gpus_per_worker:
            return
        message = (f"gpus_per_worker: expected at most the {largest:g} GPUs of a Ray node, got "
                   f"{self.gpus_per_worker:g}")
        if started:
            raise ValueError(message)
        logger.warning("%s; the workers wait until the cluster has such a node", message)

    # -- the run ----------------------------------------------------------------------------

    def run(self, work, source, missing: dict[int, set]) -> Iterator:
        """Yield one ItemResult per position of ``missing`` as the actors finish them."""
        if not missing:
            return
        ray = import_ray()
        began = time.perf_counter()
        started = self._connect(ray)
        actors = []
        try:
            self.stats = {"cluster_seconds": time.perf_counter() - began, "ready_seconds": [],
                          "deaths": 0, "retried": []}
            self._check_gpus(ray, started)
            cpus = self._actor_cpus(ray)
            actor_class = ray.remote(num_cpus=cpus, num_gpus=self.gpus_per_worker,
                                     max_restarts=RESTARTS, max_task_retries=0)(RayWorker)
            # nested in a list, the refs reach the actors as refs: each gets them once
            shared = [ray.put(work), ray.put(source)]
            actors = [actor_class.remote(max(1, math.floor(cpus)), self.gpus_per_worker > 0)
                      for _ in range(self.workers)]
            schedule = _Schedule(ray, self, actors, shared, work, source.keys(), missing)
            yield from schedule.results()
        finally:
            for actor in actors:
                ray.kill(actor)
            if started:
                ray.shutdown()


RESTARTS = 10
"""Times Ray restarts an actor whose process died; one that dies more often is given up."""


@dataclass
class _Batch:
    """Positions sent to one actor in one call (``order``: the how-manieth call), ``left``:
    those not back yet."""

    actor: int
    left: list
    order: int


class _Schedule:
    """One run's batches on the actors: two calls queued per actor at most, results streamed
    back item by item, the items of a dead actor's calls sent again."""

    def __init__(self, ray, engine: RayEngine, actors, shared, work, keys, missing):
        self.ray, self.engine, self.actors, self.shared = ray, engine, actors, shared
        self.work, self.keys, self.missing = work, keys, missing
        positions = sorted(missing)
        size = max(1, min(engine.items_per_batch, math.ceil(len(positions) / len(actors))))
        self.queue = deque(positions[i:i + size] for i in range(0, len(positions), size))
        self.running: dict = {}  # the call's ObjectRefGenerator -> _Batch
        self.probes: dict = {}  # ready() ObjectRef -> actor index
        self.usable = set(range(len(actors)))  # started (or starting) and not restarting
        self.ready: set[int] = set()  # actors that have started once
        self.failures: dict[int, int] = {}  # position -> deaths while on it
        self.order = 0
        self.handled: dict[int, int] = {}  # actor -> calls before this order failed with a
        # death already handled
        self.created = time.perf_counter()
        for index in range(len(actors)):
            self._probe(index)

    def _probe(self, index: int) -> None:
        """Ask actor ``index`` whether it is up (waits while Ray restarts it)."""
        call = self.actors[index].ready.options(max_task_retries=-1).remote(self.shared)
        self.probes[call] = index

    def _fill(self) -> None:
        while self.queue and self.usable:
            load = {i: 0 for i in self.usable}
            for batch in self.running.values():
                if batch.actor in load:
                    load[batch.actor] += 1
            index = min(load, key=lambda i: (load[i], i))
            if load[index] >= 2:
                return
            left = self.queue.popleft()
            call = self.actors[index].explain.options(num_returns="streaming").remote(
                self.shared, [(position, self.missing[position]) for position in left])
            self.running[call] = _Batch(index, list(left), self.order)
            self.order += 1

    def _error_result(self, position: int, error: BaseException):
        from .work import error_result

        return error_result(self.work, self.keys[position], position, self.missing[position],
                             error)

    def results(self) -> Iterator:
        ray = self.ray
        self._fill()
        while self.running or self.queue:
            if not (self.running or self.probes):
                raise RuntimeError(f"all {len(self.actors)} Ray workers died for good; "
                                   f"{sum(map(len, self.queue))} items are not done (a rerun "
                                   "continues from what was written)")
            ready, _ = ray.wait([*self.probes, *self.running], num_returns=1)
            for handle in ready:
                if handle in self.probes:
                    self._probed(handle)
                    continue
                batch = self.running[handle]
                try:
                    result = ray.get(next(handle))
                except StopIteration:
                    del self.running[handle]
                except ray.exceptions.RayActorError as error:
                    yield from self._died(handle, batch, error)
                except ray.exceptions.RayTaskError as error:  # escaped the actor's own guard
                    del self.running[handle]
                    position = batch.left.pop(0)
                    logger.warning("Ray worker %d failed on item %s: %s", batch.actor,
                                   self.keys[position], error)
                    yield self._error_result(position, error)
                    if batch.left:
                        self.queue.appendleft(batch.left)
                else:
                    batch.left.remove(result.position)
                    yield result
                    continue
                self._fill()

    def _probed(self, handle) -> None:
        index = self.probes.pop(handle)
        try:
            self.ray.get(handle)
        except self.ray.exceptions.RayActorError:
            self.usable.discard(index)  # restarted too often, or its node is gone
            logger.warning("Ray worker %d is given up (it could not be restarted)", index)
            return
        except self.ray.exceptions.RayTaskError as error:
            raise RuntimeError(f"a Ray worker could not build the model and explainers: "
                               f"{error}") from error
        if index not in self.ready:  # first start (restarts are not counted)
            self.ready.add(index)
            self.engine.stats["ready_seconds"].append(time.perf_counter() - self.created)
        self.usable.add(index)
        self._fill()

    def _died(self, handle, batch: _Batch, error) -> Iterator:
        """Actor ``batch.actor`` died (or is restarting): send the items of ``batch`` not back
        yet again. At the first call failing with this death, the item the actor was working
        on (the first left in its oldest call) counts a failure: it is sent again alone, or,
        after ``max_retries`` retries, gets error rows."""
        index = batch.actor
        if batch.order >= self.handled.get(index, 0):  # the first call failing with this death
            self.handled[index] = self.order
            self.usable.discard(index)
            working = min((b for b in self.running.values() if b.actor == index and b.left),
                          key=lambda b: b.order, default=None)
            if working is not None:
                yield from self._blame(working, error)
            self._probe(index)
        del self.running[handle]
        if batch.left:
            self.queue.appendleft(batch.left)

    def _blame(self, working: _Batch, error) -> Iterator:
        engine, position = self.engine, working.left.pop(0)
        engine.stats["deaths"] += 1
        self.failures[position] = self.failures.get(position, 0) + 1
        said = " ".join(str(error).split())[:300]
        key, times = self.keys[position], self.failures[position]
        if times > engine.max_retries:
            logger.warning("Ray worker %d died while explaining item %s, for the %d. time "
                           "(%s); its error is recorded", working.actor, key, times, said)
            yield self._error_result(position, WorkerDiedError(
                f"the Ray worker died each of the {times} times it explained this item: "
                f"{said}"))
            return
        engine.stats["retried"].append(key)
        logger.warning("Ray worker %d died while explaining item %s (%s); the item is sent "
                       "again (attempt %d of %d), and the %d others of its batch not done",
                       working.actor, key, said, times + 1, engine.max_retries + 1,
                       len(working.left))
        self.queue.appendleft([position])


def _driver_paths() -> list[str]:
    """This process's import paths outside the Python installation (the script's directory,
    paths a program added), which workers of a Ray instance started here get too, so that
    they unpickle the model's class as this process would."""
    installed = {os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths = []
    for entry in sys.path:
        path = os.path.abspath(entry or os.getcwd())
        inside = any(path == p or path.startswith(p + os.sep) for p in installed)
        if os.path.isdir(path) and not inside and path not in paths:
            paths.append(path)
    return paths

"""Engines: where a data-set run's workers run. ``local`` (the default) in the calling
process; ``ray`` on a Ray cluster (:mod:`~interpret_segmentation.studies.ray_engine`, extra
``interpret-segmentation[ray]``).

An engine's :meth:`run` takes the :class:`~interpret_segmentation.studies.work.Work`, the
source and, per item position, the (run name, class) pairs still to do, and yields one
:class:`~interpret_segmentation.studies.work.ItemResult` per item as it finishes, in any
order. It never writes: the driver does.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..core.validate import check_positive

ENGINES = ("local", "ray")


class LocalEngine:
    """One worker in this process: the model is built once, the items run in order."""

    name = "local"

    def __init__(self):
        self._workers: dict[int, object] = {}

    def worker_for(self, work):
        """The :class:`~interpret_segmentation.studies.work.Worker` of ``work``, built on
        first use and kept (the driver reads the explainers' settings from it)."""
        from .work import Worker

        if id(work) not in self._workers:
            self._workers = {id(work): Worker(work)}
        return self._workers[id(work)]

    def run(self, work, source, missing: dict[int, set]) -> Iterator:
        if not missing:
            return
        worker = self.worker_for(work)
        for position in sorted(missing):
            yield worker.explain(source, position, missing[position])


def get_engine(name: str = "local", *, workers: int = 1, address: str | None = None,
               gpus_per_worker: float = 0.0, items_per_batch: int = 4):
    """The engine ``name`` with its settings; ValueError naming the argument otherwise.

    ``workers``, ``address``, ``gpus_per_worker`` and ``items_per_batch`` are the Ray
    engine's; the local engine runs one worker and takes only their defaults.
    """
    if name not in ENGINES:
        raise ValueError(f"engine: expected one of {', '.join(ENGINES)}, got {name!r}")
    check_positive(workers, "workers")
    check_positive(items_per_batch, "items_per_batch")
    if name == "local":
        if workers != 1 or address is not None or gpus_per_worker:
            raise ValueError("engine: the local engine runs one worker in this process; "
                             "--workers, --address and --gpus-per-worker need --engine ray")
        return LocalEngine()
    from .ray_engine import RayEngine

    return RayEngine(workers=workers, address=address, gpus_per_worker=gpus_per_worker,
                     items_per_batch=items_per_batch)

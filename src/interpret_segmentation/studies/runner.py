"""One runner for whole data sets: every (item, class, method run) explained, each finished
item written at once, a rerun continuing where a stopped one ended, on an engine.

What to do with each item is a :class:`~interpret_segmentation.studies.work.Work`; an engine
(:mod:`~interpret_segmentation.studies.engines`) runs its workers, here or on a Ray cluster,
and hands back one :class:`~interpret_segmentation.studies.work.ItemResult` per item; the
driver, :func:`run_items`, alone writes. :func:`explain_dataset` is the runner behind
``interpret-segmentation explain-dataset``; ``evaluate``, ``sweep`` and ``reliability`` run on
:func:`run_items` too, and every run's table is :func:`summarize_rows`'s.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

import numpy as np
from tqdm.auto import tqdm

from ..core.io import OutputDirectory, RowFile, atomic_write
from ..datasets.sources import safe_key
from .engines import get_engine
from .tables import summarize_rows, write_table
from .work import (
    ROW_FIELDS,
    ItemResult,
    Work,
    as_source,
    class_text,
    explanation_name,
    method_runs,
)


def _done(rows: RowFile, keys: list[str], pairs: set) -> dict[int, set]:
    """For each position, the (run name, class) pairs still missing (errors count as
    missing: a rerun tries them again)."""
    finished = {(row["item"], row["method"], row["class_index"]) for row in rows.rows
                if not row.get("error")}
    missing = {}
    for position, key in enumerate(keys):
        left = {pair for pair in pairs if (key, *pair) not in finished}
        if left:
            missing[position] = left
    return missing


def run_items(output: OutputDirectory, source, work: Work, engine, *, rows_name: str = "rows.csv",
              progress: bool = True, log=print) -> list[dict]:
    """Explain every item of ``source`` not yet in ``output``'s rows, on ``engine``; write
    each item's explanations (``items/<key>/<run>[_class<k>].npz`` + ``.json``) and image
    (``items/<key>/image.npy``, ``mask.npy``) and append its rows as soon as it is back.

    Returns the rows of ``source``'s items and ``work``'s runs, old and new.
    """
    keys = source.keys()
    pairs = {(run.name, class_text(c)) for run in work.runs for c in work.classes}
    with RowFile(output.file(rows_name), ROW_FIELDS) as rows:
        missing = _done(rows, keys, pairs)
        if len(missing) < len(keys):
            log(f"resuming: {len(keys) - len(missing)} of {len(keys)} items already done")
        bar = tqdm(total=len(keys), initial=len(keys) - len(missing), unit="item",
                   desc="explaining", disable=not progress, file=sys.stderr)
        errors = 0
        try:
            for result in engine.run(work, source, missing):
                _write_item(output, result, work.save_explanations)
                rows.append(*result.rows)
                errors += sum(1 for row in result.rows if row["error"])
                bar.update(1)
                log(f"item {result.item.key}: " + ", ".join(
                    f"{name} {explanation.timings['total']:.1f} s"
                    for name, _, explanation in result.explanations))
        finally:
            bar.close()
        if errors:
            log(f"{errors} explanations failed; their errors are in {rows_name} (a rerun "
                "tries them again)")
        names, wanted = {run.name for run in work.runs}, set(keys)
        return [row for row in rows.rows if row["item"] in wanted and row["method"] in names]


def _write_item(output: OutputDirectory, result: ItemResult, save_explanations: bool) -> None:
    """``items/<key>/``: the image and mask (once) and each explanation, through the atomic
    writer."""
    if not save_explanations:
        return
    folder = f"items/{safe_key(result.item.key)}"
    if result.item.image.size and not (output.path / folder / "image.npy").exists():
        arrays = {"image": np.asarray(result.item.image, dtype=np.float32)}
        if result.item.mask is not None:
            arrays["mask"] = np.asarray(result.item.mask, dtype=bool)
        for name, array in arrays.items():
            atomic_write(output.file(f"{folder}/{name}.npy"),
                         lambda f, array=array: np.save(f, array, allow_pickle=False),
                         overwrite=True)
    for name, class_index, explanation in result.explanations:
        stem = f"{folder}/{explanation_name(name, class_index)}"
        npz, _ = output.files(f"{stem}.npz", f"{stem}.json")
        explanation.save(npz, overwrite=True)


def explain_dataset(model, dataset, methods, out, *, masks=None, classes: Iterable = (None,),
                    engine: str = "local", workers: int = 1, address: str | None = None,
                    gpus_per_worker: float = 0.0, items_per_batch: int = 4,
                    explainer_options: dict | None = None, force: bool = False,
                    progress: bool = True, log=print) -> list[dict]:
    """Explain every item of ``dataset`` with every method and write the run into ``out``.

    Parameters
    ----------
    model : nn.Module, callable or ModelBuilder
        The model, or how each worker builds it (``ModelBuilder(checkpoint, "pkg.mod:build")``;
        Ray workers need a picklable model or a builder).
    dataset : path, source or torch Dataset
        A directory of images (PNG, 16-bit PNG, ``.npy``, NIfTI; ground truth in ``masks``),
        a data set in the library's layout (its validation split), a source
        (:mod:`~interpret_segmentation.datasets.sources`), or a torch ``Dataset`` yielding
        ``image`` or ``(image, mask)``.
    methods : str, sequence or dict
        Registered segmentation methods: "hdm,rise", ``["hdm", "rise"]``, or
        ``{"misure": {"iterations": 50}}`` (options per method), or :class:`MethodRun`\\ s.
    out : path
        The run's directory (:class:`~interpret_segmentation.core.io.OutputDirectory`): a
        rerun with the same settings continues where a stopped run ended (and may add
        methods); other settings are refused.
    classes : iterable of int or None, default (None,)
        Classes explained in every item; None is class 1.
    engine : {"local", "ray"}, default "local"
    workers, address, gpus_per_worker, items_per_batch
        For the Ray engine (:class:`~interpret_segmentation.studies.ray_engine.RayEngine`).
    explainer_options : dict, optional
        Options for every explainer (``spatial_dims``, ``spacing``, ``baseline``, ``output``,
        ``activation``, ``device``, ``batch_size``...).

    Writes ``out/rows.csv`` (:data:`ROW_FIELDS`), ``out/items/<key>/`` (each explanation,
    the image and the mask), ``out/table.md`` and ``out/table.csv`` (per method: Dice
    explained and perturbation ratio at the paper's thresholds, seconds per item, context
    hit rate). Returns the rows.
    """
    from .report import write_report  # matplotlib and Pillow only when a report is written

    source = as_source(dataset, masks)
    work = Work(model, method_runs(methods), tuple(classes),
                dict(explainer_options or {}), save_explanations=True)
    chosen = get_engine(engine, workers=workers, address=address,
                        gpus_per_worker=gpus_per_worker, items_per_batch=items_per_batch)
    described = source.describe()
    settings = {**work.settings(chosen), "dataset": described}
    started = time.perf_counter()
    with OutputDirectory(out, "explain-dataset", force=force, settings=settings,
                         extendable=("methods",)) as output:
        rows = run_items(output, source, work, chosen, progress=progress, log=log)
        good = [row for row in rows if not row["error"]]
        write_table(output, summarize_rows(good, described.get("kind", "data"), "model"))
        write_report(output.path, output=output)
    log(f"explained {len(source)} items in {time.perf_counter() - started:.1f} s; results: "
        f"{output.path / 'table.md'}, {output.path / 'rows.csv'}")
    return rows

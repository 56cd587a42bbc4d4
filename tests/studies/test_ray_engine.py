"""The Ray engine on a real Ray instance of this machine (2 CPUs): the same rows and maps as
a local run with 1 and 2 workers, a worker killed in the middle of an item (the item is
retried, the retry logged), an item that cannot be read (error rows, the others done), and
refused arguments. Skipped when Ray is not installed (extra ``interpret-segmentation[ray]``)."""

import csv
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from interpret_segmentation.datasets.sources import TorchSource
from interpret_segmentation.studies.engines import get_engine
from interpret_segmentation.studies.runner import explain_dataset
from interpret_segmentation.studies.work import MethodRun, Work, class_text

METHODS = {"hdm": {"circle_size": 5, "offset": 4}, "rise": {"n_masks": 40, "seed": 3},
           "gradcam": {}, "misure": {"iterations": 5, "mask_size": 8}}
"""Deterministic methods (RISE with its seed), small settings."""


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray", reason="the Ray engine needs Ray: pip install "
                              "'interpret-segmentation[ray]' (make test installs it)")
    here = Path(__file__).resolve().parent
    # the workers import this module (its models and data sets) as pytest did
    paths = os.pathsep.join([str(here), str(here.parent)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": paths}})
    yield ray
    ray.shutdown()


class TinyNet(nn.Module):
    """Two-class logits: class 1 where the 3x3 mean of the image is bright (> ~0.4)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.features.weight.copy_(1 / 9 + 0.05 * torch.randn(4, 1, 3, 3, generator=generator))
            self.features.bias.fill_(-0.3)
            self.head.weight.zero_()
            self.head.weight[1] = 4.0
            self.head.bias.copy_(torch.tensor([1.0, 0.0]))

    def forward(self, x):
        return self.head(torch.relu(self.features(x)))


def _images(count: int) -> list[np.ndarray]:
    """32 x 32 noise in [0, 0.3) with a bright 8 x 8 square somewhere."""
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        image = (rng.random((32, 32)) * 0.3).astype(np.float32)
        row, column = rng.integers(4, 20, 2)
        image[row:row + 8, column:column + 8] = 1.0
        images.append(image)
    return images


class KillsOnce:
    """A torch data set whose item ``victim`` ends the process reading it (not the test's)
    the first time, as a killed worker would; the marker file says it happened."""

    def __init__(self, marker: Path, victim: int, count: int = 6):
        self.marker, self.victim, self.images = marker, victim, _images(count)
        self.driver = os.getpid()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, position):
        if (position == self.victim and os.getpid() != self.driver
                and not self.marker.exists()):
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        return self.images[position]


class KillsAlways(KillsOnce):
    def __getitem__(self, position):
        if position == self.victim and os.getpid() != self.driver:
            os._exit(1)
        return self.images[position]


class KillsWhileExplaining(TinyNet):
    """TinyNet that ends the worker process on its second model pass over image ``victim``
    (the explanation under way: the image read, its prediction made), the first time; the
    marker file says it happened."""

    def __init__(self, marker: Path, victim: np.ndarray):
        super().__init__()
        self.marker, self.victim, self.driver = marker, torch.from_numpy(victim), os.getpid()
        self.armed = False

    def forward(self, x):
        if os.getpid() != self.driver and not self.marker.exists():
            if self.armed:
                self.marker.write_text(str(os.getpid()))
                os._exit(1)
            self.armed = x.shape[-2:] == self.victim.shape and torch.equal(x[0, 0], self.victim)
        return super().forward(x)


class Unreadable:
    """A torch data set whose item 2 raises."""

    def __init__(self, count: int = 5):
        self.images = _images(count)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, position):
        if position == 2:
            raise ValueError("item 2 is corrupt")
        return self.images[position]


def _rows(out: Path) -> list[tuple]:
    with open(out / "rows.csv", newline="") as file:
        return sorted(tuple((key, value) for key, value in row.items() if key != "seconds")
                      for row in csv.DictReader(file))


def _arrays(out: Path) -> dict:
    found = {}
    for path in sorted((out / "items").rglob("*")):
        if path.suffix == ".npz":
            with np.load(path) as data:
                found[path.relative_to(out).as_posix()] = {k: data[k] for k in data.files}
        elif path.suffix == ".npy":
            found[path.relative_to(out).as_posix()] = np.load(path)
    return found


def _quiet(*_):
    pass


def test_ray_gives_the_local_rows_and_maps_with_one_and_two_workers(ray, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index, image in enumerate(_images(5)):
        np.save(folder / f"im{index}.npy", image)
    model = TinyNet()
    explain_dataset(model, folder, METHODS, tmp_path / "local", progress=False, log=_quiet)
    local_rows, local_arrays = _rows(tmp_path / "local"), _arrays(tmp_path / "local")
    assert len(local_arrays) == 5 * (1 + len(METHODS))  # every map and every image
    assert not [row for row in local_rows if dict(row)["error"]]
    for workers in (1, 2):
        out = tmp_path / f"ray{workers}"
        explain_dataset(model, folder, METHODS, out, engine="ray", workers=workers,
                        items_per_batch=2, progress=False, log=_quiet)
        assert _rows(out) == local_rows
        arrays = _arrays(out)
        assert arrays.keys() == local_arrays.keys()
        for name, local in local_arrays.items():
            if isinstance(local, dict):
                assert local.keys() == arrays[name].keys(), name
                for key in local:
                    assert np.array_equal(arrays[name][key], local[key]), (name, key)
            else:
                assert np.array_equal(arrays[name], local), name


@pytest.mark.parametrize("when", ["reading", "explaining"])
def test_a_worker_killed_in_the_middle_of_an_item_has_it_retried(ray, tmp_path, caplog, when):
    marker = tmp_path / "killed"
    methods = {"hdm": METHODS["hdm"]}
    if when == "reading":  # the worker dies while it reads image 3
        model, data = TinyNet(), KillsOnce(marker, victim=3)
    else:  # ... or between two model passes over it
        data = KillsOnce(tmp_path / "never", victim=-1)
        model = KillsWhileExplaining(marker, data.images[3])
    with caplog.at_level(logging.WARNING, logger="interpret_segmentation.studies.ray_engine"):
        rows = explain_dataset(model, data, methods, tmp_path / "ray", engine="ray", workers=2,
                               items_per_batch=3, progress=False, log=_quiet)
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker died on 3
    assert sorted(row["item"] for row in rows) == [str(i) for i in range(6)]
    assert not [row for row in rows if row["error"]]
    # batches [0, 1, 2] and [3, 4, 5]: the second worker died on the first item of its batch
    (retry,) = [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert "died while explaining item 3" in retry and "sent again" in retry, caplog.text
    explain_dataset(TinyNet(), KillsOnce(marker, victim=3), methods, tmp_path / "local",
                    progress=False, log=_quiet)
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")
    assert _arrays(tmp_path / "ray").keys() == _arrays(tmp_path / "local").keys()


def test_an_item_that_kills_every_worker_gets_error_rows_after_the_retries(ray, tmp_path):
    from interpret_segmentation.studies.ray_engine import RayEngine

    work = Work(TinyNet(), (MethodRun("gradcam", "gradcam"),))
    todo = {("gradcam", class_text(None))}
    engine = RayEngine(workers=1, max_retries=0)
    source = TorchSource(KillsAlways(tmp_path / "unused", victim=0, count=3))
    results = {r.position: r for r in engine.run(work, source, dict.fromkeys(range(3), todo))}
    assert sorted(results) == [0, 1, 2]
    (row,) = results[0].rows
    assert row["item"] == "0" and row["error"].startswith("WorkerDiedError: the Ray worker died")
    assert not results[0].explanations and results[0].item.key == "0"
    assert all(r["error"] == "" for p in (1, 2) for r in results[p].rows)
    assert engine.stats["deaths"] == 1 and engine.stats["retried"] == []


def test_an_item_that_raises_gets_error_rows_and_the_run_goes_on(ray, tmp_path):
    rows = explain_dataset(TinyNet(), Unreadable(), {"hdm": METHODS["hdm"], "gradcam": {}},
                           tmp_path / "ray", engine="ray", workers=1, items_per_batch=2,
                           progress=False, log=_quiet)
    failed = sorted((row["item"], row["method"]) for row in rows if row["error"])
    assert failed == [("2", "gradcam"), ("2", "hdm")]
    assert all("ValueError: item 2 is corrupt" in row["error"] for row in rows if row["error"])
    done = {row["item"] for row in rows if not row["error"]}
    assert done == {"0", "1", "3", "4"}
    for key in done:
        assert (tmp_path / "ray" / "items" / key / "hdm.npz").is_file()


@pytest.mark.parametrize("arguments, named", [
    ({"engine": "spark"}, "engine"),
    ({"engine": "ray", "workers": 0}, "workers"),
    ({"engine": "ray", "items_per_batch": 0}, "items_per_batch"),
    ({"engine": "ray", "gpus_per_worker": -0.5}, "gpus_per_worker"),
    ({"engine": "ray", "address": ""}, "address"),
])
def test_bad_engine_arguments_are_refused_by_name(arguments, named, tmp_path):
    pytest.importorskip("ray", reason="the Ray engine needs Ray: pip install "
                        "'interpret-segmentation[ray]'")
    with pytest.raises(ValueError, match=rf"^{named}: expected"):
        explain_dataset(TinyNet(), [_images(1)[0]], "hdm", tmp_path / "out", progress=False,
                        log=_quiet, **arguments)
    assert not (tmp_path / "out").exists()


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match=r"interpret-segmentation\[ray\]"):
        get_engine("ray", workers=2)

"""What `pip install interpret-segmentation[...]` brings: the extras, the constraints the Makefile
installs with, and nothing that pulls torchvision or a CUDA build of torch; the library never
imports the packages its tests use for users' models."""

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
packaging = pytest.importorskip("packaging.requirements", reason="parsing requirements needs "
                                "packaging (installed with the [dev] extra)")
Requirement = packaging.Requirement
FORBIDDEN = ("torchvision", "nvidia-", "triton")
"""Distributions whose presence means a CUDA build of torch or torchvision came along."""


def _extras() -> dict[str, list]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"": [Requirement(r) for r in project["dependencies"]],
            **{name: [Requirement(r) for r in requirements]
               for name, requirements in project["optional-dependencies"].items()}}


def _names(requirements) -> set[str]:
    return {requirement.name.lower() for requirement in requirements}


def test_the_extras_name_what_users_and_tests_need():
    extras = _extras()
    assert _names(extras["nifti"]) == {"nibabel"}
    assert _names(extras["monai"]) == {"monai", "einops"}
    assert _names(extras["transformers"]) == {"transformers"}
    assert _names(extras["dev"]) >= {"pytest", "hypothesis", "ruff"} | _names(
        extras["nifti"] + extras["monai"] + extras["transformers"])
    assert not {"monai", "transformers", "nibabel", "einops"} & _names(extras[""])
    every = {name for requirements in extras.values() for name in _names(requirements)}
    assert not [name for name in every if name.startswith(FORBIDDEN)]


def test_the_constraints_pin_torch_and_fit_the_extras():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            pins[requirement.name.lower()] = specifier.version
    assert "torch" in pins and "+" not in pins["torch"]  # the Makefile installs it first
    assert not [name for name in pins if name.startswith(FORBIDDEN)]
    for requirements in _extras().values():
        for requirement in requirements:
            if requirement.name.lower() in pins:
                assert requirement.specifier.contains(pins[requirement.name.lower()]), requirement
    makefile = (ROOT / "Makefile").read_text()
    assert f"-c constraints.txt torch=={pins['torch']}" in makefile
    assert "-c constraints.txt -e '.[dev]'" in makefile


def _installed_closure(name: str, extras: tuple = ()) -> set[str]:
    """Installed distributions ``name[extras]`` requires, transitively (markers evaluated)."""
    found, queue = set(), [(name, extras)]
    while queue:
        name, extras = queue.pop()
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # optional on this platform, or not installed: nothing it pulls is here
        key = distribution.metadata["Name"].lower().replace("_", "-")
        if (key, extras) in found:
            continue
        found.add((key, extras))
        for text in distribution.requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras or ("",)):
                queue.append((requirement.name, tuple(sorted(requirement.extras))))
    return {key for key, _ in found}


def test_the_installed_dev_set_holds_no_torchvision_and_no_cuda_torch():
    try:
        metadata.distribution("interpret-segmentation")
    except metadata.PackageNotFoundError:
        pytest.skip("interpret-segmentation is not installed (pip install -e '.[dev]')")
    closure = _installed_closure("interpret-segmentation", ("dev",))
    assert {"torch", "numpy", "pytest"} <= closure
    assert not [name for name in closure if name.startswith(FORBIDDEN)], closure
    if "monai" in closure:
        assert "torchvision" not in _installed_closure("monai")


def test_importing_every_module_imports_no_monai_transformers_or_nibabel():
    script = """
import importlib, pkgutil, sys
import interpret_segmentation
for module in pkgutil.walk_packages(interpret_segmentation.__path__, "interpret_segmentation."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
print(sorted(m for m in ("monai", "transformers", "einops", "nibabel", "torchvision")
             if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    for path in (ROOT / "src").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert words[1].split(".")[0] not in ("monai", "transformers", "einops"), path

"""The studies' shared pieces: their modules import one way, rows and tables as documented."""

import ast
from pathlib import Path

import pytest

import interpret_segmentation.studies as studies

STUDIES = Path(studies.__file__).parent


def _studies_imports(path: Path) -> set[str]:
    """The studies modules ``path`` imports (at module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:  # from .x import / from . import x
            names = [node.module] if node.module else [alias.name for alias in node.names]
            found.update(name.split(".")[0] for name in names)
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("interpret_segmentation.studies."):
            found.add(node.module.split(".")[2])
    return found


def test_studies_modules_import_each_other_without_a_cycle():
    graph = {path.stem: _studies_imports(path) - {path.stem}
             for path in STUDIES.glob("*.py") if path.stem != "__init__"}
    assert {"common", "work", "engines", "runner", "demo", "evaluate", "sweep",
            "reliability"} <= set(graph)
    assert not (STUDIES / "evaluation.py").exists()
    # layers: common <- {tables, work} <- {engines (and ray_engine), report} <- runner <- the
    # studies
    assert graph["common"] == set() and graph["work"] == {"common"}
    assert graph["tables"] == set() and graph["report"] <= {"tables", "work"}
    assert graph["engines"] <= {"work", "ray_engine"}
    assert graph["runner"] <= {"common", "work", "tables", "engines", "report"}
    for name in ("demo", "evaluate", "sweep", "reliability"):
        assert graph[name] <= {"common", "work", "tables", "engines", "runner", "reproduce",
                               "report"}, (name, graph)

    def reach(start, seen):
        for target in graph.get(start, ()):
            if target not in seen:
                seen.add(target)
                reach(target, seen)
        return seen

    for name in graph:
        assert name not in reach(name, set()), f"{name} imports itself through {graph}"


def test_faithfulness_knows_no_method_by_name():
    tree = ast.parse((STUDIES.parent / "analysis" / "faithfulness.py").read_text())
    documented = {ast.get_docstring(node, clean=False) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef))}
    texts = {node.value for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str)} - documented
    assert not texts & {"hdm", "rise", "gradcam", "misure", "worse_only"}, texts
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert all(module in (None, "__future__", "collections.abc", "core.explanation",
                          "core.validate", "metrics") for module in modules), modules


def test_summarize_rows_means_per_method_and_threshold():
    from interpret_segmentation.studies.tables import summarize_rows, table_markdown

    def row(method, threshold, dice, ratio, seconds, hit):
        return {"method": method, "threshold": threshold, "dice_explained": dice,
                "perturbation_ratio": ratio, "seconds": seconds, "context_hit": hit}

    rows = [row("rise", "0.2", "0.5", "2", "1", "True"), row("rise", "0.2", "1.0", "4", "3", "False"),
            row("misure", "msr", "0.9", "0.5", "10", ""), row("hdm", "", "", "", "2", "True")]
    table = summarize_rows(rows, "testnet", "U-Net")
    by_method = {entry["method"]: entry for entry in table}
    assert by_method["rise"] == {"dataset": "testnet", "model": "U-Net", "method": "rise",
                                 "threshold": "0.2", "dice_explained": 0.75,
                                 "perturbation_ratio": 3.0, "seconds_per_image": 2.0,
                                 "context_hit_rate": 0.5, "images": 2}
    assert by_method["misure"]["threshold"] == "MSR" and by_method["misure"]["context_hit_rate"] is None
    assert by_method["hdm"]["threshold"] == "-" and by_method["hdm"]["dice_explained"] is None
    lines = table_markdown(table).splitlines()
    assert lines[0].startswith("| dataset | model | method | threshold |") and len(lines) == 5
    assert "| testnet | U-Net | rise | 0.2 | 0.750 | 3.000 | 2.000 | 0.500 | 2 |" in lines


def test_sweep_settings_are_the_papers_grid():
    from interpret_segmentation.studies.sweep import sweep_settings

    settings = sweep_settings(iterations=7)
    assert len(settings) == 11
    assert settings["lr=0.001 lam=0.1 size=224"] == {"lr": 0.001, "lam": 0.1, "mask_size": 224,
                                                     "iterations": 7}
    assert {v["mask_size"] for v in settings.values() if (v["lr"], v["lam"]) == (0.1, 0.01)} == {
        56, 112, 224}


def test_a_worker_builds_the_registry_defaults_and_unknown_names_are_refused():
    from interpret_segmentation.methods import registry
    from interpret_segmentation.studies.work import Work, Worker, method_runs
    from interpret_segmentation.training import default_unet

    worker = Worker(Work(default_unet(), method_runs(registry.available("segmentation"))))
    assert list(worker.explainers) == registry.available("segmentation")
    for name, explainer in worker.explainers.items():
        method = registry.get(name)
        assert isinstance(explainer, method.cls) and explainer.progress is False
        for option, default in method.defaults().items():
            if option in explainer.settings() and default is not None:  # None: resolved
                assert explainer.settings()[option] == default, (name, option)
    with pytest.raises(ValueError, match="methods: expected some of"):
        method_runs(["lime"])
    assert method_runs("hdm, rise")[1].method == "rise"
    assert method_runs({"rise": {"n_masks": 5}})[0].options == {"n_masks": 5}

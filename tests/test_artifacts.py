"""The artifact contract: one function per artifact, each naming the notebook that writes it."""
import ast
import json
from pathlib import Path

import pytest

from helpers import artifacts, checkpoint, config, routes, training

HELPERS = Path(artifacts.__file__).parent


def test_every_artifact_names_its_producer(smoke):
    p = smoke
    cases = {artifacts.baseline(p): "run 01_baseline_training.ipynb first",
             artifacts.scores(p): "run 02_relevance.ipynb first",
             artifacts.pruned(p, "lrp", "global"): "run 04_structured_pruning.ipynb first",
             artifacts.lowdata(p): "run 05_low_data.ipynb first",
             artifacts.finetuned_model(p, "routes_x/report_lrp_0.8_s0"): "run 06_fine_tuning.ipynb first",
             artifacts.report_point_runs(p): "run 06_fine_tuning.ipynb first",
             artifacts.quantized(p): "run 07_quantization.ipynb first",
             artifacts.notebook_times(p): "run python -m helpers.run first"}
    for a, hint in cases.items():
        assert a.hint == hint and a.path.is_relative_to(p.artifacts)


def test_a_missing_artifact_names_the_notebook_to_run(smoke):
    with pytest.raises(Exception, match="run 04_structured_pruning.ipynb first"):
        training.load_artifact(artifacts.pruned(smoke, "lrp", "global"))


def test_the_report_point_runs_reach_07_through_the_artifact(smoke, tmp_path, monkeypatch):
    monkeypatch.setenv(config.ARTIFACTS_ENV, str(tmp_path))
    p = config.get_profile("smoke")
    with pytest.raises(checkpoint.CheckpointError, match="run 06_fine_tuning.ipynb first"):
        routes.load_report_runs(p)
    row = {"route": "report", "criterion": "lrp", "point": 0.8, "seed": 0, "status": "ok", "val_acc": 50.0}
    monkeypatch.setattr(routes, "run", lambda *a, **k: row)
    runs = routes.report_runs(["lrp"], 0.8, {0: {"lrp": {}}}, None, p, tmp_path / "routes_x", 6, None)
    assert list(runs["run"]) == ["routes_x/report_lrp_0.8_s0"]
    assert routes.best_run(routes.load_report_runs(p), "lrp") == "routes_x/report_lrp_0.8_s0"


def _spells_artifact_paths(source: str) -> list[str]:
    """Lines that build a path from ``p.artifacts`` / ``profile.artifacts`` themselves."""
    return [line.strip() for line in source.splitlines() if ".artifacts /" in line]


def test_artifact_paths_are_spelled_only_in_the_contract():
    offenders = []
    for path in HELPERS.glob("*.py"):
        if path.name in ("artifacts.py",):
            continue
        offenders += [f"{path.name}: {line}" for line in _spells_artifact_paths(path.read_text())]
    for nb in sorted(config.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        offenders += [f"{nb.name}: {line}" for line in _spells_artifact_paths(code)]
    assert not offenders, "spell artifact paths in helpers/artifacts.py:\n" + "\n".join(offenders)


def test_no_notebook_cell_is_longer_than_twelve_lines():
    long = []
    for nb in sorted(config.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        for i, c in enumerate(json.loads(nb.read_text())["cells"]):
            n = len("".join(c["source"]).strip().splitlines())
            if c["cell_type"] == "code" and n > 12:
                long.append(f"{nb.name} cell {i}: {n} lines")
    assert not long, "move logic into helpers:\n" + "\n".join(long)


def test_nothing_imports_results():
    importers = []
    for path in HELPERS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("results", "helpers.results") or \
                    isinstance(node, ast.ImportFrom) and node.level == 1 and any(a.name == "results" for a in node.names):
                importers.append(path.name)
    assert not importers, f"{importers} import results (the top of the stack, notebook 08 only)"


def _helper_imports() -> dict[str, set[str]]:
    """Module -> the helpers modules it imports, at the top or inside a function."""
    names = {path.stem for path in HELPERS.glob("*.py")}
    graph = {}
    for path in HELPERS.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        graph[path.stem] = deps & names
    return graph


def test_helpers_import_graph_is_layered():
    graph, done = _helper_imports(), set()

    def visit(module, path):
        if module in path:
            pytest.fail("import cycle: " + " -> ".join([*path, module]))
        if module not in done:
            for dep in graph[module]:
                visit(dep, [*path, module])
            done.add(module)
    for module in graph:
        visit(module, [])

"""The artifact contract: one function per artifact, each naming the notebook that writes it."""
import ast
import json
from pathlib import Path

import pytest
import torch

from helpers.core import artifacts, checkpoint, config
from helpers.methods import training
from helpers.studies import routes

HELPERS = config.REPO_ROOT / "helpers"
MODULES = sorted(p for p in HELPERS.rglob("*.py") if p.stem != "__init__")
WINGS = ("core", "methods", "reporting", "studies", "tools")
"""The wings, lowest first; ``methods`` and ``reporting`` stand side by side on one floor."""
FLOOR = {"core": 0, "methods": 1, "reporting": 1, "studies": 2, "tools": 3}


def test_every_artifact_names_its_producer(smoke):
    p = smoke
    cases = {artifacts.baseline(p): "run 01_baseline_training.ipynb first",
             artifacts.scores(p): "run 02_relevance.ipynb first",
             artifacts.pruned(p, "lrp", "global"): "run 04_structured_pruning.ipynb first",
             artifacts.lowdata(p): "run 05_low_data.ipynb first",
             artifacts.finetuned_model(p, "routes_x/report_lrp_0.8_s0"): "run 06_fine_tuning.ipynb first",
             artifacts.report_point_runs(p): "run 06_fine_tuning.ipynb first",
             artifacts.quantized(p): "run 07_quantization.ipynb first",
             artifacts.notebook_times(p): "run python -m helpers.tools.run first"}
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
    for path in MODULES:
        if path.name in ("artifacts.py",):
            continue
        offenders += [f"{path.name}: {line}" for line in _spells_artifact_paths(path.read_text())]
    for nb in sorted(config.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        offenders += [f"{nb.name}: {line}" for line in _spells_artifact_paths(code)]
    assert not offenders, "spell artifact paths in helpers/artifacts.py:\n" + "\n".join(offenders)


def test_no_notebook_cell_is_longer_than_twelve_lines():
    """Parameters cells aside: one literal per line, no logic (STYLE.md), as many as a notebook takes."""
    long = []
    for nb in sorted(config.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        for i, c in enumerate(json.loads(nb.read_text())["cells"]):
            n = len("".join(c["source"]).strip().splitlines())
            if c["cell_type"] == "code" and n > 12 and "parameters" not in c["metadata"].get("tags", []):
                long.append(f"{nb.name} cell {i}: {n} lines")
    assert not long, "move logic into helpers:\n" + "\n".join(long)


def _name(path: Path) -> str:
    """``core.config`` for ``helpers/core/config.py``; ``__main__`` for the package's own."""
    return ".".join(path.relative_to(HELPERS).with_suffix("").parts)


def _imports(path: Path) -> set[str]:
    """The helpers modules ``path`` imports (``wing.module``), at the top or inside a function."""
    wing = path.parent.name if path.parent.name in WINGS else ""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 0 and (node.module or "").startswith("helpers."):
            base = node.module.split(".")[1:]
        elif node.level == 1:
            base = [wing, *(node.module or "").split(".")] if node.module else [wing]
        elif node.level == 2:
            base = (node.module or "").split(".")
        else:
            continue
        base = [b for b in base if b]
        deps |= {".".join(base[:2])} if len(base) >= 2 else {f"{base[0]}.{a.name}" for a in node.names}
    return deps


def _graph() -> dict[str, set[str]]:
    names = {_name(p) for p in MODULES}
    return {_name(p): _imports(p) & names for p in MODULES}


def test_every_module_lives_in_a_wing():
    assert {p.parent.name for p in MODULES} - {"helpers"} == set(WINGS)
    assert all(p.parent.name in WINGS for p in MODULES if p.name != "__main__.py"), [str(p) for p in MODULES]


def test_no_wing_imports_from_a_wing_above_or_beside_it():
    upward = [f"{m} imports {d}" for m, deps in _graph().items() if "." in m for d in deps
              if d.split(".")[0] != m.split(".")[0] and FLOOR[d.split(".")[0]] >= FLOOR[m.split(".")[0]]]
    assert not upward, "import only from the wings below (tools > studies > methods, reporting > core):\n" + \
        "\n".join(upward)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    assert {"core.artifacts", "core.config"} <= _imports(HELPERS / "core" / "data.py")
    fake = tmp_path / "helpers" / "core" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..studies import routes\nfrom . import config\nfrom helpers.tools.run import main\n")
    assert _imports(fake) == {"studies.routes", "core.config", "tools.run"}


def test_shared_names_come_from_the_vocabulary():
    from helpers.core import vocabulary
    from helpers.methods import composites, criteria, pruning
    assert tuple(criteria.CRITERIA) == vocabulary.CRITERIA
    assert tuple(composites.COMPOSITES) == vocabulary.COMPOSITES
    assert tuple(pruning.ALLOCATIONS) == vocabulary.ALLOCATIONS
    assert set(vocabulary.OTHER_CRITERIA) == set(vocabulary.CRITERIA) - {"lrp"}


def _spelled_names(path, names: set[str], source: str | None = None) -> list[str]:
    """Where ``path`` (or ``source``, named by ``path``) spells one of ``names`` as a literal in
    code that decides by it: compared (``==``, ``in``), used as a dict key, or given as a
    parameter's default."""
    tree, found = ast.parse(path.read_text() if source is None else source), []
    where = path.relative_to(HELPERS.parent) if path.is_relative_to(HELPERS.parent) else path.name

    def strings(node):
        elts = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return [e for e in elts if isinstance(e, ast.Constant) and e.value in names]

    for node in ast.walk(tree):
        hits = []
        if isinstance(node, ast.Compare):
            hits = [s for x in [node.left, *node.comparators] for s in strings(x)]
        elif isinstance(node, ast.Dict):
            hits = [k for k in node.keys if k is not None for k in strings(k)]
        elif isinstance(node, ast.arguments):
            named = list(zip(reversed(node.args), reversed(node.defaults))) + \
                [(a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults) if d is not None]
            hits = [s for a, d in named if a.arg not in RULE_ARGUMENTS for s in strings(d)]
        found += [f"{where}:{h.lineno}: {h.value!r}" for h in hits]
    return found


RULE_ARGUMENTS = {"rule", "weight_rule"}
"""Parameters that take an LRP rule name ("epsilon", "zplus"), not a composite."""
SAME_WORD = {("tools/gpu_check.py", "lrp"): "the name of gpu_check's LRP-throughput part",
             ("methods/criteria.py", "weight"): "the score kind (filter or weight scores)",
             ("methods/pruning.py", "weight"): "the score kind and torch.nn.utils.prune's parameter name",
             ("methods/scores.py", "weight"): "the score kind",
             ("studies/routes.py", "weight"): "torch.nn.utils.prune's parameter name",
             ("methods/composites.py", "epsilon"): "the LRP rule (a composite is built of rules)",
             ("methods/criteria.py", "epsilon"): "the LRP rule of weight relevance",
             ("studies/verdict.py", "lrp"): "the verdict table's column", ("studies/lowdata.py", "lrp"): "a column"}
"""Literals that spell a vocabulary word with another meaning, by file."""


def test_no_module_spells_a_shared_name_outside_the_vocabulary():
    from helpers.core import vocabulary as v
    names = set(v.CRITERIA + v.COMPOSITES + v.ALLOCATIONS + v.ROUTES + v.SCHEDULES) | {v.CONTROL}
    spelled = [h for p in MODULES if p.name != "vocabulary.py" for h in _spelled_names(p, names)
               if (str(p.relative_to(HELPERS)), h.split("'")[1]) not in SAME_WORD]
    assert not spelled, "use helpers.core.vocabulary's constants:\n" + "\n".join(spelled)


def test_no_notebook_spells_a_shared_name_outside_its_parameter_cell():
    from helpers.core import vocabulary as v
    names = set(v.CRITERIA + v.COMPOSITES + v.ALLOCATIONS + v.ROUTES + v.SCHEDULES) | {v.CONTROL}
    spelled = []
    for path in sorted((HELPERS.parent / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code" and "parameters" not in cell["metadata"].get("tags", []):
                spelled += [f"cell {i} {h}" for h in _spelled_names(path, names, "".join(cell["source"]))]
    assert not spelled, "use helpers.core.vocabulary's constants:\n" + "\n".join(spelled)


def test_the_vocabulary_check_sees_a_spelled_name(tmp_path):
    fake = tmp_path / "helpers" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text('def f(route="compute", rule="epsilon"):\n    return {"size": 1} if route == "lrp" else 0\n')
    found = _spelled_names(fake, {"compute", "epsilon", "size", "lrp"})
    assert sorted(h.split(": ")[1] for h in found) == ["'compute'", "'lrp'", "'size'"]


def test_nothing_imports_results():
    importers = [m for m, deps in _graph().items() if "studies.results" in deps]
    assert not importers, f"{importers} import results (the top of the stack, notebook 08 only)"


def test_helpers_import_graph_has_no_cycle():
    graph, done = _graph(), set()

    def visit(module, path):
        if module in path:
            pytest.fail("import cycle: " + " -> ".join([*path, module]))
        if module not in done:
            for dep in graph[module]:
                visit(dep, [*path, module])
            done.add(module)
    for module in graph:
        visit(module, [])


def test_trim_gives_freed_heap_memory_back():
    """After many mid-sized tensors are freed (below glibc's raised mmap threshold), trimming
    returns their pages: the process's resident size falls back near where it was."""
    from helpers.core import memory
    if memory._libc() is None:
        pytest.skip("needs glibc's malloc_trim")

    def resident() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    torch.empty(16 << 20, dtype=torch.uint8)  # a large free raises glibc's mmap threshold to 16 MB
    before = resident()
    kept = [torch.ones(2 << 20, dtype=torch.uint8) for _ in range(200)]  # 400 MB in 2 MB tensors
    keep_last = kept[-1]  # at the heap's top: a plain free would not shrink the heap below it
    del kept
    memory.trim()
    assert resident() - before < 100 << 20, "the freed 400 MB stayed resident"
    del keep_last

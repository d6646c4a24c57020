import nbformat
import pytest

from helpers.core import checkpoint, config
from helpers.tools import params, run


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    params_cell = nbformat.v4.new_code_cell('profile: str = ""  # profile name\nvalue: int = 1  # a number')
    params_cell.metadata["tags"] = ["parameters"]
    nb.cells = [params_cell] + [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def figures(tmp_path, monkeypatch):
    """Published notebooks go to a temporary figures root."""
    monkeypatch.setattr(config, "FIGURES_ROOT", tmp_path / "figures")
    return tmp_path / "figures" / "smoke" / "notebooks"


@pytest.mark.slow
def test_runner_stops_at_first_failure_naming_notebook_and_cell(tmp_path, figures, capsys):
    _notebook(tmp_path / "01_ok.ipynb", "x = value + 1")
    _notebook(tmp_path / "02_broken.ipynb", "y = 2", "raise RuntimeError('boom')")
    _notebook(tmp_path / "03_never.ipynb", "open('ran', 'w')")
    with pytest.raises(SystemExit, match=r"(?s)FAILED: 02_broken.ipynb, cell \d.*RuntimeError: boom.*not published"):
        run.run_all("smoke", folder=tmp_path, parameters={"value": 3})
    out = config.get_profile("smoke").artifacts / "notebooks"
    assert (out / "01_ok.ipynb").exists() and not (out / "03_never.ipynb").exists()
    assert (out / "02_broken.ipynb").exists()  # the traceback stays under artifacts/ ...
    assert sorted(p.name for p in figures.iterdir()) == ["01_ok.ipynb"]  # ... and is never published
    assert not (tmp_path / "ran").exists()
    times = run.load_times(config.get_profile("smoke").artifacts / "notebook_times.json")
    assert list(times) == ["01_ok.ipynb", "02_broken.ipynb"]  # both cost time; 03 never started
    assert [r["finished"] for r in times["01_ok.ipynb"] + times["02_broken.ipynb"]] == [True, False]
    err = capsys.readouterr().err
    assert "[01_ok] cell 2: x = value + 1" in err  # the runner says which cell is running


@pytest.mark.slow
def test_a_failing_notebook_leaves_the_published_copy_untouched(tmp_path, figures):
    _notebook(tmp_path / "01_flaky.ipynb", "assert value == 1, 'bad value'")
    run.run_all("smoke", folder=tmp_path)
    before = (figures / "01_flaky.ipynb").read_bytes()
    assert "papermill" not in before.decode() and "Kernel is running over TCP" not in before.decode()
    with pytest.raises(SystemExit, match="bad value"):
        run.run_all("smoke", folder=tmp_path, parameters={"value": 2})
    assert (figures / "01_flaky.ipynb").read_bytes() == before


@pytest.mark.slow
def test_an_interrupted_notebook_keeps_its_time_and_reruns_add_up(tmp_path, figures, monkeypatch):
    """Ctrl-C or SIGTERM (the runner turns it into the same interruption) mid-notebook: the time
    spent is recorded as not finished, and the next invocation is appended, not substituted."""
    _notebook(tmp_path / "01_ok.ipynb", "x = 1")
    record = config.get_profile("smoke").artifacts / "notebook_times.json"

    def interrupted(*args):
        run._interrupt(15, None)  # what SIGTERM calls
    with monkeypatch.context() as m:
        m.setattr(run, "run_one", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run.run_all("smoke", folder=tmp_path)
    assert not figures.exists()
    run.run_all("smoke", folder=tmp_path)
    runs = run.load_times(record)["01_ok.ipynb"]
    assert [r["finished"] for r in runs] == [False, True] and runs[1]["seconds"] > 0


@pytest.mark.slow
def test_the_runner_rewrites_the_reports_wall_time_after_every_notebook(tmp_path, figures):
    """REPORT.md (written by notebook 08) ends up with the time of every notebook, 08 and 09
    included, in its marked section; the rest of the report is kept."""
    _notebook(tmp_path / "01_ok.ipynb", "x = 1")
    _notebook(tmp_path / "02_ok.ipynb", "y = 2")
    report_md = figures.parent / "REPORT.md"
    report_md.parent.mkdir(parents=True)
    report_md.write_text("# Results: smoke profile\n\nthe findings\n")
    run.run_all("smoke", folder=tmp_path)
    text = report_md.read_text()
    assert text.startswith("# Results: smoke profile\n\nthe findings\n") and text.count("<!-- times:start -->") == 1
    assert "01_ok.ipynb" in text and "02_ok.ipynb" in text and "Not recorded yet" not in text
    assert "2 invocations recorded" in text


@pytest.mark.slow
def test_the_machines_reference_step_is_recorded_with_every_invocation(tmp_path, figures, monkeypatch):
    """Measured once per runner invocation when asked (the cpu profile asks: it has a time
    target; smoke does not), and carried by each notebook's record."""
    from helpers.studies import benchmark
    _notebook(tmp_path / "01_ok.ipynb", "x = 1")
    _notebook(tmp_path / "02_ok.ipynb", "y = 2")
    record = config.get_profile("smoke").artifacts / "notebook_times.json"
    calls = []
    monkeypatch.setattr(benchmark, "reference_step_seconds", lambda p: calls.append(p.name) or 0.25)
    run.run_all("smoke", folder=tmp_path)
    assert not calls and all("reference_step_s" not in r for v in run.load_times(record).values() for r in v)
    run.run_all("smoke", folder=tmp_path, reference=True)
    assert calls == ["smoke"]
    assert [v[-1]["reference_step_s"] for v in run.load_times(record).values()] == [0.25, 0.25]
    assert config.get_profile("cpu").series_minutes > 0  # so the cpu profile's runs measure it


def test_times_in_the_earlier_format_read_as_one_finished_invocation(tmp_path):
    path = tmp_path / "notebook_times.json"
    checkpoint.save_json({"01_a.ipynb": 61.5}, path)
    run.record_time(path, "01_a.ipynb", 2.0, finished=True)
    assert [(r["seconds"], r["finished"]) for r in run.load_times(path)["01_a.ipynb"]] == [(61.5, True), (2.0, True)]
    assert run.load_times(tmp_path / "absent.json") == {}


def test_only_matching_nothing_is_an_error_and_publishes_nothing(tmp_path, figures, capsys):
    _notebook(tmp_path / "01_ok.ipynb", "x = 1")
    stale = config.get_profile("smoke").artifacts / "notebooks" / "01_ok.ipynb"
    stale.parent.mkdir(parents=True)
    stale.write_text("left by an earlier failed run")
    with pytest.raises(run.RunError, match="--only 99 matches no notebook; valid: 01_ok"):
        run.run_all("smoke", only=["99"], folder=tmp_path)
    assert not figures.exists()
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--profile", "smoke", "--only", "99"])
    assert exit_info.value.code != 0 and "matches no notebook" in capsys.readouterr().err
    assert not figures.exists()


@pytest.mark.parametrize("name, value, message", [
    ("criteria_names", "lrp", r"criteria_names must be a list \(YAML: \[lrp\]\), got the string 'lrp'"),
    ("sweep_ratios", [1.5], r"sweep_ratios item must lie in \(0, 1\), got 1.5"),
    ("sweep_ratios", [-0.1], r"sweep_ratios item must lie in \(0, 1\), got -0.1"),
    ("criteria_names", ["lrp", "magic"], "criteria_names item is 'magic'; valid: lrp, weight"),
    ("epochs", "ten", "epochs must be int, got str 'ten'"),
    ("sweep_allocation", "layerwise", "sweep_allocation is 'layerwise'; valid: report, uniform, global"),
    ("lr", -1.0, r"lr must lie in \(0, inf\), got -1.0"),
    ("subset_per_class", 0, r"subset_per_class must lie in \(0, inf\), got 0"),
    ("subset_per_class", "few", "subset_per_class must be int, got str 'few'"),
    ("profile_overrides", "lr: 3", "profile_overrides must be dict, got str 'lr: 3'"),
    ("profile_overrides", {"finetune_lr": [0.1]}, "profile_overrides names no profile field 'finetune_lr'; "
                                                  "valid: .*finetune_lrs"),
    ("profile_overrides", {"headline_fractions": [0.3, 0.1]}, "'headline_fractions' must be increasing"),
    ("valeu", 3, "unknown notebook parameter.*valeu; valid parameters:.*criteria_names"),
])
def test_bad_parameters_are_refused_before_any_kernel_starts(name, value, message, figures):
    """The series' own notebooks: nothing runs, nothing is written."""
    with pytest.raises(run.RunError, match=message):
        run.run_all("smoke", parameters={name: value})
    assert not config.get_profile("smoke").artifacts.exists()
    assert not figures.exists()


def test_cli_reports_bad_parameter_without_running(capsys, figures):
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--profile", "smoke", "-p", "criteria_names", "lrp"])
    assert exit_info.value.code == 2
    assert "must be a list" in capsys.readouterr().err
    assert not config.get_profile("smoke").artifacts.exists()


def test_help_states_default_profile_list_syntax_and_valid_names(capsys):
    with pytest.raises(SystemExit):
        run.main(["--help"])
    out = capsys.readouterr().out
    assert "default profile is 'cpu'" in out and "-p criteria_names '[lrp, weight]'" in out
    assert "composite: str; one of epsilon_plus_flat" in out
    assert "sweep_allocation: str; one of report, uniform, global" in out


def test_cli_rejects_unknown_profile(capsys):
    with pytest.raises(SystemExit):
        run.main(["--profile", "gpu"])
    assert "valid profiles: smoke, cpu" in capsys.readouterr().err


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


def test_parameter_rules_match_every_notebooks_parameters_cell():
    """helpers.tools.params knows exactly the parameters each notebook declares, with their types."""
    assert [nb.stem for nb in run.notebooks()] == list(params.NOTEBOOKS)
    for nb in run.notebooks():
        declared = run.declared_parameters(nb)
        rules = params.NOTEBOOKS[nb.stem]
        assert set(declared) == set(rules), nb.name
        for name, type_name in declared.items():
            optional = type_name.startswith("Optional[")
            assert rules[name].optional == optional, (nb.name, name)
            assert rules[name].kind is _TYPES[type_name.removeprefix("Optional[").rstrip("]")], (nb.name, name)


def test_notebook_defaults_pass_their_own_rules():
    import papermill as pm
    for nb in run.notebooks():
        defaults = {k: eval(v["default"]) for k, v in pm.inspect_notebook(str(nb)).items()}  # literals only
        params.check(nb.stem, defaults)


def test_cross_parameter_rule():
    with pytest.raises(params.ParameterError, match=r"step \(0.5\) must not exceed max_sparsity \(0.3\)"):
        params.check("03_unstructured_pruning", {"step": 0.5, "max_sparsity": 0.3})
    assert params.check("06_fine_tuning", {"profile": "smoke", "ref_per_class": 3}).ref_per_class == 3


def test_profile_overrides_set_any_field_once():
    p = params.check("06_fine_tuning", {"profile": "smoke", "seeds": 3,
                                        "profile_overrides": {"finetune_lrs": [0.05], "weight_bits": [6, 8]}})
    assert (p.seeds, p.finetune_lrs, p.weight_bits) == (3, (0.05,), (6, 8))
    with pytest.raises(params.ParameterError, match="seeds given both as a parameter and in profile_overrides"):
        params.check("06_fine_tuning", {"profile": "smoke", "seeds": 3, "profile_overrides": {"seeds": 2}})
    # the runner writes where the overrides say: a subset given in profile_overrides writes apart
    where = params.profile_of({"profile": "smoke", "profile_overrides": {"subset_per_class": 2}})
    assert where.folder_name == "smoke_subset2"


@pytest.mark.slow
def test_progress_lines_reach_the_terminal_but_never_the_published_notebook(tmp_path, figures, capfd):
    _notebook(tmp_path / "01_loop.ipynb",
              "from helpers.core import progress\nfor i in progress.steps([1, 2], 'loop'):\n    print('kept', i)",
              "import sys\nprint('a real warning', file=sys.stderr)")
    run.run_all("smoke", folder=tmp_path)
    published = (figures / "01_loop.ipynb").read_text()
    assert "loop 1/2" not in published and "kept 2" in published and "a real warning" in published
    err = capfd.readouterr().err
    assert "[01_loop]" in err and "loop 2/2" in err


def test_publish_drops_outputs_that_hold_only_progress_lines(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    progress_line = "  [05_low_data] 05:25:02 rule search, group 1/4: dense\n"
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=progress_line),
                    nbformat.v4.new_output("stream", name="stderr", text="a warning\n"),
                    nbformat.v4.new_output("stream", name="stdout", text=progress_line.replace(
                        "rule search, group 1/4: dense", "printed on purpose"))]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "05_x.ipynb")
    out = nbformat.read(run.publish(tmp_path / "05_x.ipynb", tmp_path / "pub"), as_version=4)
    assert [o.text for o in out.cells[0].outputs] == ["a warning\n", "  [05_low_data] 05:25:02 printed on purpose\n"]

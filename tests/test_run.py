import nbformat
import pytest

from helpers import checkpoint, config, run


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile: str = ""  # profile name\nvalue: int = 1  # a number')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_runner_stops_at_first_failure_naming_notebook_and_cell(tmp_path):
    _notebook(tmp_path / "01_ok.ipynb", "x = value + 1")
    _notebook(tmp_path / "02_broken.ipynb", "y = 2", "raise RuntimeError('boom')")
    _notebook(tmp_path / "03_never.ipynb", "open('ran', 'w')")
    with pytest.raises(SystemExit, match=r"FAILED: 02_broken.ipynb, cell \d.*RuntimeError: boom"):
        run.run_all("smoke", folder=tmp_path, parameters={"value": 3})
    out = config.get_profile("smoke").artifacts / "notebooks"
    assert (out / "01_ok.ipynb").exists() and not (out / "03_never.ipynb").exists()
    assert not (tmp_path / "ran").exists()
    times = checkpoint.load_json(config.get_profile("smoke").artifacts / "notebook_times.json")
    assert list(times) == ["01_ok.ipynb"]  # the notebook that finished keeps its measured time


def test_unknown_notebook_parameter_lists_valid_ones(tmp_path):
    _notebook(tmp_path / "01_ok.ipynb", "x = 1")
    with pytest.raises(ValueError, match="unknown notebook parameter.*valeu.*valid parameters: profile, value"):
        run.run_all("smoke", folder=tmp_path, parameters={"valeu": 3})


def test_cli_rejects_unknown_profile(capsys):
    with pytest.raises(SystemExit):
        run.main(["--profile", "gpu"])
    assert "valid profiles: smoke, cpu" in capsys.readouterr().err


def test_every_series_notebook_has_a_typed_parameters_cell():
    for nb in run.notebooks():
        params = run.declared_parameters(nb)
        assert "profile" in params, nb.name

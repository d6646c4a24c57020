import copy

import pytest

from helpers.core import config, data, models
from helpers.methods import training


@pytest.fixture(autouse=True)
def artifacts(tmp_path, monkeypatch):
    """Every test writes its artifacts into its own temporary folder."""
    monkeypatch.setenv(config.ARTIFACTS_ENV, str(tmp_path / "artifacts"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    return tmp_path / "artifacts"


@pytest.fixture
def smoke():
    return config.get_profile("smoke")


@pytest.fixture
def tiny_cifar(tmp_path):
    """A generated dataset in the official format: 6 train and 2 test images per class."""
    return data.write_synthetic_cifar100(tmp_path / "tiny", 6, 2, seed=1)


@pytest.fixture
def smoke_data(smoke):
    return data.load_data(smoke)


def staged_cifar():
    """The staged real CIFAR-100 when $LRP_DATA_DIR points at it, else None."""
    root = data.data_root()
    return root / data.FOLDER if (root / data.FOLDER / "train").exists() else None


@pytest.fixture(scope="session")
def _trained_smoke_once(tmp_path_factory):
    """The smoke profile, its data and a model trained for its five quick epochs, once per
    session (about 14 s): well above chance, since the divergence guard stops fine-tuning runs
    that are still at chance."""
    p = config.get_profile("smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(config.ARTIFACTS_ENV, str(tmp_path_factory.mktemp("art")))
        d = data.load_data(p)
    model = models.create_model(p)
    training.fit(model, d, p, tmp_path_factory.mktemp("fit") / "s.pt", models.spec_for(p))
    return p, d, model.eval()


@pytest.fixture(scope="module")
def trained_smoke(_trained_smoke_once):
    """:func:`_trained_smoke_once` with a copy of the model for each test module, so that no
    module sees what another did to its model."""
    p, d, model = _trained_smoke_once
    return p, d, copy.deepcopy(model)


TRAINS = {"_trained_smoke_once"}
"""Fixtures that train a network for seconds or more: a test that uses one (directly or through
another fixture) is ``slow``."""


def pytest_collection_modifyitems(items):
    """``make test-fast`` skips the ``slow`` tests: those marked so (a kernel or a subprocess) and
    those that use a trained network (:data:`TRAINS`)."""
    for item in items:
        if TRAINS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def no_collapse_guard(request, monkeypatch):
    """Fine-tuning runs of a few steps on the smoke model may stay at chance on some CPU (its
    training is chaotic); tests about routes, budgets and resuming use this to keep the NaN
    check but not the collapse check (which has its own tests, marked ``collapse_guard``)."""
    if request.node.get_closest_marker("collapse_guard"):
        return
    from helpers.methods import training
    original = training.check_diverged
    monkeypatch.setattr(training, "check_diverged", lambda name, epoch, loss, *a, **k: original(name, epoch, loss))

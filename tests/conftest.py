import pytest

from helpers import config, data


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

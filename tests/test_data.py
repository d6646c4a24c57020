import pickle

import numpy as np
import pytest
import torch

from helpers.core import config, data

from conftest import staged_cifar


def test_reader_shapes_dtypes_labels(tiny_cifar):
    train, test, names = data.read_cifar100(tiny_cifar)
    assert train.x.shape == (600, 3, 32, 32) and train.x.dtype == torch.uint8
    assert test.x.shape == (200, 3, 32, 32) and test.y.dtype == torch.int64
    assert torch.equal(torch.bincount(train.y), torch.full((100,), 6))
    assert len(names) == 100


def test_reader_matches_the_official_row_layout(tiny_cifar):
    """Rows are channel-major: 1024 red, then 1024 green, then 1024 blue values."""
    with open(tiny_cifar / "train", "rb") as f:
        raw = pickle.load(f, encoding="latin1")["data"]
    train, _, _ = data.read_cifar100(tiny_cifar)
    assert np.array_equal(train.x[5, 1].numpy().ravel(), raw[5, 1024:2048])


def test_normalize_uses_official_statistics():
    x = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    out = data.normalize(x)
    expected = (1 - torch.tensor(data.MEAN)) / torch.tensor(data.STD)
    assert torch.allclose(out[0, :, 0, 0], expected)
    assert data.normalize(x, size=64).shape == (1, 3, 64, 64)
    assert torch.allclose(data.denormalize(out), torch.ones_like(out))


def _corrupt(folder, part, **changes):
    with open(folder / part, "rb") as f:
        obj = pickle.load(f, encoding="latin1")
    obj.update(changes)
    for k, v in list(obj.items()):
        if v is None:
            del obj[k]
    with open(folder / part, "wb") as f:
        pickle.dump(obj, f)


@pytest.mark.parametrize("part, changes, message", [
    ("train", dict(fine_labels=None), r"lacks the key\(s\) \['fine_labels'\]"),
    ("train", dict(data=np.zeros((600, 1024), np.uint8)), r"shape \(N, 3072\)"),
    ("test", dict(fine_labels=[100] * 200), r"labels must lie in 0..99"),
    ("test", dict(fine_labels=[0] * 3), r"200 images but 'fine_labels'"),
    ("meta", dict(fine_label_names=["a"]), "must list 100 names"),
])
def test_malformed_folder_gives_clear_error(tiny_cifar, part, changes, message):
    _corrupt(tiny_cifar, part, **changes)
    with pytest.raises(data.DataError, match=message):
        data.read_cifar100(tiny_cifar)


def test_unreadable_and_missing_files(tiny_cifar):
    (tiny_cifar / "test").write_bytes(b"not a pickle")
    with pytest.raises(data.DataError, match="not a readable CIFAR-100 pickle"):
        data.read_cifar100(tiny_cifar)
    (tiny_cifar / "test").unlink()
    with pytest.raises(data.DataError, match="test is missing"):
        data.read_cifar100(tiny_cifar)


def test_failed_download_names_folder_and_fix(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")
    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(data.DataError, match=f"{tmp_path}.*network is unreachable.*LRP_DATA_DIR"):
        data.load_cifar100(tmp_path)


def test_data_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("LRP_DATA_DIR", str(tmp_path / "env"))
    assert data.data_root() == tmp_path / "env"
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_root(tmp_path / "x" / "cifar-100-python") == tmp_path / "x"
    monkeypatch.delenv("LRP_DATA_DIR")
    assert data.data_root().name == "data"


def test_stratified_split_is_balanced_disjoint_and_seeded():
    y = torch.arange(100).repeat(10)
    keep, held = data.stratified_split(y, 3, seed=0)
    assert torch.equal(torch.bincount(y[held]), torch.full((100,), 3))
    assert len(set(keep.tolist()) | set(held.tolist())) == len(y) and len(keep) + len(held) == len(y)
    assert torch.equal(held, data.stratified_split(y, 3, seed=0)[1])
    assert not torch.equal(held, data.stratified_split(y, 3, seed=1)[1])


def test_augment_matches_per_image_crop_and_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8)
    out = data.augment(x, torch.Generator().manual_seed(3))
    # reference: the same random draws, one image at a time
    g = torch.Generator().manual_seed(3)
    oy, ox = torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(16):
        crop = padded[i, :, oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
        assert torch.equal(out[i], crop.flip(2) if flip[i] else crop)


def test_class_balanced_sample(tiny_cifar):
    train, _, _ = data.read_cifar100(tiny_cifar)
    ref = data.class_balanced_sample(train, 2, seed=0)
    assert torch.equal(torch.bincount(ref.y), torch.full((100,), 2))
    with pytest.raises(data.DataError, match="cannot take 7"):
        data.class_balanced_sample(train, 7, seed=0)


def test_smoke_profile_generates_its_data(smoke):
    d = data.load_data(smoke)
    assert (len(d.train), len(d.val), len(d.test)) == (2000, 400, 400)
    assert (smoke.artifacts / "data" / "cifar-100-python" / "meta").exists()


def test_a_subset_keeps_that_many_images_per_class_in_each_split_and_writes_apart(smoke):
    p = config.get_profile("smoke", subset_per_class=10)
    d = data.load_data(p)
    assert torch.equal(torch.bincount(d.train.y), torch.full((100,), 10))
    assert torch.equal(torch.bincount(d.val.y), torch.full((100,), 10))  # in place of val_per_class
    assert torch.equal(torch.bincount(d.test.y), torch.full((100,), 4))  # the smoke test split has 4 per class
    full = data.load_data(smoke)
    pool = torch.cat([full.train.x[full.train.y == 0], full.val.x[full.val.y == 0]])  # the official training split
    mine = torch.cat([d.train.x[d.train.y == 0], d.val.x[d.val.y == 0]])
    assert all(any(torch.equal(x, y) for y in pool) for x in mine)
    assert not any(torch.equal(x, y) for x in d.train.x[d.train.y == 0] for y in d.val.x[d.val.y == 0])
    assert p.figures.name == p.artifacts.name == "smoke_subset10" and smoke.figures.name == "smoke"
    assert torch.equal(data.load_data(p).train.x, d.train.x)  # seeded
    assert (p.held_out_per_class, smoke.held_out_per_class) == (10, smoke.val_per_class)
    from helpers.studies import lowdata  # the low-data study halves the subset's validation split
    search, compare = lowdata.validation_halves(d, p, 5)
    assert torch.equal(torch.bincount(search.y), torch.full((100,), 5)) and len(compare) == 500


def test_a_subset_larger_than_the_data_is_refused_with_the_largest_allowed():
    with pytest.raises(data.DataError, match="subset_per_class 13 is larger than the data: .* 24 images in its "
                                             "smallest class; pass at most 12"):
        data.load_data(config.get_profile("smoke", subset_per_class=13))
    with pytest.raises(ValueError, match="'subset_per_class' must be >= 0"):
        config.get_profile("smoke", subset_per_class=-1)


@pytest.mark.skipif(staged_cifar() is None, reason="LRP_DATA_DIR does not point at CIFAR-100")
def test_staged_real_cifar100():
    train, test, names = data.read_cifar100(staged_cifar())
    assert len(train) == 50_000 and len(test) == 10_000
    assert torch.equal(torch.bincount(train.y), torch.full((100,), 500))
    assert torch.equal(torch.bincount(test.y), torch.full((100,), 100))
    mean = train.x.float().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor([0.5071, 0.4865, 0.4409]), atol=5e-4)
    assert names[0] == "apple"


class _RunsCode:
    """What a crafted data file could carry: unpickling it would call ``os.system``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tiny_cifar, tmp_path):
    marker = tmp_path / "pwned"
    (tiny_cifar / "meta").write_bytes(pickle.dumps({"fine_label_names": _RunsCode(marker)}, protocol=2))
    with pytest.raises(data.UnsafePickleError, match=r"meta was refused without running it: it refers to "
                                                     r"(posix|os)\.system"):
        data.read_cifar100(tiny_cifar)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_data_pickles_load_at_every_protocol(tmp_path, protocol):
    """The official files are protocol-2 pickles of dicts, lists, strings and NumPy arrays."""
    obj = {"data": np.arange(12, dtype=np.uint8).reshape(2, 6), "fine_labels": [1, 2],
           "batch_label": "training batch 1 of 1", "raw": b"\x00\xff", "scale": np.float64(0.5)}
    (tmp_path / "part").write_bytes(pickle.dumps(obj, protocol=protocol))
    with open(tmp_path / "part", "rb") as f:
        got = data.safe_unpickle(f)
    assert np.array_equal(got["data"], obj["data"]) and got["data"].dtype == np.uint8
    assert got["fine_labels"] == [1, 2] and got["batch_label"] == obj["batch_label"]
    assert got["raw"] == b"\x00\xff" and got["scale"] == 0.5

import pytest
import torch

from helpers.core import config, data, models
from helpers.methods import distillation, training


@pytest.fixture
def kd(smoke):
    """A short distillation setting on the smoke data; the teacher's logits cache starts empty."""
    distillation._CACHE.clear()
    yield config.get_profile("smoke", epochs=1, synthetic_train_per_class=6, kd_alpha=0.5)
    distillation._CACHE.clear()


def _student_and_teacher(p, seed=0):
    torch.manual_seed(seed)
    return models.create_model(p), models.create_model(p)


def _forward_counter(module):
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_distillation_loss_against_a_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.0]])
    t = torch.tensor([[0.0, 3.0, 1.0]])
    y = torch.tensor([2])
    T, alpha = 2.0, 0.7
    ps = torch.exp(s / T) / torch.exp(s / T).sum()
    pt = torch.exp(t / T) / torch.exp(t / T).sum()
    kl = (pt * (pt.log() - ps.log())).sum()
    ce = -torch.log(torch.exp(s[0, 2]) / torch.exp(s).sum())
    want = alpha * T * T * kl + (1 - alpha) * ce
    assert distillation.distillation_loss(s, t, y, T, alpha).item() == pytest.approx(want.item(), rel=1e-6)
    assert distillation.distillation_loss(s, t, y, T, 0.0).item() == pytest.approx(ce.item(), rel=1e-6)
    assert distillation.distillation_loss(t, t, y, T, 1.0).item() == pytest.approx(0.0, abs=1e-7)



def test_cached_teacher_logits_train_to_the_same_weights_as_inline_ones(kd, tmp_path, monkeypatch):
    """The cache changes when the teacher runs, not what it gives: bit-identical weights."""
    d, spec = data.load_data(kd), models.spec_for(kd)
    weights = []
    for cache_bytes in (distillation.CACHE_BYTES, 0):
        monkeypatch.setattr(distillation, "CACHE_BYTES", cache_bytes)
        student, teacher = _student_and_teacher(kd)
        training.fit(student, d, kd, tmp_path / f"{cache_bytes}.pt", spec, teacher=teacher)
        weights.append(student.state_dict())
    assert len(distillation._CACHE) == 1
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_teacher_runs_once_per_seed_however_many_runs_share_it(kd):
    """Three runs' epochs, the first two with their batch generator seeded alike (as ``fit``
    seeds it from the run's seed), the third not: the teacher runs for the first and third only."""
    d = data.load_data(kd)
    _, teacher = _student_and_teacher(kd)
    teacher.eval()
    calls, steps = _forward_counter(teacher), 4
    for run, seed in enumerate((0, 0, 1)):
        student, _ = _student_and_teacher(kd, seed=run)
        opt, sched = training.make_optimizer(student, kd, steps)
        training.train_epoch(student, d.train, opt, sched, kd, torch.Generator().manual_seed(seed),
                             max_steps=steps, teacher=teacher)
    assert len(calls) == 2 * steps and len(distillation._CACHE) == 2


def test_targets_leave_the_generator_alone_and_serve_shorter_requests(kd):
    d = data.load_data(kd)
    _, teacher = _student_and_teacher(kd)
    teacher.eval()
    g = torch.Generator().manual_seed(7)
    before = g.get_state()
    full = distillation.targets(teacher, d.train, kd.batch_size, kd.input_size, g, 5)
    assert torch.equal(g.get_state(), before)
    x, _ = next(data.batches(d.train, kd.batch_size, kd.input_size, shuffle=True, generator=g, train_augment=True))
    assert torch.equal(full[0], distillation.teacher_logits(teacher, x))  # what the first batch gives inline
    calls = _forward_counter(teacher)
    again = distillation.targets(teacher, d.train, kd.batch_size, kd.input_size, torch.Generator().manual_seed(7), 3)
    assert all(torch.equal(a, b) for a, b in zip(again, full))
    assert not calls  # a prefix of what is cached


def test_logits_too_large_for_the_cache_are_left_to_the_caller(kd, monkeypatch):
    d = data.load_data(kd)
    _, teacher = _student_and_teacher(kd)
    monkeypatch.setattr(distillation, "CACHE_BYTES", 1000)
    assert distillation.targets(teacher, d.train, kd.batch_size, kd.input_size, torch.Generator(), 2) is None

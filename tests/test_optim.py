"""optim.py against references: torch.optim.AdamW, torch.nn.utils.clip_grad_norm_, the handout's numbers."""
import io
import math

import pytest
import torch

from optim import SGD, AdamW, clip_grad_norm, cosine_lr


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def _train(model, opt, steps, seed=1):
    """Regression on fixed random data; returns the flattened parameters."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(16, 3, generator=g), torch.randn(16, 2, generator=g)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("foreach", [False, True])
def test_adamw_matches_torch_over_1000_steps(foreach):
    kw = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    ref_model, our_model = _tiny_model(), _tiny_model()
    ref = _train(ref_model, torch.optim.AdamW(ref_model.parameters(), **kw), 1000)
    ours = _train(our_model, AdamW(our_model.parameters(), foreach=foreach, **kw), 1000)
    assert (ours - ref).abs().max() < 1e-6
    init = torch.cat([p.detach().flatten() for p in _tiny_model().parameters()])
    assert (ours - init).abs().max() > 0.1  # the parameters really moved


def test_adamw_foreach_equals_plain_bit_for_bit():
    kw = dict(lr=3e-3, weight_decay=0.1)
    a, b = _tiny_model(), _tiny_model()
    assert torch.equal(_train(a, AdamW(a.parameters(), **kw), 50), _train(b, AdamW(b.parameters(), foreach=True, **kw), 50))


def test_adamw_first_step_by_hand():
    # Step 1: m = (1-b1) g, v = (1-b2) g^2, lr_1 = lr sqrt(1-b2)/(1-b1) -> update = lr g / (|g| + eps/sqrt(1-b2)),
    # then theta <- theta (1 - lr wd).
    lr, wd, eps, b1, b2 = 0.1, 0.5, 1e-8, 0.9, 0.999
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    p.grad = torch.tensor([0.5, -4.0, 0.0], dtype=torch.float64)
    AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd).step()
    g = torch.tensor([0.5, -4.0, 0.0], dtype=torch.float64)
    step = lr * math.sqrt(1 - b2) / (1 - b1) * (1 - b1) * g / ((1 - b2) ** 0.5 * g.abs() + eps)
    expected = (torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64) - step) * (1 - lr * wd)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-15)


def test_adamw_per_group_lr_and_decay():
    # Group 2 has lr 0 and no decay: it must not move; group 1 must.
    a, b = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    opt = AdamW([{"params": [a]}, {"params": [b], "lr": 0.0, "weight_decay": 0.0}], lr=0.1, weight_decay=0.1)
    for _ in range(3):
        a.grad, b.grad = torch.ones(4), torch.ones(4)
        opt.step()
    assert torch.equal(b.detach(), torch.ones(4)) and (a.detach() < 0.8).all()


@pytest.mark.parametrize("foreach", [False, True])
def test_adamw_state_dict_round_trip_resumes_exactly(foreach):
    straight = _tiny_model()
    want = _train(straight, AdamW(straight.parameters(), lr=1e-2, foreach=foreach), 20)
    # 10 steps, save model + optimizer through a file object, restore into fresh objects, 10 more steps.
    m1 = _tiny_model()
    o1 = AdamW(m1.parameters(), lr=1e-2, foreach=foreach)
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        x, y = torch.randn(16, 3, generator=g), torch.randn(16, 2, generator=g)
        o1.zero_grad()
        ((m1(x) - y) ** 2).mean().backward()
        o1.step()
    buf = io.BytesIO()
    torch.save({"model": m1.state_dict(), "opt": o1.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    m2 = _tiny_model(seed=123)
    m2.load_state_dict(ckpt["model"])
    o2 = AdamW(m2.parameters(), lr=1e-2, foreach=foreach)
    o2.load_state_dict(ckpt["opt"])
    assert o2.state[next(m2.parameters())]["step"] == 10
    for _ in range(10):
        x, y = torch.randn(16, 3, generator=g), torch.randn(16, 2, generator=g)
        o2.zero_grad()
        ((m2(x) - y) ** 2).mean().backward()
        o2.step()
    assert torch.equal(torch.cat([p.detach().flatten() for p in m2.parameters()]), want)


def test_adamw_rejects_bad_hyperparameters():
    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="learning rate"):
        AdamW(p, lr=-1)
    with pytest.raises(ValueError, match="betas"):
        AdamW(p, betas=(0.9, 1.0))


def test_sgd_handout_example():
    # The handout's toy loop: loss = mean(weights^2), lr / sqrt(t + 1); it must decrease with lr=1 and the
    # first step is exactly w <- w - lr * grad.
    torch.manual_seed(0)
    w = torch.nn.Parameter(5 * torch.randn(10, 10))
    opt = SGD([w], lr=1.0)
    losses = []
    for t in range(10):
        opt.zero_grad()
        loss = (w**2).mean()
        losses.append(loss.item())
        before = w.detach().clone()
        loss.backward()
        opt.step()
        torch.testing.assert_close(w.detach(), before - 1.0 / math.sqrt(t + 1) * w.grad, rtol=0, atol=1e-6)
    assert all(b < a for a, b in zip(losses, losses[1:]))


def test_cosine_lr_handout_values():
    # tests/test_optimizer.py of the CS336 handout: max 1, min 0.1, warmup 7, cycle 21, steps 0..24.
    expected = [
        0, 0.14285714285714285, 0.2857142857142857, 0.42857142857142855, 0.5714285714285714,
        0.7142857142857143, 0.8571428571428571, 1.0, 0.9887175604818206, 0.9554359905560885,
        0.9018241671106134, 0.8305704108364301, 0.7452476826029011, 0.6501344202803414, 0.55,
        0.44986557971965857, 0.3547523173970989, 0.26942958916356996, 0.19817583288938662,
        0.14456400944391146, 0.11128243951817937, 0.1, 0.1, 0.1, 0.1,
    ]
    got = [cosine_lr(t, max_lr=1, min_lr=0.1, warmup_iters=7, cosine_cycle_iters=21) for t in range(25)]
    assert got == pytest.approx(expected, abs=1e-12)


def test_cosine_lr_edge_cases():
    assert cosine_lr(0, 1.0, 0.1, 0, 10) == 1.0  # no warmup starts at max_lr
    assert cosine_lr(5, 1.0, 0.1, 5, 5) == 1.0  # warmup == cycle: no 0/0
    assert cosine_lr(6, 1.0, 0.1, 5, 5) == 0.1


def _grads(seed, shapes, scale):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for p in params:
        p.grad = scale * torch.randn(p.shape, generator=g)
    return params


@pytest.mark.parametrize("scale", [0.01, 100.0])  # below and above max_norm
def test_clip_grad_norm_matches_torch(scale):
    shapes = [(5, 4), (4,), (3, 3, 2)]
    ours, ref = _grads(0, shapes, scale), _grads(0, shapes, scale)
    ours.append(torch.nn.Parameter(torch.zeros(2)))  # no grad: skipped
    norm = clip_grad_norm(ours, max_norm=1.0)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, max_norm=1.0)
    torch.testing.assert_close(norm, ref_norm, rtol=1e-6, atol=0)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9)
    after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ours[:3]]))
    assert after <= 1.0 + 1e-6 and (scale < 1 or after > 0.999)


def test_clip_grad_norm_leaves_small_grads_bit_identical_and_handles_no_grads():
    params = _grads(1, [(3, 3)], 1e-3)
    before = params[0].grad.clone()
    clip_grad_norm(params, max_norm=1.0)
    assert torch.equal(params[0].grad, before)
    assert clip_grad_norm([torch.nn.Parameter(torch.zeros(2))], 1.0) == 0

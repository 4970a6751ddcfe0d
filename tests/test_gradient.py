"""The GR gradient: equalities that pin the formula down, the paper's Eq. 6, stability and bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from fastgr import (
    effective_sample_size,
    emphasis_focus,
    emphasis_spread,
    emphasis_weights,
    gr_gradient,
    gr_terms,
    weight_curve,
)

SHAPES = [(1, 2), (1, 1000), (7, 3), (64, 10), (512, 2), (33, 1000), (512, 100), (512, 1000)]


def autograd_grad(loss_fn, logits, targets):
    z = logits.clone().requires_grad_(True)
    loss_fn(z, targets).backward()
    return z.grad


def p_label(z, y):
    return torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1)


LOSSES = {
    # name: (loss, beta, lam), all mean-reduced over the batch
    "ce": (lambda z, y: F.cross_entropy(z, y), 2.0, 0.0),
    "mae": (lambda z, y: (2 * (1 - p_label(z, y))).mean(), 4.0, 1.0),
    "gce_q0.3": (lambda z, y: ((1 - p_label(z, y) ** 0.3) / 0.3).mean(), 2.0, 0.3),
    "gce_q0.7": (lambda z, y: ((1 - p_label(z, y) ** 0.7) / 0.7).mean(), 2.0, 0.7),
}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}xC{s[1]}")
@pytest.mark.parametrize("loss", LOSSES)
def test_identity_mean_reproduces_known_losses(loss, shape):
    B, C = shape
    g = torch.Generator().manual_seed(B * 7919 + C)
    z = torch.randn(B, C, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, C, (B,), generator=g)
    fn, beta, lam = LOSSES[loss]
    expected = autograd_grad(fn, z, y)
    got = gr_gradient(z, y, lam=lam, beta=beta, transform="identity", normalize="mean", eps=0)
    assert got.dtype == torch.float64 and got.shape == z.shape
    err = (got - expected).abs().max().item()
    assert err <= 1e-6
    # and relative to the gradient's own size, so tiny gradients (large C) are checked too
    assert expected.abs().max().item() > 0 and err <= 1e-9 * expected.abs().max().item()
    # the reference layer's saturation (the default) stays within beta * eps / 4 / B of it
    default = gr_gradient(z, y, lam=lam, beta=beta, transform="identity", normalize="mean")
    assert (default - expected).abs().max().item() <= beta * 1e-6 / 4 / B + 1e-15


def test_extra_dims_are_examples_like_cross_entropy():
    z = torch.randn(3, 5, 4, 2, dtype=torch.float64)
    y = torch.randint(0, 5, (3, 4, 2))
    expected = autograd_grad(lambda a, b: F.cross_entropy(a, b), z, y)
    got = gr_gradient(z, y, lam=0, beta=2, transform="identity", normalize="mean", eps=0)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    # and with GR's defaults it equals the (B*H*W, C) computation, rearranged
    flat = gr_gradient(z.movedim(1, -1).reshape(-1, 5), y.reshape(-1))
    torch.testing.assert_close(gr_gradient(z, y), flat.reshape(3, 4, 2, 5).movedim(-1, 1))


def naive_eq6(z, y, lam, beta, transform, normalize):
    """The paper's Eq. 6 written out directly in float64: w_i (p_i - y_i) / ||p_i - y_i||_1."""
    z = z.double()
    B, C = z.shape
    p = torch.softmax(z, 1)
    onehot = torch.zeros(B, C, dtype=torch.float64)
    onehot[torch.arange(B), y] = 1
    py = p[torch.arange(B), y]
    q = (p * (1 - onehot)).sum(1)  # 1 - p without cancellation (naive_reference_layer)
    diff = p - onehot
    diff[torch.arange(B), y] = -q
    direction = diff / diff.abs().sum(1, keepdim=True)
    score = beta * py**lam * q
    w = torch.exp(score) if transform == "exp" else score
    w = w / w.sum() if normalize == "sum" else w / B
    return w[:, None] * direction


@given(
    B=st.integers(1, 48),
    C=st.integers(2, 40),
    lam=st.floats(0, 4),
    # 0, or large enough that the naive form's beta * p**lam * (1 - p) is a normal float (a subnormal beta such as
    # 5e-324 rounds it to 0 there, while gr_gradient's log-space softmax keeps the exact ratios)
    beta=st.one_of(st.just(0.0), st.floats(1e-3, 40)),
    scale=st.floats(0.05, 6),
    transform=st.sampled_from(["exp", "identity"]),
    normalize=st.sampled_from(["sum", "mean"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_naive_eq6(B, C, lam, beta, scale, transform, normalize, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, C, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, C, (B,), generator=g)
    if transform == "identity" and normalize == "sum" and beta == 0:
        beta = 1.0  # 0/0 in the naive form; covered separately below
    expected = naive_eq6(z, y, lam, beta, transform, normalize)
    got = gr_gradient(z, y, lam, beta, transform, normalize, eps=0)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    # and in float32, to float32 accuracy
    got32 = gr_gradient(z.float(), y, lam, beta, transform, normalize, eps=0)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), expected, rtol=1e-4, atol=1e-6)


def naive_reference_layer(z, y, lam, beta, eps):
    """The authors' Caffe GR layer written out in float64: diff = (p - y) / (2 - 2p + eps) * w, over sum w."""
    z = z.double()
    B, C = z.shape
    p = torch.softmax(z, 1)
    onehot = torch.zeros(B, C, dtype=torch.float64)
    onehot[torch.arange(B), y] = 1
    py = p[torch.arange(B), y]
    # 1 - p as the other classes' probabilities summed: written as 1 - py (and p_y - 1) it cancels where p is within
    # ~1e-9 of 1 (logits spread by scale 12), and the reference itself is off by more than the tolerance
    q = (p * (1 - onehot)).sum(1)
    diff = p - onehot
    diff[torch.arange(B), y] = -q
    w = torch.exp(beta * py**lam * q)
    return diff / (2 * q[:, None] + eps) * w[:, None] / w.sum()


@given(
    B=st.integers(1, 48),
    C=st.integers(2, 40),
    lam=st.floats(0, 4),
    beta=st.floats(0, 40),
    scale=st.floats(0.05, 12),
    seed=st.integers(0, 2**31 - 1),
)
def test_default_matches_the_reference_layer(B, C, lam, beta, scale, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, C, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, C, (B,), generator=g)
    expected = naive_reference_layer(z, y, lam, beta, 1e-6)
    torch.testing.assert_close(gr_gradient(z, y, lam, beta), expected, rtol=1e-7, atol=1e-12)


def test_identity_sum_with_beta_zero_is_zero_not_nan():
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert torch.equal(gr_gradient(z, y, beta=0, transform="identity"), torch.zeros(4, 3))


def test_beta_zero_weighs_every_example_alike():
    z, y = torch.randn(10, 4), torch.randint(0, 4, (10,))
    w = emphasis_weights(z, y, lam=3, beta=0)
    torch.testing.assert_close(w, torch.full((10,), 0.1))
    assert emphasis_spread(w).item() == pytest.approx(0, abs=1e-12)


EXTREME = [
    ("above", 1e4),  # p_i rounds to 1
    ("below", -1e4),  # p_i rounds to 0
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("normalize", ["sum", "mean"])
@pytest.mark.parametrize("transform", ["exp", "identity"])
def test_extreme_logits_stay_finite(dtype, normalize, transform):
    B, C = 6, 5
    z = torch.zeros(B, C)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    z[torch.arange(3), y[:3]] = 1e4  # target logit far above the rest: p rounds to 1
    z[torch.arange(3, 6), y[3:]] = -1e4  # far below: p rounds to 0
    z = z.to(dtype)
    terms = gr_terms(z, y, lam=1, beta=16, transform=transform, normalize=normalize, eps=0)
    G = terms.gradient
    assert G.dtype == dtype and torch.isfinite(G).all()
    assert torch.isfinite(terms.weight).all() and torch.isfinite(terms.p).all()
    assert terms.p[:3].tolist() == [1.0] * 3 and terms.p[3:].tolist() == [0.0] * 3
    # the direction is intact even where p rounds to 1: -1/2 on the label, the rest on the others
    u = G.float() / terms.weight[:, None]
    ok = terms.weight > 0
    torch.testing.assert_close(u[ok, :].abs().sum(1), torch.ones(int(ok.sum())), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(u[ok].gather(1, y[ok][:, None]).squeeze(1), torch.full((int(ok.sum()),), -0.5),
                               rtol=1e-2, atol=1e-2)
    # with the reference layer's saturation, examples fitted to p = 1 push no more; the rest are unchanged
    sat = gr_terms(z, y, lam=1, beta=16, transform=transform, normalize=normalize)
    assert torch.isfinite(sat.gradient).all()
    assert sat.gradient[:3].abs().max().item() == 0
    torch.testing.assert_close(sat.gradient[3:].float(), G[3:].float(), rtol=1e-2, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_huge_beta_does_not_overflow_with_sum(dtype):
    g = torch.Generator().manual_seed(3)
    z = (torch.randn(256, 10, generator=g) * 4).to(dtype)
    y = torch.randint(0, 10, (256,), generator=g)
    terms = gr_terms(z, y, lam=1, beta=1e4, eps=0)
    assert torch.isfinite(terms.gradient).all()
    assert torch.isfinite(gr_gradient(z, y, lam=1, beta=1e4)).all()
    total = terms.weight.sum().item()
    assert total == pytest.approx(1.0, abs=1e-5)
    # every example contributes an L1 mass of its weight: the batch's gradient has L1 norm 1
    assert terms.gradient.float().abs().sum().item() == pytest.approx(1.0, rel=2e-2)
    # with so large a beta the example closest to the focus carries (nearly) all the weight
    s = terms.p * (1 - terms.p)
    assert terms.weight.argmax().item() == s.argmax().item()
    assert terms.weight.max().item() > 0.5


def test_sum_normalised_weights_add_to_one_and_grad_l1_is_one():
    z, y = torch.randn(100, 7) * 2, torch.randint(0, 7, (100,))
    for transform in ("exp", "identity"):
        t = gr_terms(z, y, 0.5, 8, transform, "sum", eps=0)
        assert t.weight.sum().item() == pytest.approx(1, abs=1e-6)
        assert t.gradient.abs().sum().item() == pytest.approx(1, abs=1e-5)
        # each row of G sums to zero, like every softmax-loss gradient
        assert t.gradient.sum(1).abs().max().item() < 1e-7


def test_weights_are_constants():
    z = torch.randn(8, 4, requires_grad=True)
    y = torch.randint(0, 4, (8,))
    G = gr_gradient(z, y)
    assert not G.requires_grad


def test_emphasis_focus_is_where_the_curve_peaks():
    p = torch.linspace(0, 1, 100001, dtype=torch.float64)
    for lam in (0.0, 0.3, 0.5, 1.0, 2.0):
        peak = p[weight_curve(p, lam, 8.0).argmax()].item()
        assert emphasis_focus(lam) == pytest.approx(lam / (1 + lam))
        assert peak == pytest.approx(emphasis_focus(lam), abs=1e-4)
    assert emphasis_focus(1) == 0.5
    # beta = 0: a flat curve
    assert torch.equal(weight_curve(p, 1.0, 0.0), torch.ones_like(p))
    assert weight_curve(0.5, 1, 16).item() == pytest.approx(math.exp(16 * 0.25))


def test_spread_and_effective_sample_size_values():
    even, one = torch.ones(4), torch.tensor([1.0, 0, 0, 0])
    assert emphasis_spread(even).item() == 0
    # [1, 0, 0, 0] rescaled to mean 1 is [4, 0, 0, 0]: variance ((4-1)^2 + 3 * 1) / 4 = 3
    assert emphasis_spread(one).item() == pytest.approx(3.0)
    assert emphasis_spread(one * 123).item() == pytest.approx(3.0)  # scale-free
    assert effective_sample_size(even).item() == pytest.approx(1.0)
    assert effective_sample_size(one).item() == pytest.approx(0.25)
    assert effective_sample_size(torch.tensor([2.0, 2, 1, 1])).item() == pytest.approx(36 / 10 / 4)


def test_gradient_keeps_logits_dtype_and_shape():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        z = torch.randn(5, 3).to(dtype)
        G = gr_gradient(z, torch.tensor([0, 1, 2, 1, 0]))
        assert G.dtype == dtype and G.shape == (5, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lam=-0.1), "lam must be a finite number >= 0"),
        (dict(beta=-1), "beta must be a finite number >= 0"),
        (dict(beta=float("nan")), "beta must be a finite number >= 0"),
        (dict(transform="softplus"), "unknown transform 'softplus'"),
        (dict(normalize="batch"), "unknown normalize 'batch'"),
        (dict(beta=100, normalize="mean"), "overflows exp"),
        (dict(eps=-1e-6), "eps must be a finite number >= 0"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gr_gradient(torch.randn(2, 3), torch.tensor([0, 1]), **kwargs)


def test_bad_inputs_are_named():
    z = torch.randn(4, 3)
    with pytest.raises(TypeError, match="soft or multi-label targets"):
        gr_gradient(z, torch.softmax(torch.randn(4, 3), 1))
    with pytest.raises(TypeError, match="soft or multi-label targets"):
        gr_gradient(z, torch.rand(4))
    with pytest.raises(ValueError, match=r"label 3 is outside \[0, 3\)"):
        gr_gradient(z, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"label -1 is outside \[0, 3\)"):
        gr_gradient(z, torch.tensor([0, -1, 2, 2]))
    with pytest.raises(ValueError, match="class axis .* has size 1; GR needs at least 2 classes"):
        gr_gradient(torch.randn(4, 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="do not match logits"):
        gr_gradient(z, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="floating-point"):
        gr_gradient(torch.ones(4, 3, dtype=torch.long), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"shape \(B, C\)"):
        gr_gradient(torch.randn(4), torch.tensor([0, 1, 2, 0]))

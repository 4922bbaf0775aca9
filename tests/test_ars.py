"""ARS parts against hand computations: brute-force criss-cross attention, known reactivation gates."""

from __future__ import annotations

import math

import pytest
import torch

from arml.ars import ARS, CrissCrossAttention, Reactivation


def _qkv(cca, x):
    return cca.query(x), cca.key(x), cca.value(x)


def _brute_force_paper(cca, x):
    """Every position attends to the H+W−1 distinct positions of its row and column, one at a time."""
    q, k, v = _qkv(cca, x)
    b_, _, h, w = x.shape
    out = torch.empty_like(x)
    for b in range(b_):
        for i in range(h):
            for j in range(w):
                keys = sorted({(r, j) for r in range(h)} | {(i, c) for c in range(w)})
                assert len(keys) == h + w - 1
                energy = torch.stack([q[b, :, i, j] @ k[b, :, r, c] for r, c in keys])
                attn = energy.softmax(0)
                context = sum(a * v[b, :, r, c] for a, (r, c) in zip(attn, keys, strict=True))
                out[b, :, i, j] = x[b, :, i, j] + cca.gamma * context
    return out


def _brute_force_official(cca, x):
    """The released code: H+W keys (self twice), softmax over the query row i for each (j, key slot)."""
    q, k, v = _qkv(cca, x)
    b_, _, h, w = x.shape

    def key(i, j, n):  # key slot n of query (i, j): column keys first, then row keys
        return (n, j) if n < h else (i, n - h)

    energy = torch.empty(b_, h, w, h + w)
    for b in range(b_):
        for i in range(h):
            for j in range(w):
                for n in range(h + w):
                    energy[b, i, j, n] = q[b, :, i, j] @ k[b, :, key(i, j, n)[0], key(i, j, n)[1]]
    attn = torch.empty_like(energy)
    for b in range(b_):
        for j in range(w):
            for n in range(h + w):
                attn[b, :, j, n] = energy[b, :, j, n].softmax(0)
    out = torch.empty_like(x)
    for b in range(b_):
        for i in range(h):
            for j in range(w):
                context = sum(
                    attn[b, i, j, n] * v[b, :, key(i, j, n)[0], key(i, j, n)[1]] for n in range(h + w)
                )
                out[b, :, i, j] = x[b, :, i, j] + cca.gamma * context
    return out


@pytest.mark.parametrize("recipe", ["paper", "official"])
def test_cca_matches_brute_force(recipe):
    torch.manual_seed(0)
    cca = CrissCrossAttention(16, recipe=recipe)
    with torch.no_grad():
        cca.gamma.fill_(0.7)
        x = torch.randn(2, 16, 3, 4)
        expected = (_brute_force_paper if recipe == "paper" else _brute_force_official)(cca, x)
        assert torch.allclose(cca(x), expected, atol=1e-5)


def test_cca_attention_is_a_distribution_over_row_and_column():
    torch.manual_seed(0)
    cca = CrissCrossAttention(16)
    a_col, a_row = cca.attention(torch.randn(2, 16, 5, 3))
    assert a_col.shape == (2, 5, 3, 5) and a_row.shape == (2, 5, 3, 3)
    assert torch.allclose(a_col.sum(-1) + a_row.sum(-1), torch.ones(2, 5, 3))
    diag = a_col.diagonal(dim1=1, dim2=3)  # a_col[b, i, j, i]: the masked duplicate of the query itself
    assert torch.all(diag == 0)


def test_cca_single_position_adds_its_own_value():
    cca = CrissCrossAttention(16)
    with torch.no_grad():
        cca.gamma.fill_(0.5)
        x = torch.randn(2, 16, 1, 1)
        assert torch.allclose(cca(x), x + 0.5 * cca.value(x))


@pytest.mark.parametrize("gamma", [0.0, 0.7])
def test_cca_gamma_is_trained(gamma):
    torch.manual_seed(0)
    cca = CrissCrossAttention(16)
    assert cca.gamma.shape == (1,) and cca.gamma.requires_grad and cca.gamma.item() == 0.0
    with torch.no_grad():
        cca.gamma.fill_(gamma)
    x = torch.randn(2, 16, 3, 4)
    (cca(x) * torch.randn_like(x)).sum().backward()
    assert cca.gamma.grad is not None and cca.gamma.grad.abs().item() > 0
    if gamma:
        assert cca.query.weight.grad.abs().sum() > 0 and cca.value.weight.grad.abs().sum() > 0


def test_cca_official_is_identity_with_frozen_gamma():
    cca = CrissCrossAttention(16, recipe="official")
    x = torch.randn(2, 16, 3, 4)
    assert not cca.gamma.requires_grad and cca.gamma.item() == 0.0
    assert torch.equal(cca(x), x)


def _set_mlp_zero(react):
    with torch.no_grad():
        for p in react.channel_mlp.parameters():
            p.zero_()


def test_reactivation_code_with_zero_weights_scales_by_lambda_squared():
    react = Reactivation(8, lam=0.8)
    _set_mlp_zero(react)
    with torch.no_grad():
        react.spatial_conv.weight.zero_()
        x = torch.randn(2, 8, 5, 6)
        assert torch.allclose(react.channel_gate(x), torch.full((2, 8, 1, 1), 0.8))
        assert torch.allclose(react(x), 0.64 * x)


@pytest.mark.parametrize("pooled", ["max", "mean"])
def test_reactivation_code_spatial_gate_from_channel_pool(pooled):
    lam = 0.8
    react = Reactivation(8, lam=lam)
    _set_mlp_zero(react)
    with torch.no_grad():
        react.spatial_conv.weight.zero_()
        react.spatial_conv.weight[0, 0 if pooled == "max" else 1, 3, 3] = 1.0  # delta at the centre
        x = torch.randn(2, 8, 5, 6)
        f_c = lam * x
        s = f_c.amax(1, keepdim=True) if pooled == "max" else f_c.mean(1, keepdim=True)
        assert torch.allclose(react(x), f_c * lam * torch.exp(-lam * s), atol=1e-6)


def test_reactivation_eq3_constant_input():
    react = Reactivation(8, variant="eq3")
    with torch.no_grad():
        react.spatial_conv.weight.zero_()
        react.spatial_conv.weight[0, 0, 3, 3] = 1.0
        c = 1.5
        x = torch.full((2, 8, 5, 6), c)
        assert torch.allclose(react(x), x * math.exp(-c))
        y = torch.randn(2, 8, 5, 6)
        assert torch.allclose(react(y), y * torch.exp(-y.mean(1, keepdim=True)), atol=1e-6)


def test_reactivation_trainability_by_recipe():
    paper, official = Reactivation(8), Reactivation(8, recipe="official")
    assert all(p.requires_grad for p in paper.parameters())
    assert not any(p.requires_grad for p in official.channel_mlp.parameters())
    assert official.spatial_conv.weight.requires_grad
    x = torch.randn(2, 8, 4, 4)
    official(x).sum().backward()
    assert official.spatial_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"variant": "paper"}, "variant must be one of"),
        ({"recipe": "code"}, "recipe must be one of"),
        ({"lam": 0.0}, "lam must be > 0"),
        ({"reduction": 16}, "in_channels // reduction"),
        ({"variant": "eq3", "recipe": "official"}, "needs variant='code'"),
    ],
)
def test_reactivation_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Reactivation(8, **kwargs)


@pytest.mark.parametrize(
    ("parts", "has_cca", "has_react"),
    [(None, False, False), (False, False, False), ("none", False, False), ("cca", True, False),
     ("reactivation", False, True), ("both", True, True), (True, True, True)],
)  # fmt: skip
def test_ars_parts(parts, has_cca, has_react):
    ars = ARS(16, parts=parts)
    assert (ars.cca is not None, ars.reactivation is not None) == (has_cca, has_react)
    x = torch.randn(2, 16, 3, 4)
    y = ars(x)
    assert y.shape == x.shape
    assert torch.equal(y, x) == (not has_react)  # CCA starts as an identity (γ = 0)
    assert ("identity" in repr(ars)) == (not has_cca and not has_react)


def test_ars_bad_arguments():
    with pytest.raises(ValueError, match=r"ars parts must be one of \[None, 'cca', 'reactivation', 'both'\]"):
        ARS(16, parts="ccA")
    with pytest.raises(ValueError, match="recipe must be one of"):
        ARS(16, recipe="released")
    with pytest.raises(ValueError, match="needs reactivation_variant='code'"):
        ARS(16, recipe="official", reactivation_variant="eq3")
    assert ARS(16, parts="cca", recipe="official", reactivation_variant="eq3").reactivation is None


def test_reactivation_gate_stays_finite_on_huge_features():
    # λ·e^{−λx} overflows to inf for x of a few hundred below zero; the clamped exponent keeps the gate finite
    for variant in ("code", "eq3"):
        react = Reactivation(8, variant=variant)
        huge = torch.full((1, 8, 4, 4), -1e4)
        assert torch.isfinite(react._exp_gate(huge)).all(), variant
        x = torch.randn(1, 8, 4, 4) * 5  # ordinary features: exactly the unclamped gate
        lam = react.lam if variant == "code" else 1.0
        expected = lam * torch.exp(-lam * x) if variant == "code" else torch.exp(-x)
        torch.testing.assert_close(react._exp_gate(x), expected, rtol=0, atol=0)

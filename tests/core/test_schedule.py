import math

import pytest
import torch

from alignlearn.schedule import EPS, T_MAX, cm_steps, ict_steps, index_probs, karras_sigmas, sample_indices, steps_at


@pytest.mark.parametrize("N", [2, 11, 18, 1281])
def test_karras_endpoints_and_monotone(N):
    t = karras_sigmas(N)
    assert t[0].item() == EPS and t[-1].item() == T_MAX
    assert torch.all(t[1:] > t[:-1])
    # fp32 endpoints are exact too: the boundary conditions depend on it
    t32 = karras_sigmas(N, dtype=torch.float32)
    assert t32[-1].item() == 80.0 and t32[0].item() == torch.tensor(EPS, dtype=torch.float32).item()


def test_karras_matches_formula():
    N, rho = 7, 7.0
    t = karras_sigmas(N, 0.002, 80.0, rho)
    for i in range(1, N + 1):
        expect = (0.002 ** (1 / rho) + (i - 1) / (N - 1) * (80 ** (1 / rho) - 0.002 ** (1 / rho))) ** rho
        assert math.isclose(t[i - 1].item(), expect, rel_tol=1e-12)


def test_ict_schedule_start_and_end():
    K = 400_000
    assert steps_at(0, K, "ict", 10, 1280) == 11
    assert steps_at(K, K, "ict", 10, 1280) == 1281
    assert steps_at(K - 1, K, "ict", 10, 1280) == 1281
    # K' = floor(K / 8): the first doubling happens exactly at K'
    assert ict_steps(K // 8 - 1, K) == 11 and ict_steps(K // 8, K) == 21


def test_ict_schedule_monotone_small_budget():
    K = 100
    Ns = [ict_steps(k, K) for k in range(K + 1)]
    assert Ns[0] == 11 and Ns[-1] == 1281 and all(b >= a for a, b in zip(Ns, Ns[1:]))


def test_cm_schedule_endpoints():
    K = 1000
    assert cm_steps(0, K, 2, 150) == 2
    assert cm_steps(K, K, 2, 150) == 151


def test_steps_at_rejects_unknown():
    with pytest.raises(ValueError):
        steps_at(0, 10, "linear")


def test_lognormal_index_frequencies_match_formula():
    t = karras_sigmas(41)
    p = index_probs(t, "lognormal", -1.1, 2.0)
    # formula: mass of a lognormal(P_mean, P_std) on [t_n, t_{n+1})
    phi = lambda s: 0.5 * (1 + math.erf((math.log(s) - (-1.1)) / (math.sqrt(2) * 2.0)))
    mass = torch.tensor([phi(t[i + 1].item()) - phi(t[i].item()) for i in range(40)], dtype=torch.float64)
    assert torch.allclose(p, mass / mass.sum(), atol=1e-12)
    n = 400_000
    idx = sample_indices(p, n, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(idx, minlength=40).double() / n
    # binomial standard error per bin; 5 sigma
    se = torch.sqrt(p * (1 - p) / n)
    assert torch.all((freq - p).abs() <= 5 * se + 1e-12)
    assert idx.max() <= 39  # pair indices: n+1 stays inside the grid


def test_uniform_index_distribution():
    p = index_probs(karras_sigmas(11), "uniform")
    assert torch.allclose(p, torch.full((10,), 0.1, dtype=torch.float64))

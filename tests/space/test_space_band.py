"""Band sampling: exact counts of the networks in a MACs band, uniform draws (checked against
brute-force enumeration of a small space)."""
from __future__ import annotations

import collections

import pytest
from scipy.stats import chisquare

from nasdistill.space import Layer, SearchSpace
from nasdistill.space.band import band_networks

CANDIDATES = ["k3_d2", "k5_d2", "identity", "zero"]


def small_space() -> SearchSpace:
    # identity and zero coincide at the stride-1 layers of equal width: several spellings per network
    return SearchSpace(name="band_small", input_size=(1, 8, 8), num_classes=10, stem_channels=8,
                       layers=[Layer(8, 1, CANDIDATES), Layer(16, 2, CANDIDATES), Layer(16, 1, CANDIDATES),
                               Layer(32, 2, CANDIDATES)], head_width=32)


def brute(space, lo, hi):
    """{arch_id: spellings} of every label assignment with MACs in [lo, hi]."""
    out = collections.Counter()
    for arch in space.architectures():
        if lo <= space.cost(arch)["macs"] <= hi:
            out[space.arch_id(arch)] += 1
    return out


@pytest.mark.parametrize("frac", [(0.0, 1.0), (0.2, 0.4), (0.5, 0.55), (0.9, 1.0)])
def test_counts_equal_enumeration(frac):
    space = small_space()
    rng = space.cost_range()
    lo = rng["macs_min"] + frac[0] * (rng["macs_max"] - rng["macs_min"])
    hi = rng["macs_min"] + frac[1] * (rng["macs_max"] - rng["macs_min"])
    expected = brute(space, lo, hi)
    band = band_networks(space, lo, hi)
    assert band.networks == len(expected)
    assert band.assignments == sum(expected.values())
    if frac == (0.0, 1.0):
        assert band.networks == space.size()
        assert band.assignments == 4 ** 4


def test_draws_are_uniform_over_networks_and_in_band():
    space = small_space()
    rng = space.cost_range()
    lo, hi = rng["macs_min"], rng["macs_min"] + 0.45 * (rng["macs_max"] - rng["macs_min"])
    expected = brute(space, lo, hi)
    spellings = set(expected.values())
    assert len(spellings) > 1  # networks with several spellings: uniform over paths would differ
    band = band_networks(space, lo, hi)
    counts = collections.Counter()
    for seed in range(4000):
        (arch,) = band.sample(1, seed=seed)
        assert lo <= space.cost(arch)["macs"] <= hi
        counts[space.arch_id(arch)] += 1
    assert set(counts) == set(expected)
    # each network equally likely, whatever its number of spellings
    assert chisquare([counts[k] for k in expected]).pvalue > 0.001
    by_spellings = collections.defaultdict(list)
    for k, n in expected.items():
        by_spellings[n].append(counts[k])
    means = [sum(v) / len(v) for v in by_spellings.values()]
    assert max(means) / min(means) < 1.3


def test_sample_is_distinct_excludes_and_refuses_too_many():
    space = small_space()
    rng = space.cost_range()
    lo, hi = rng["macs_min"], rng["macs_min"] + 0.3 * (rng["macs_max"] - rng["macs_min"])
    band = band_networks(space, lo, hi)
    everything = band.sample(band.networks, seed=3)
    ids = [space.arch_id(a) for a in everything]
    assert len(set(ids)) == band.networks
    assert band.sample(2, seed=5) == band.sample(2, seed=5)          # reproducible
    assert band.sample(3, seed=5)[:2] == band.sample(2, seed=5)      # a longer draw extends a shorter one
    taken = everything[:2]
    rest = band.sample(band.networks - 2, seed=1, exclude=taken)
    assert not {space.arch_id(a) for a in rest} & {space.arch_id(a) for a in taken}
    with pytest.raises(ValueError, match="2 of them already taken"):
        band.sample(band.networks - 1, seed=0, exclude=taken)
    empty = band_networks(space, rng["macs_max"] + 1, rng["macs_max"] + 2)
    assert empty.networks == 0
    with pytest.raises(ValueError, match="holds 0 networks"):
        empty.sample(1)

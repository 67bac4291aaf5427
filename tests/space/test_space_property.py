"""Property tests: malformed architectures only ever raise ValueError; valid ones round-trip."""
import json

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces import digits_small, gtn_cifar

DIGITS = digits_small.SPACE
GTN = gtn_cifar.SPACE
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=8), st.binary(max_size=4))
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner),
    st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=10)
hashable_keys = st.one_of(st.text(max_size=8), st.integers(), st.none(), st.booleans(),
                          st.floats(allow_nan=False), st.tuples(st.text(max_size=3)))


def valid_arch(space):
    return st.fixed_dictionaries({label: st.sampled_from(space.choices(label))
                                  for label in space.labels})


@st.composite
def mutated_arch(draw, space):
    """A valid arch with one to three defects: missing/extra labels, junk or unknown choices."""
    arch = dict(draw(valid_arch(space)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "extra", "junk_value", "unknown_choice", "junk_key"]))
        label = draw(st.sampled_from(space.labels))
        if kind == "drop":
            arch.pop(label, None)
        elif kind == "extra":
            arch[draw(st.text(min_size=1, max_size=8))] = draw(st.sampled_from(space.choices(label)))
        elif kind == "junk_value":
            arch[label] = draw(junk)
        elif kind == "unknown_choice":
            arch[label] = draw(st.text(max_size=8).filter(lambda c: c not in space.choices(label)))
        else:
            arch[draw(hashable_keys)] = draw(junk)
    return arch


malformed = st.one_of(
    junk,                                                   # not a mapping (or a junk mapping)
    st.dictionaries(hashable_keys, junk, max_size=8),       # wrong key types, junk values
    mutated_arch(DIGITS),
)


def only_value_error(fn, arch):
    try:
        return fn(arch)
    except ValueError:
        return None


@SETTINGS
@given(malformed)
def test_validate_and_build_raise_only_value_error(arch):
    validated = only_value_error(DIGITS.validate, arch)
    if validated is not None:  # a mutation may land on a valid arch
        assert validated == DIGITS.validate(json.loads(json.dumps(validated)))
        return
    # anything validate rejects, build rejects with ValueError too (never builds half a network)
    assert only_value_error(DIGITS.build, arch) is None
    assert only_value_error(DIGITS.cost, arch) is None
    assert only_value_error(DIGITS.arch_id, arch) is None


@SETTINGS
@given(st.one_of(junk, mutated_arch(GTN)))
def test_validate_gtn_raises_only_value_error(arch):
    validated = only_value_error(GTN.validate, arch)
    if validated is not None:  # a mutation may land on a valid arch: one choice per label
        assert set(validated) == set(GTN.labels)
        assert all(validated[label] in GTN.choices(label) for label in GTN.labels)
        assert validated == GTN.validate(json.loads(json.dumps(validated)))
        return
    # what validate rejects, the cost model and the arch id reject with ValueError too
    assert only_value_error(GTN.cost, arch) is None
    assert only_value_error(GTN.arch_id, arch) is None


@settings(max_examples=40, deadline=None)
@given(valid_arch(DIGITS))
def test_valid_archs_round_trip_through_json_and_build(arch):
    restored = json.loads(json.dumps(arch))
    assert DIGITS.validate(restored) == arch
    assert DIGITS.arch_id(restored) == DIGITS.arch_id(arch)
    model = DIGITS.build(restored).eval()
    assert model.arch == arch
    with torch.no_grad():
        assert model(torch.zeros(2, *DIGITS.input_size)).shape == (2, DIGITS.num_classes)
    assert DIGITS.cost(restored)["params"] == sum(p.numel() for p in model.parameters())


@settings(max_examples=150, deadline=None)
@given(valid_arch(GTN))
def test_valid_gtn_archs_round_trip_through_json(arch):
    restored = json.loads(json.dumps(arch))
    assert GTN.validate(restored) == arch
    assert GTN.arch_id(restored) == GTN.arch_id(arch)
    assert GTN.cost(restored) == GTN.cost(arch)

"""The space as a layered graph, and the most probable architecture within a cost band, against
brute-force enumeration of every architecture."""
import json
import math
import random
import re

import pytest

from nasdistill.space import Layer, SearchSpace, most_probable_arch, space_graph
from nasdistill.space.cost import CostModel, state_key
from search_spaces import digits_small

DIGITS = digits_small.SPACE


def tied_space():
    # "mid" ties layers 2 and 4 across a stride-2 layer: the graph must carry the pending choice
    return SearchSpace(
        name="tied", input_size=(1, 8, 8), num_classes=4, stem_channels=8, head_width=16,
        layers=[Layer(16, 1, ["k3_d2", "k5_d2", "identity", "zero"], label="a"),
                Layer(16, 1, ["k3_d2", "k3_d4", "identity", "zero"], label="mid"),
                Layer(32, 2, ["k3_d2", "identity", "zero"]),
                Layer(32, 1, ["k3_d2", "k3_d4", "identity", "zero"], label="mid")])


def random_probs(space, rng, zeros=False):
    table = {}
    for label in space.labels:
        raw = {c: rng.random() ** 3 for c in space.choices(label)}  # peaked, like trained gates
        if zeros:
            raw[rng.choice(space.choices(label))] = 0.0
        total = sum(raw.values())
        table[label] = {c: v / total for c, v in raw.items()}
    return table


def log_prob(space, probs, arch):
    total = 0.0
    for label in space.labels:  # same order as the dynamic program: first layer of each label
        p = probs[label][arch[label]]
        total += math.log(p) if p > 0 else -math.inf
    return total


def brute_force(space, probs, target, tol, cost_of):
    """(arch, log_prob, cost, in_band) by enumerating every architecture."""
    lo, hi = target * (1 - tol), target * (1 + tol)
    rows = [(a, log_prob(space, probs, a), cost_of(a)) for a in space.architectures()]
    inside = [r for r in rows if lo <= r[2] <= hi]
    if inside:
        best = max(inside, key=lambda r: r[1])
        return best + (True,)
    best = min(rows, key=lambda r: (abs(r[2] - target), -r[1]))
    return best + (False,)


def walk(graph, arch):
    """The source-to-sink path of ``arch``: its edges' data, head edge last."""
    space, node, edges = graph.space, graph.source, []
    for i in range(len(space.layers)):
        choice = arch[space.layer_label(i)]
        (target, data), = [(v, d) for v, k, d in graph.out_edges(node) if k == choice]
        edges.append(data)
        node = target
    (target, data), = [(v, d) for v, k, d in graph.out_edges(node)]
    assert target == graph.sink
    return edges + [data]


@pytest.fixture(scope="module")
def digits_macs():
    return {tuple(a.values()): DIGITS.cost(a)["macs"] for a in DIGITS.architectures()}


# ----------------------------------------------------------------------------- the graph
def test_digits_graph_nodes_are_the_arriving_shapes_and_paths_the_architectures():
    graph = space_graph(DIGITS)
    arriving = DIGITS.arriving_states(0, DIGITS.stem_shape())
    assert [{n.state for n in nodes} for nodes in graph.layer_nodes] == arriving
    assert graph.graph.number_of_nodes() == sum(len(s) for s in arriving) + 1  # + the sink
    assert graph.count_paths() == 5 ** 6
    assert space_graph(DIGITS) is graph  # built once per space


def test_every_path_costs_what_the_space_says():
    graph = space_graph(DIGITS)
    stem = graph.graph.graph["stem"]
    for arch in DIGITS.architectures():
        edges = walk(graph, arch)
        assert [d["choice"] for d in edges[:-1]] == list(arch.values())
        cost = DIGITS.cost(arch)
        assert stem["macs"] + sum(d["macs"] for d in edges) == cost["macs"]
        assert stem["params"] + sum(d["params"] for d in edges) == cost["params"]


def test_tied_graph_forces_the_tied_choice():
    space = tied_space()
    graph = space_graph(space)
    assert graph.count_paths() == 4 * 4 * 3  # label assignments, not 4 * 4 * 3 * 4 layer choices
    for node in graph.layer_nodes[3]:
        assert [k for _, k, _ in graph.out_edges(node)] == [dict(node.pending)["mid"]]
    for arch in space.architectures():
        edges = walk(graph, arch)
        assert [d["sets_label"] for d in edges[:-1]] == [True, True, True, False]
        assert edges[3]["choice"] == arch["mid"]


def test_size_and_range_of_tied_space_equal_brute_force():
    space = tied_space()
    archs = list(space.architectures())
    assert space.size() == len({space.canonical(a) for a in archs})
    costs = [space.cost(a) for a in archs]
    assert space.cost_range() == {f"{m}_{f.__name__}": f(c[m] for c in costs)
                                  for m in ("macs", "params") for f in (min, max)}


def test_digits_numbers_are_unchanged():
    # 3,905 networks (15,625 label assignments; identity/zero runs and stacked blocks merge)
    assert DIGITS.size() == 3_905
    assert DIGITS.cost_range() == {"macs_min": 43_264, "macs_max": 14_625_024,
                                   "params_min": 3_770, "params_max": 487_162}


def test_render_lists_each_layer_shape_and_candidate_cost():
    text = space_graph(DIGITS).render()
    assert "15,625 paths" in text
    op = DIGITS.layer_ops(2)["k5_d2"]
    macs = op.cost(16, 32, 2, (8, 8))[0]
    assert macs == 622_592
    block = text.split("layer 3 (layer3, 32 channels, stride 2)")[1].split("layer 4")[0]
    assert "16x8x8" in block and re.search(rf"k5_d2 +-> 32x4x4 +{macs:,}\n", block)
    assert re.search(r"zero +-> 16x8x8 +0\n", block)
    head = text.split("head: ")[1]
    assert "6 arriving shape(s)" in head


# ----------------------------------------------------------------------------- constrained choice
@pytest.mark.parametrize("seed", range(4))
def test_most_probable_in_band_equals_brute_force_on_digits(seed, digits_macs):
    rng = random.Random(seed)
    probs = random_probs(DIGITS, rng, zeros=seed == 3)
    cost_of = lambda a: digits_macs[tuple(a.values())]
    targets = [cost_of(DIGITS.sample(seed=100 + seed)) * 1.03, 600_000, 1_500_000, 3_000_000]
    for target in targets:
        for tol in (0.10, 0.02):
            got = most_probable_arch(DIGITS, probs, target, tol)
            arch, lp, cost, in_band = brute_force(DIGITS, probs, target, tol, cost_of)
            assert (got.arch, got.log_prob, got.cost, got.in_band) == (arch, lp, cost, in_band)
            assert got.cost == cost_of(got.arch) and got.band == (target * (1 - tol), target * (1 + tol))
            assert got.prob == pytest.approx(math.exp(lp))
            assert (got.message is None) == in_band


def test_a_target_the_argmax_misses_gives_a_less_probable_arch_in_band(digits_macs):
    probs = random_probs(DIGITS, random.Random(7))
    argmax = {label: max(row, key=row.get) for label, row in probs.items()}
    argmax_cost = DIGITS.cost(argmax)["macs"]
    target = argmax_cost * 0.5
    got = most_probable_arch(DIGITS, probs, target)
    assert got.argmax_arch == argmax and got.argmax_cost == argmax_cost
    assert got.argmax_log_prob == log_prob(DIGITS, probs, argmax)
    assert not got.band[0] <= argmax_cost <= got.band[1]
    assert got.in_band and got.band[0] <= got.cost <= got.band[1]
    assert got.log_prob < got.argmax_log_prob
    expected = brute_force(DIGITS, probs, target, 0.10, lambda a: digits_macs[tuple(a.values())])
    assert (got.arch, got.log_prob) == expected[:2]
    record = json.loads(json.dumps(got.as_dict()))
    assert record["arch"] == got.arch and record["band"] == list(got.band) and record["in_band"] is True


def test_empty_band_returns_the_closest_cost_and_says_so(digits_macs):
    probs = random_probs(DIGITS, random.Random(11))
    costs = sorted(set(digits_macs.values()))
    # halfway between two neighbouring costs with a band too narrow to reach either
    gap = max(range(len(costs) - 1), key=lambda i: costs[i + 1] - costs[i])
    target = (costs[gap] + costs[gap + 1]) / 2 + 1
    for t in (target, 10_000, 50_000_000):
        got = most_probable_arch(DIGITS, probs, t, 0.001)
        arch, lp, cost, in_band = brute_force(DIGITS, probs, t, 0.001,
                                              lambda a: digits_macs[tuple(a.values())])
        assert not in_band and not got.in_band
        assert (got.arch, got.log_prob, got.cost) == (arch, lp, cost)
        assert f"{cost:,}" in got.message and "closest" in got.message
        assert f"{got.band[0]:,.0f} .. {got.band[1]:,.0f} MACs" in got.message
    assert most_probable_arch(DIGITS, probs, 10_000, 0.001).cost == costs[0]


def test_log_probabilities_give_the_same_answer():
    probs = random_probs(DIGITS, random.Random(3), zeros=True)
    logs = {l: {c: (math.log(p) if p else -math.inf) for c, p in row.items()} for l, row in probs.items()}
    a = most_probable_arch(DIGITS, probs, 2_000_000)
    b = most_probable_arch(DIGITS, logs, 2_000_000)
    c = most_probable_arch(DIGITS, logs, 2_000_000, log=True)
    assert a == b == c


def test_params_cost(digits_macs):
    probs = random_probs(DIGITS, random.Random(5))
    params = {tuple(a.values()): DIGITS.cost(a)["params"] for a in DIGITS.architectures()}
    for target in (50_000, 200_000):
        got = most_probable_arch(DIGITS, probs, target, cost_model="params")
        arch, lp, cost, in_band = brute_force(DIGITS, probs, target, 0.10,
                                              lambda a: params[tuple(a.values())])
        assert (got.arch, got.log_prob, got.cost, got.in_band, got.metric) == (arch, lp, cost, in_band,
                                                                              "params")


@pytest.mark.parametrize("seed", range(5))
def test_tied_space_equals_brute_force(seed):
    space = tied_space()
    rng = random.Random(seed)
    probs = random_probs(space, rng)
    cost_of = lambda a: space.cost(a)["macs"]
    rng_cost = space.cost_range()
    for target in (cost_of(space.sample(seed=seed)), rng.uniform(rng_cost["macs_min"], rng_cost["macs_max"]),
                   rng_cost["macs_max"] * 2):
        for tol in (0.10, 0.0):
            got = most_probable_arch(space, probs, target, tol)
            arch, lp, cost, in_band = brute_force(space, probs, target, tol, cost_of)
            assert (got.arch, got.log_prob, got.cost, got.in_band) == (arch, lp, cost, in_band)


def latency_table(space, rng):
    graph = space_graph(space)
    entries = {"stem": rng.uniform(0.05, 0.1)}
    for nodes in graph.layer_nodes[:-1]:
        for node in nodes:
            for _, name, data in graph.out_edges(node):
                key = f"{data['label']}:{data['layer']}:{name}:{state_key(node.state)}"
                entries[key] = rng.uniform(0.01, 0.5)
    for node in graph.layer_nodes[-1]:
        entries[f"head:{state_key(node.state)}"] = rng.uniform(0.02, 0.04)
    return {"space": space.name, "metric": "latency_ms", "entries": entries}


@pytest.mark.parametrize("space", [DIGITS, tied_space()], ids=["digits", "tied"])
def test_latency_table_cost_equals_brute_force(space):
    rng = random.Random(1)
    model = CostModel(space, "latency", latency_table(space, rng))
    probs = random_probs(space, rng)
    latencies = sorted(model.of_arch(a) for a in space.architectures())
    for target in (latencies[len(latencies) // 3], latencies[-1] * 0.9, latencies[0] * 0.5):
        got = most_probable_arch(space, probs, target, 0.05, cost_model=model)
        arch, lp, cost, in_band = brute_force(space, probs, target, 0.05, model.of_arch)
        assert (got.arch, got.log_prob, got.cost, got.in_band) == (arch, lp, cost, in_band)
        assert got.metric == "latency" and got.cost == model.of_arch(got.arch)
    assert not got.in_band and "ms" in got.message


@pytest.mark.parametrize("probs,target,tol,needle", [
    ({"layer1": {}}, 1e6, 0.1, "layer1"),
    ({"nope": {}}, 1e6, 0.1, "'nope'"),
    ("uniform", 1e6, 0.1, "mapping"),
    ("negative", 1e6, 0.1, "outside [0, 1]"),
    ("ok", 0, 0.1, "positive"),
    ("ok", 1e6, 1.5, "tolerance"),
    ("ok", "big", 0.1, "numbers"),
])
def test_bad_inputs_are_one_sentence(probs, target, tol, needle):
    uniform = {l: {c: 1 / len(DIGITS.choices(l)) for c in DIGITS.choices(l)} for l in DIGITS.labels}
    if probs == "ok":
        probs = uniform
    elif probs == "negative":
        probs = {**uniform, "layer2": {**uniform["layer2"], "zero": 1.5}}
    elif isinstance(probs, dict) and "layer1" in probs:
        probs = {**uniform, **probs}
    with pytest.raises(ValueError, match=None) as err:
        most_probable_arch(DIGITS, probs, target, tol)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_cost_model_of_another_space_is_rejected():
    probs = random_probs(DIGITS, random.Random(0))
    with pytest.raises(ValueError, match="made for space"):
        most_probable_arch(DIGITS, probs, 1e6, cost_model=CostModel(tied_space()))

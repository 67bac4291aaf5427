"""Tests of the CIFAR model zoo, the registry and the torchvision adapters."""
from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasdistill.models import (
    Features,
    StagedModel,
    create_model,
    list_models,
)
from nasdistill.registry import register

# Parameter counts at num_classes=100, printed by running HobbitLong/RepDistiller's models/
# (model_dict[name](num_classes=100), sum of p.numel()) at commit HEAD of its default branch.
REPDISTILLER_PARAMS = {
    "resnet8": 83892,
    "resnet14": 181108,
    "resnet20": 278324,
    "resnet32": 472756,
    "resnet44": 667188,
    "resnet56": 861620,
    "resnet110": 1736564,
    "resnet8x4": 1233540,
    "resnet32x4": 7433860,
    "ResNet50": 23705252,
    "wrn_16_1": 180916,
    "wrn_16_2": 703284,
    "wrn_40_1": 569780,
    "wrn_40_2": 2255156,
    "vgg8": 3965028,
    "vgg11": 9277284,
    "vgg13": 9462180,
    "vgg16": 14774436,
    "vgg19": 20086692,
    "MobileNetV2": 812836,
    "ShuffleV1": 949258,
    "ShuffleV2": 1355528,
}
CIFAR_MODELS = list(REPDISTILLER_PARAMS)
NUM_STAGES = {**{n: 3 for n in CIFAR_MODELS}, "ResNet50": 4, "MobileNetV2": 4,
              **{f"vgg{d}": 4 for d in (8, 11, 13, 16, 19)}}
# Families whose stage outputs are post-ReLU and whose pre-activation is the map before it.
POST_RELU_PREACT = ["resnet8", "resnet8x4", "ResNet50", "ShuffleV1", "vgg8"]
WRN = ["wrn_16_1", "wrn_16_2"]


@functools.lru_cache(maxsize=None)
def built(name: str) -> StagedModel:
    """One instance per model for the whole file (the big ones take a moment to build)."""
    torch.manual_seed(0)
    return create_model(name, num_classes=100).eval()


def x32(batch: int = 2, channels: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(1))


def randomize_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics so that eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(2)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


# ----------------------------------------------------------------------------- registry
def test_registry_lists_every_required_name():
    names = set(list_models())
    assert set(CIFAR_MODELS) <= names
    assert {"tv_efficientnet_b0", "tv_resnet50", "tv_resnet18"} <= names


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'resnet8x5'.*did you mean.*'resnet8x4'"):
        create_model("resnet8x5")
    with pytest.raises(ValueError, match="'wrn_40_2'"):
        create_model("WRN_40_2")


def test_registering_a_second_builder_under_a_model_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register("model", "resnet8")(lambda num_classes=100, in_channels=3: None)


def test_create_model_passes_num_classes_and_rejects_bad_values():
    assert create_model("resnet8", num_classes=10).classifier.out_features == 10
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet8", num_classes=0)


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_parameter_count_equals_repdistiller(name):
    model = built(name)
    assert isinstance(model, StagedModel)
    assert sum(p.numel() for p in model.parameters()) == REPDISTILLER_PARAMS[name]


def test_a_model_built_on_meta_is_the_same_network_and_draws_nothing(monkeypatch):
    """The job's up-front check builds every model on the meta device: the same parameters as a real
    build, and no normal draw (on meta, torch answers one by importing its compiler stack, ~2 s)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a normal draw on the meta device")

    monkeypatch.setattr(torch.Tensor, "normal_", refuse)
    for name in CIFAR_MODELS:
        with torch.device("meta"):
            model = create_model(name, num_classes=100)
        assert all(p.is_meta for p in model.parameters()), name
        assert sum(p.numel() for p in model.parameters()) == REPDISTILLER_PARAMS[name], name


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_2", "vgg8"])
def test_convolutions_start_he_normal_fan_out(name):
    """RepDistiller's init: each convolution's weights ~ N(0, 2 / (k_h k_w out_channels)), measured
    on its largest convolution (tens of thousands of draws: the sample std within 5%)."""
    conv = max((m for m in built(name).modules() if isinstance(m, nn.Conv2d)), key=lambda m: m.weight.numel())
    fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.05)
    assert abs(conv.weight.mean().item()) < 0.1 * math.sqrt(2.0 / fan_out)


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_2", "vgg8", "MobileNetV2", "ShuffleV2"])
def test_in_channels_changes_only_the_first_convolution(name):
    rgb = sum(p.numel() for p in built(name).parameters())
    gray_model = create_model(name, in_channels=1)
    gray = sum(p.numel() for p in gray_model.parameters())
    first = next(m for m in gray_model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
    assert rgb - gray == 2 * first.out_channels * first.kernel_size[0] * first.kernel_size[1]


# ----------------------------------------------------------------------------- forward contract
@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_forward_features_contract(name):
    model = built(name)
    x = x32()
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
    assert logits.shape == (2, 100)
    assert isinstance(feats, Features)
    assert len(feats.stages) == len(model.stages) == NUM_STAGES[name]
    assert feats.embedding.shape == (2, model.classifier.in_features)
    torch.testing.assert_close(feats.logits, logits, rtol=0, atol=0)
    assert feats.stem.dim() == 4 and all(f.dim() == 4 for f in feats.stages)
    # Each stage reads the previous one: channels chain, resolution never grows.
    sizes = [feats.stem.shape[-1]] + [f.shape[-1] for f in feats.stages]
    assert sizes == sorted(sizes, reverse=True)


# Reference values from HobbitLong/RepDistiller: its model filled by `deterministic_fill` (same
# order of state_dict entries), eval mode, input `deterministic_input`, forward(x, is_feat=True):
# mean |feat[k]| for the stage features feat[1:-1], and the first four logits.
REPDISTILLER_OUTPUTS = {
    "resnet8x4": ([0.556464, 0.595951, 0.660727], [-0.860382, 0.315926, 1.511765, 2.467616]),
    "wrn_16_2": ([0.444273, 0.349899, 0.502286], [0.301892, 0.703914, 0.906728, 0.335278]),
    "vgg8": ([0.517521, 0.524339, 0.523798, 0.524173], [1.19561, 3.699113, 3.386969, 0.543861]),
    "MobileNetV2": ([0.686595, 0.970001, 1.171555, 0.88751],
                    [-0.658158, 3.303106, -3.046979, 2.206906]),
    "ShuffleV1": ([1.229259, 2.82949, 2.27949], [-5.332279, 6.226048, -4.833854, 5.627815]),
    "ShuffleV2": ([0.307263, 0.310656, 0.368404], [-1.471981, 2.862652, 0.409614, -2.428542]),
}


def deterministic_fill(model: nn.Module) -> None:
    """Fill every float entry of the state dict from its position and index (no RNG)."""
    with torch.no_grad():
        for i, (key, v) in enumerate(model.state_dict().items()):
            if not v.is_floating_point():
                continue
            w = torch.sin(0.37 * torch.arange(v.numel(), dtype=torch.float64) + i)
            if key.endswith("running_var"):
                w = 1.0 + 0.5 * w * w
            elif v.dim() > 1:
                w = w * math.sqrt(2.0 / v[0].numel())
            else:
                w = 0.5 + 0.25 * w
            v.copy_(w.reshape(v.shape).to(v.dtype))


def deterministic_input() -> torch.Tensor:
    return torch.sin(torch.arange(3 * 32 * 32, dtype=torch.float32) * 0.11).reshape(1, 3, 32, 32)


@pytest.mark.parametrize("name", list(REPDISTILLER_OUTPUTS))
def test_same_weights_give_repdistiller_features_and_logits(name):
    model = create_model(name).eval()
    deterministic_fill(model)
    with torch.no_grad():
        feats = model.forward_features(deterministic_input())
    stage_means, first_logits = REPDISTILLER_OUTPUTS[name]
    got = [f.abs().mean().item() for f in feats.stages]
    assert got == pytest.approx(stage_means, rel=1e-4, abs=1e-5)
    assert feats.logits[0, :4].tolist() == pytest.approx(first_logits, rel=1e-4, abs=1e-5)


# ----------------------------------------------------------------------------- pre-activation
@pytest.mark.parametrize("name", POST_RELU_PREACT)
def test_preact_is_the_map_before_the_final_relu(name):
    model = built(name)
    randomize_bn(model)
    with torch.no_grad():
        feats = model.forward_features(x32(), preact=True)
    assert feats.preact is not None and len(feats.preact) == len(feats.stages)
    for pre, post in zip(feats.preact, feats.stages):
        assert pre.shape == post.shape
        assert (pre < 0).any(), "a pre-activation map should have negative entries"
        torch.testing.assert_close(F.relu(pre), post, rtol=0, atol=0)
    # The capture is switched off afterwards: nothing is kept alive, plain calls report no preact.
    assert all(getattr(s, "preact_out", None) is None for s in model.stages)
    assert model.forward_features(x32()).preact is None


@pytest.mark.parametrize("name", WRN)
def test_wrn_preact_is_the_next_bn_before_its_relu(name):
    """WRN blocks are pre-activation: a stage output is the raw residual sum (RepDistiller's feat),
    and its preact is RepDistiller's: the next BN that reads it, before that BN's ReLU."""
    model = built(name)
    randomize_bn(model)
    with torch.no_grad():
        feats = model.forward_features(x32(), preact=True)
        consumers = [s[0].bn1 for s in model.stages[1:]] + [model.embed[0]]
        for pre, post, bn in zip(feats.preact, feats.stages, consumers):
            expected = F.batch_norm(post, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                    False, 0.0, bn.eps)
            torch.testing.assert_close(pre, expected)
            assert not torch.equal(pre, post)
        pooled = F.relu(feats.preact[-1]).mean(dim=(2, 3))
        torch.testing.assert_close(pooled, feats.embedding)


@pytest.mark.parametrize("name", ["wrn_16_1", "resnet8"])
def test_preact_capture_does_not_change_training_statistics(name):
    """Capturing pre-activations in train mode updates each BN exactly as a plain forward does."""
    torch.manual_seed(0)
    a = create_model(name).train()
    b = create_model(name).train()
    b.load_state_dict(a.state_dict())
    x = x32()
    a(x)
    b.forward_features(x, preact=True)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), key


# ----------------------------------------------------------------------------- small inputs
@pytest.mark.parametrize("name", ["resnet8", "resnet20", "resnet8x4", "wrn_16_2"])
def test_one_channel_8x8_digits(name):
    model = create_model(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        feats = model.forward_features(x32(channels=1, size=8), preact=True)
    assert feats.logits.shape == (2, 10)
    assert [f.shape[-1] for f in feats.stages] == [8, 4, 2]


@pytest.mark.parametrize("name", ["vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet50"])
def test_other_families_run_on_8x8(name):
    model = built(name)
    with torch.no_grad():
        assert model(x32(batch=1, size=8)).shape == (1, 100)


def test_vgg_rejects_inputs_below_8x8_with_the_minimum_size():
    with pytest.raises(ValueError, match="at least 8x8"):
        built("vgg8")(x32(batch=1, size=4))


def test_pooling_adapts_and_equals_the_spatial_mean():
    model = built("resnet8")
    with torch.no_grad():
        for size in (16, 32):
            feats = model.forward_features(x32(size=size))
            torch.testing.assert_close(feats.embedding, feats.stages[-1].mean(dim=(2, 3)))


# ----------------------------------------------------------------------------- torchvision
def torchvision_importable() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(torchvision_importable(), reason="torchvision is installed here; the "
                    "missing-dependency message can only be seen without it")
@pytest.mark.parametrize("name", ["tv_efficientnet_b0", "tv_resnet50", "tv_resnet18"])
def test_torchvision_adapter_without_torchvision_says_how_to_install(name):
    with pytest.raises(ImportError, match=r'pip install "nasdistill\[vision\]"'):
        create_model(name, num_classes=200)


@pytest.mark.skipif(not torchvision_importable(), reason="torchvision does not import here; "
                    'install it with pip install "nasdistill[vision]" to test the adapters')
@pytest.mark.parametrize("name, stages, embed", [("tv_resnet18", 4, 512),
                                                 ("tv_efficientnet_b0", 7, 1280)])
def test_torchvision_adapter_follows_the_contract(name, stages, embed):
    model = create_model(name, num_classes=200, in_channels=1).eval()
    with torch.no_grad():
        x = x32(channels=1, size=64)
        feats = model.forward_features(x)
        logits = model(x)
    assert len(feats.stages) == stages
    assert feats.embedding.shape == (2, embed) == (2, model.classifier.in_features)
    torch.testing.assert_close(feats.logits, logits)
    assert logits.shape == (2, 200)


def test_wrn_copy_reads_its_own_batch_norm():
    """deepcopy (EMA, checkpoints of whole modules) keeps each stage tied to the copy's BN."""
    import copy

    model = create_model("wrn_16_1").eval()
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.embed[0].bias.add_(1.0)
        before = model.forward_features(x32(), preact=True).preact[-1]
        after = clone.forward_features(x32(), preact=True).preact[-1]
    torch.testing.assert_close(after, before + 1.0)
    assert clone.stages[-1]._consumer[0] is clone.embed[0]

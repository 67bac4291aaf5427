"""Registries: one pattern (a package imports its modules, each module registers its entry with its
metadata), so a new dataset, teacher or distillation method is one file: proved with toy entries
defined in temporary modules, seen through config parsing and the report's naming and order."""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nasdistill.data import DATASETS, default_space, load_dataset, normalize_dataset_name, same_dataset
from nasdistill.distill import DISTILLERS, build_distiller, distill_config_class, logits_only
from nasdistill.config import ConfigError, load_config, to_dict
from nasdistill.data.config import DataConfig
from nasdistill.models import create_model
from nasdistill.registry import Registry, config_sections, import_submodules, register, submodule_names
from nasdistill.report import tables
from nasdistill.teachers import (TEACHERS, get_teacher, pipeline_section_defaults,
                                 teacher_config_class)


@pytest.fixture
def module_from(tmp_path, monkeypatch):
    """``module_from(name, source)`` writes ``source`` as module ``name`` and imports it; registries
    touched by it and the module itself are put back afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []
    with contextlib.ExitStack() as stack:
        for registry in (DATASETS, TEACHERS, DISTILLERS):
            stack.enter_context(registry.restoring())

        def load(name, source):
            (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
            names.append(name)
            importlib.invalidate_caches()
            return importlib.import_module(name)

        yield load
    for name in names:
        sys.modules.pop(name, None)


# --------------------------------------------------------------------------- the Registry itself
class Entry:
    def __init__(self, order=None, display_name=None):
        self.order, self.display_name = order, display_name


def test_listing_follows_declared_order_then_registration():
    reg = Registry("thing", normalize=str.lower)
    reg.register("Late", Entry())
    reg.register("second", Entry(order=20))
    reg.register("first", Entry(order=10, display_name="First!"))
    reg.register("later", Entry())
    assert reg.names() == ["first", "second", "Late", "later"] == list(reg)
    assert [n for n, _ in reg.items()] == reg.names()
    assert reg.canonical("LATE") == "Late" and "late" in reg
    assert reg.display_name("first") == "First!" and reg.display_name("later", "x") == "x"
    assert reg.order("second") == 20 and reg.order("nothing") is None
    assert reg.meta("nothing", "display_name", "dflt") == "dflt"
    with pytest.raises(ValueError, match="did you mean 'second'"):
        reg.get("secnd")
    with reg.restoring():
        reg.unregister("first")
        reg.register("extra", Entry(order=1))
        assert reg.names() == ["extra", "second", "Late", "later"]
    assert reg.names() == ["first", "second", "Late", "later"]


def test_import_submodules_lets_each_module_register_itself(module_from, tmp_path):
    pkg = tmp_path / "toy_family"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from nasdistill.registry import Registry, import_submodules\n"
                                     "THINGS = Registry('thing')\nimport_submodules(__name__)\n")
    (pkg / "zeta.py").write_text("from toy_family import THINGS\nTHINGS.register('zeta', object())\n")
    (pkg / "alpha.py").write_text("from toy_family import THINGS\nTHINGS.register('alpha', object())\n")
    try:
        family = module_from("toy_family_user", "import toy_family\n").toy_family
        assert family.THINGS.names() == ["alpha", "zeta"]
        assert submodule_names("toy_family") == ["alpha", "zeta"]
    finally:
        for name in ("toy_family", "toy_family.alpha", "toy_family.zeta"):
            sys.modules.pop(name, None)


@pytest.mark.parametrize("package", ["nasdistill.data", "nasdistill.models", "nasdistill.teachers",
                                     "nasdistill.distill"])
def test_family_packages_import_every_module(package):
    assert all(f"{package}.{name}" in sys.modules for name in submodule_names(package))
    listed = {r.kind: r.names() for r in (DATASETS, TEACHERS, DISTILLERS)}
    assert len(import_submodules(package)) >= len(submodule_names(package))  # importing again is harmless
    assert {r.kind: r.names() for r in (DATASETS, TEACHERS, DISTILLERS)} == listed


def test_every_bench_module_is_a_registered_bench():
    from nasdistill.bench import BENCHES
    from nasdistill.commands.bench import BENCHES as via_command

    assert via_command is BENCHES
    assert BENCHES.names() == submodule_names("nasdistill.bench")
    assert {"loader", "supernet", "latency", "teachers", "kd"} <= set(BENCHES)
    for name, run in BENCHES.items():
        assert callable(run) and BENCHES.meta(name, "help") and callable(BENCHES.meta(name, "arguments")), name
        assert run.__module__ == f"nasdistill.bench.{name}"  # one module, one benchmark


# --------------------------------------------------------------------------- metadata of the built-ins
def test_builtin_metadata_gives_the_report_its_names_and_order():
    assert tables.TEACHER_ORDER == ("none", "ce", "gtn", "sftn", "mse", "soteacher")
    assert tables.METHOD_ORDER == ("none", "kd", "dkd")
    assert {n: tables.display_name(n) for n in ("ce", "gtn", "sftn", "mse", "soteacher")} == \
        {"ce": "CE", "gtn": "GTN", "sftn": "SFTN", "mse": "MSE", "soteacher": "SoTeacher"}
    assert {n: tables.display_name(n) for n in ("kd", "dkd", "fitnet", "at", "sp", "rkd", "pkt", "crd")} == \
        {"kd": "KD", "dkd": "DKD", "fitnet": "FitNets", "at": "AT", "sp": "SP", "rkd": "RKD", "pkt": "PKT",
         "crd": "CRD"}
    assert tables.display_name("unregistered") == "UNREGISTERED"
    rows = [{"teacher": t, "method": m} for t in ("mse", "unknown", "gtn", "ce", "soteacher", "sftn")
            for m in ("sp", "dkd", "kd", "at")] + [{"teacher": "none", "method": "none"}]
    got = tables.conditions(rows)
    assert got[0] == ("none", "none")
    assert [m for m in dict.fromkeys(m for _, m in got[1:])] == ["kd", "dkd", "at", "sp"]
    assert [t for t, m in got if m == "kd"] == ["ce", "gtn", "sftn", "mse", "soteacher", "unknown"]


def test_config_sections_keep_their_layout_whatever_the_listing_order():
    teacher = list(to_dict(teacher_config_class()()))
    sections = [n for n, _ in config_sections(TEACHERS)]
    assert sections == sorted(sections) and teacher[-len(sections):] == sections
    methods = [n for n, _ in config_sections(DISTILLERS)]
    assert methods == sorted(methods) and list(to_dict(distill_config_class()()))[-len(methods):] == methods


# --------------------------------------------------------------------------- datasets
def test_one_dataset_name_normaliser():
    assert normalize_dataset_name("CIFAR-100") == normalize_dataset_name("cifar_100") == "cifar100"
    assert same_dataset("Cifar-10", "cifar10") and not same_dataset("cifar10", "cifar100")
    assert DATASETS.canonical("CIFAR_100") == "cifar100"
    assert DataConfig(name="Digits").name == "Digits"   # accepted: it names the digits dataset


def test_datasets_declare_their_default_space():
    assert {n: default_space(n) for n in DATASETS.names()} == {
        "digits": "digits_small", "synthetic": "digits_small", "cifar10": "gtn_cifar",
        "cifar100": "gtn_cifar", "imagefolder": "gtn_cifar"}
    assert default_space("CIFAR-100") == "gtn_cifar" and default_space("no-such-data") is None


TOY_DATASET = """
    import torch
    from nasdistill.data.splits import DatasetSplits, Split
    from nasdistill.registry import register


    def load_toy_splits(seed=0, val_size=0, n_train=6):
        g = torch.Generator().manual_seed(seed)
        train = Split(torch.rand(n_train, 1, 4, 4, generator=g), torch.arange(n_train) % 2)
        test = Split(torch.rand(4, 1, 4, 4, generator=g), torch.arange(4) % 2)
        return DatasetSplits(name="toy-data", train=train, val=test, test=test, num_classes=2,
                             input_size=(1, 4, 4), mean=(0.5,), std=(0.25,), augment=False)


    register("dataset", "toy-data", load_toy_splits, default_space="digits_small", order=5,
             display_name="Toy data")
"""


def test_a_dataset_is_one_module(module_from):
    with pytest.raises(ConfigError, match="names no dataset"):
        DataConfig(name="toy_data")
    module_from("toy_dataset_module", TOY_DATASET)
    cfg = load_config(DataConfig, None, ["name=TOY_DATA", "options.n_train=10"])
    splits = cfg.load()
    assert (len(splits.train), splits.num_classes) == (10, 2)
    assert torch.equal(load_dataset("toydata", n_train=10, seed=0).train.images, splits.train.images)
    with pytest.raises(ConfigError, match="did you mean 'n_train'"):
        load_config(DataConfig, None, ["name=toy-data", "options.ntrain=3"])
    assert DATASETS.names()[0] == "toy-data"            # order 5: before digits (10)
    assert default_space("Toy_Data") == "digits_small"
    assert DATASETS.display_name("toy-data") == "Toy data"
    assert same_dataset(splits.name, cfg.name)


# --------------------------------------------------------------------------- teachers
TOY_TEACHER = """
    from dataclasses import dataclass

    from nasdistill.registry import register
    from nasdistill.teachers.ce import CETask


    @dataclass
    class ToyTeacherConfig:
        smoothing: float = 0.0


    def make_toy_task(cfg, model, splits):
        return CETask(model, cfg.toyteacher.smoothing)


    register("teacher", "toyteacher", make_toy_task, config=ToyTeacherConfig, help="a toy", display_name="ToyT",
             order=15, pipeline_defaults={"smoothing": 0.05})
"""


def test_a_teacher_is_one_module(module_from):
    module_from("toy_teacher_module", TOY_TEACHER)
    cfg = load_config(teacher_config_class(), None, ["method=toyteacher", "toyteacher.smoothing=0.2"])
    assert cfg.method == "toyteacher" and cfg.toyteacher.smoothing == 0.2
    with pytest.raises(ConfigError, match="did you mean 'toyteacher.smoothing'"):
        load_config(teacher_config_class(), None, ["toyteacher.smothing=0.1"])
    task = get_teacher("toyteacher").task_factory(cfg, create_model("resnet8", num_classes=2, in_channels=1), None)
    assert task.label_smoothing == 0.2
    # the report names it and places it by its order (15: after CE, before GTN)
    assert tables.condition_label("toyteacher", "kd") == "ToyT+KD"
    assert tables.TEACHER_ORDER == ("none", "ce", "toyteacher", "gtn", "sftn", "mse", "soteacher")
    rows = [{"teacher": t, "method": "kd"} for t in ("gtn", "toyteacher", "ce")]
    assert tables.conditions(rows) == [("ce", "kd"), ("toyteacher", "kd"), ("gtn", "kd")]
    assert TEACHERS.names()[:3] == ["ce", "toyteacher", "gtn"]
    # the main job's sections take the defaults it declares; a field it lacks is refused by name
    assert pipeline_section_defaults() == {"toyteacher": {"smoothing": 0.05}, "gtn": {"phi_lr": 0.02}}
    with pytest.raises(ValueError, match=r"pipeline_defaults names \['smoothin'\]"):
        register("teacher", "toyteacher", lambda *a: None, config=type(cfg.toyteacher),
                 pipeline_defaults={"smoothin": 0.1})


# --------------------------------------------------------------------------- distillation methods
TOY_DISTILLER = """
    from dataclasses import dataclass

    import torch.nn.functional as F

    from nasdistill.distill.base import Distiller
    from nasdistill.distill.kd import KDDistiller
    from nasdistill.distill.losses import kd_loss
    from nasdistill.registry import register


    @dataclass
    class ToyKDConfig:
        temperature: float = 2.0


    @register("distiller", "toykd", config=ToyKDConfig, display_name="ToyKD", order=15, reads_features=False)
    class ToyKDDistiller(Distiller):

        def forward_train(self, x, y, idx=None, epoch=0):
            logits = self.student(x)
            return logits, {"loss_ce": F.cross_entropy(logits, y),
                            "loss_kd": kd_loss(logits, self.teacher(x), self.cfg.temperature)}


    @register("distiller", "subkd")
    class PlainSubclass(KDDistiller):
        pass
"""


def test_a_distillation_method_is_one_module(module_from):
    module_from("toy_distiller_module", TOY_DISTILLER)
    cfg = load_config(distill_config_class(), None, ["method=toykd", "toykd.temperature=3", "teacher=somewhere"])
    assert cfg.method_config().temperature == 3.0
    cfg.check()
    with pytest.raises(ConfigError, match="did you mean 'toykd.temperature'"):
        load_config(distill_config_class(), None, ["toykd.temprature=3"])
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=3, in_channels=1)
    teacher = create_model("resnet8", num_classes=3, in_channels=1)
    d = build_distiller("toykd", student, teacher, cfg=cfg.method_config())
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    logits, losses = d.forward_train(x, y)
    assert set(losses) == {"loss_ce", "loss_kd"} and logits.shape == (4, 3) and logits_only("toykd")
    # the report names it and places it by its order (15: between KD and DKD)
    assert tables.condition_label("ce", "toykd") == "CE+ToyKD"
    assert tables.METHOD_ORDER == ("none", "kd", "toykd", "dkd")
    rows = [{"teacher": "ce", "method": m} for m in ("dkd", "at", "toykd", "kd")]
    assert [m for _, m in tables.conditions(rows)] == ["kd", "toykd", "dkd", "at"]
    # metadata is the class's own: a subclass of KD is not called KD nor placed as KD
    assert tables.display_name("subkd") == "SUBKD" and DISTILLERS.order("subkd") is None
    assert tables.display_name("kd") == "KD" and DISTILLERS.order("kd") == 10


def test_toy_entries_are_gone_afterwards():  # runs after the toy tests above
    for registry, name in ((DATASETS, "toy-data"), (TEACHERS, "toyteacher"), (DISTILLERS, "toykd")):
        assert name not in registry


# --------------------------------------------------------------------------- one file, nothing else
PROBE = """
import json
from nasdistill.data import DATASETS, default_space
from nasdistill.distill import distill_config_class
from nasdistill.config import load_config
from nasdistill.data.config import DataConfig
from nasdistill.report import tables
from nasdistill.teachers import teacher_config_class

data = load_config(DataConfig, None, ["name=toy-data", "options.n_train=8"])
teacher = load_config(teacher_config_class(), None, ["method=toyteacher", "toyteacher.smoothing=0.1"])
distill = load_config(distill_config_class(), None, ["method=toykd", "toykd.temperature=3"])
print(json.dumps({"n_train": len(data.load().train), "space": default_space("toy-data"),
                  "smoothing": teacher.toyteacher.smoothing, "temperature": distill.toykd.temperature,
                  "label": tables.condition_label("toyteacher", "toykd"),
                  "teachers": tables.TEACHER_ORDER, "methods": tables.METHOD_ORDER}))
"""


def test_files_dropped_into_the_packages_are_all_it_takes(tmp_path):
    """A copy of the package with one new module in each of data/, teachers/ and distill/ and no
    other change: the dataset, the teacher and the method parse, and the report names and orders them."""
    root = Path(__file__).resolve().parents[1]
    pkg = tmp_path / "pkg" / "nasdistill"
    shutil.copytree(root / "nasdistill", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "data" / "toy_data.py").write_text(textwrap.dedent(TOY_DATASET))
    (pkg / "teachers" / "toyteacher.py").write_text(textwrap.dedent(TOY_TEACHER))
    (pkg / "distill" / "toykd.py").write_text(textwrap.dedent(TOY_DISTILLER))
    env = dict(os.environ, PYTHONPATH=str(pkg.parent), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == {"n_train": 8, "space": "digits_small", "smoothing": 0.1, "temperature": 3.0,
                   "label": "ToyT+ToyKD",
                   "teachers": ["none", "ce", "toyteacher", "gtn", "sftn", "mse", "soteacher"],
                   "methods": ["none", "kd", "toykd", "dkd"]}

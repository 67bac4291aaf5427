"""Extending nasdistill is one file per extension: a GTN-like teacher, a KD method with its gain
plots, a built-in op with its model.py source. A copy of the package gets exactly three new modules
and nothing else (counted below); the main job, the report and the export then use them, reading
their registered metadata, never their names."""
import filecmp
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TEACHER = """
    '''A GTN-like teacher: trained on the job's space, started from the reference teacher, headline.'''
    from dataclasses import dataclass
    from typing import Optional

    from ..registry import register
    from .ce import CETask


    @dataclass
    class ToyGTNConfig:
        space: Optional[str] = None
        init_from: Optional[str] = None


    def make_task(cfg, model, splits):
        return CETask(model)


    register("teacher", "toygtn", make_task, config=ToyGTNConfig, display_name="ToyGTN", order=5,
             headline=True, uses_space=True, warm_startable=True)
"""

METHOD = """
    '''A KD method: CE plus KD at a fixed temperature.'''
    from dataclasses import dataclass

    import torch.nn.functional as F

    from ..registry import register
    from .base import Distiller
    from .losses import kd_loss


    @dataclass
    class ToyKDConfig:
        temperature: float = 3.0


    @register("distiller", "toykd", config=ToyKDConfig, display_name="ToyKD", reads_features=False)
    class ToyKD(Distiller):
        def forward_train(self, x, y, idx=None, epoch=0):
            logits = self.student(x)
            z_t = self.teacher_features(x).logits
            return logits, {"loss_ce": F.cross_entropy(logits, y), "loss_kd": kd_loss(logits, z_t, self.cfg.temperature)}
"""

OP = """
    '''``tcv<K>``: one convolution, BatchNorm and ReLU of kernel K, and its model.py source.'''
    import re
    from dataclasses import dataclass
    from typing import ClassVar, Optional

    from ..registry import register
    from .blocks import ConvBNReLU
    from .ops import Op, conv_cost, conv_out


    @register("op", "tcv<K>")
    @dataclass(frozen=True)
    class ToyConv(Op):
        kernel: int = 3
        name_form: ClassVar[str] = "tcv<K>"

        @classmethod
        def from_name(cls, name) -> Optional["ToyConv"]:
            m = re.fullmatch(r"tcv(\\d+)", name)
            return cls(name=name, kernel=int(m.group(1))) if m else None

        def output_shape(self, cin, cout, stride, hw):
            return cout, (conv_out(hw[0], self.kernel, stride), conv_out(hw[1], self.kernel, stride))

        def build(self, cin, cout, stride):
            return ConvBNReLU(cin, cout, self.kernel, stride)

        def cost(self, cin, cout, stride, hw):
            macs, params, _ = conv_cost(cin, cout, self.kernel, stride, hw)
            return macs, params

        def source(self, writer, cin, cout, stride):
            return f"{writer.require(ConvBNReLU.__module__, 'ConvBNReLU')}({cin}, {cout}, {self.kernel}, {stride})"
"""

PROBE = """
import json, sys
from pathlib import Path

import torch

from nasdistill.config import load_config
from nasdistill.network import export_model, load
from nasdistill.pipeline.config import PipelineConfig
from nasdistill.pipeline.stage import Pending, Progress, Stage
from nasdistill.pipeline.steps import start_teachers
from nasdistill.report import write_report
from nasdistill.space import Layer, SearchSpace

out = Path(sys.argv[1])
said = {}

# the main job: the teacher's metadata decides its space, its warm start and its order
cfg = load_config(PipelineConfig, None, ["teachers.methods=[ce,toygtn]", "teachers.init_from_ce=true",
                                         "distill.methods=[toykd]", "distill.seeds=[0]", "space=digits_small"])
cfg.check()

class Recording(Stage):
    def start(self, name, specs):
        self.calls += [s.config for s in specs]
        return Pending(lambda: [{"wall_time_s": 1.0, "test_acc": 90.0} for _ in specs])

stage = Recording(cfg, "resume", Progress(False), root=out)
stage.calls = []
start_teachers(cfg, out, [], stage).wait()
toy = [c for c in stage.calls if c["method"] == "toygtn"][0]
said["toygtn"] = {"space": toy["toygtn"]["space"], "init_from": Path(toy["toygtn"]["init_from"]).name}

# the report: the headline teacher's gain section and a gain plot for the new method
rows = []
for i in range(4):
    for teacher, method, acc in (("none", "none", 60.0), ("ce", "toykd", 62.0), ("toygtn", "toykd", 63.0)):
        rows.append({"student": f"s{i}", "student_kind": "sampled", "target_macs": None, "macs": 1000 * (i + 1),
                     "params": 10, "teacher": teacher, "method": method, "seed": 0,
                     "teacher_seed": None if teacher == "none" else 0, "best_acc": acc + i,
                     "last_acc": acc + i, "test_acc": acc + i + 0.1 * i * (teacher == "toygtn"), "wall_time_s": 1.0})
text = write_report(out / "report", rows).read_text()
said["report"] = {"section": "## Gain ToyGTN − CE" in text,
                  "plot": (out / "report" / "gain_toygtn_vs_ce_toykd.png").is_file(),
                  "sentence": "from the ToyGTN teacher instead of the CE teacher" in text}

# the export: the new op builds, and model.py writes it through Op.source
space = SearchSpace(name="toyop_space", input_size=(1, 8, 8), num_classes=3, stem_channels=4,
                    layers=[Layer(8, 1, ["tcv3", "zero"]), Layer(8, 2, ["tcv5", "identity"])], head_width=8)
net = space.build({"layer1": "tcv3", "layer2": "tcv5"}).eval()
info = export_model(net, out / "export", space=space, arch={"layer1": "tcv3", "layer2": "tcv5"}, onnx=False,
                    verbose=False)
said["export"] = {"python": info["max_abs_diff"].get("python"), "errors": sorted(info.get("errors") or {})}
print(json.dumps(said))
"""


def tree_files(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob("*.py")}


def test_a_teacher_a_method_and_an_op_are_one_file_each(tmp_path):
    pkg = tmp_path / "pkg" / "nasdistill"
    shutil.copytree(ROOT / "nasdistill", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    added = {Path("teachers/toygtn.py"): TEACHER, Path("distill/toykd.py"): METHOD, Path("space/toyop.py"): OP}
    for rel, text in added.items():
        (pkg / rel).write_text(textwrap.dedent(text))
    # the files an extension touches: the three new modules, nothing of the package changed
    original = ROOT / "nasdistill"
    assert tree_files(pkg) - tree_files(original) == set(added)
    assert all(filecmp.cmp(original / rel, pkg / rel, shallow=False) for rel in tree_files(original))

    env = dict(os.environ, PYTHONPATH=str(pkg.parent), OMP_NUM_THREADS="1", NASDISTILL_PROGRESS="0")
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "out")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["toygtn"] == {"space": "digits_small", "init_from": "ce_s0"}
    assert said["report"] == {"section": True, "plot": True, "sentence": True}
    assert said["export"] == {"python": 0.0, "errors": []}

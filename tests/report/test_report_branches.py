"""nasdistill.report.branches: branch-trained teachers (GTN, SFTN) in the report.

The plots are read back from the figure they saved (lines, labels, data, bands); the precondition
(sampled branches within 15 points of the teacher's training accuracy, KD targets below 0.95 ln K)
is checked on fabricated metrics rows, in the warning and the clean case, with its figures.
"""
import json
import math

import numpy as np
import pytest

from nasdistill.report import branch_rows, plot_branch_accuracy, plot_branch_fit, precondition_table, write_report
from nasdistill.report.branches import seed_band
from nasdistill.report.precondition import branch_teacher_section

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LN10 = math.log(10)


def _is_png(path):
    return path is not None and path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def bands(ax):
    from matplotlib.collections import PolyCollection

    return [c for c in ax.collections if isinstance(c, PolyCollection)]


# ------------------------------------------------------------------------------------- fabricated runs
def val_acc(teacher, seed, epoch, i=None):
    """Validation accuracies that differ by seed, so one line through all seeds would zig-zag."""
    base = 60 + 10 * epoch + 3 * seed
    return base if i is None else base - (20 if teacher == "gtn" else 5) / i


def old_history(teachers=(("gtn", (0, 1, 2)), ("sftn", (0, 1))), epochs=4):
    """Rows as older runs log them: validation accuracies only."""
    rows = []
    for teacher, seeds in teachers:
        nb = 3 if teacher == "gtn" else 2
        for seed in seeds:
            for e in range(1, epochs + 1):
                rows.append({"epoch": e, "teacher": teacher, "teacher_seed": seed,
                             "teacher_acc": val_acc(teacher, seed, e),
                             **{f"branch{i}_acc": val_acc(teacher, seed, e, i) for i in range(1, nb + 1)}})
    return rows


def metrics_rows(teacher, seed, epochs=4, gap=25.0, entropy_kd_frac=0.98, nb=None):
    """``metrics.jsonl`` rows of a branch-trained teacher with the precondition keys: the sampled
    branches end ``gap`` points (on average) under the teacher's training accuracy, branch i offset by
    (i - 2) * 4 points around that mean; the KD targets end at ``entropy_kd_frac`` ln 10."""
    nb = nb or (3 if teacher == "gtn" else 2)
    rows = []
    for e in range(1, epochs + 1):
        train = 50.0 + 10 * e + seed
        centre = (nb + 1) / 2
        row = {"epoch": e, "lr": 0.1, "train_loss": 1.0 / e, "train_acc": train, "val_acc": train - 2,
               "best_acc": train - 2, "epoch_time_s": 1.0,
               "teacher_logit_std": 1.0 + 0.25 * e, "teacher_entropy_t1": 1.5 - 0.1 * e,
               "teacher_entropy_kd": entropy_kd_frac * LN10 + 0.01 * (epochs - e)}
        for i in range(1, nb + 1):
            row[f"branch{i}_acc"] = train - 10 - i
            row[f"sampled_branch{i}_acc"] = train - gap + 4 * (i - centre)
            row[f"sampled_branch{i}_entropy"] = 2.0 - 0.1 * e * i
        if teacher == "gtn":
            row.update({"phi_entropy": 1.5, "phi_entropy/l0": 1.5, "param_free_mass": 0.3})
        rows.append(row)
    return rows


def history(gtn_gap=25.0, gtn_flat=0.98, sftn_gap=6.0, sftn_flat=0.80, seeds=(0, 1)):
    out = []
    for seed in seeds:
        out += branch_rows(metrics_rows("gtn", seed, gap=gtn_gap, entropy_kd_frac=gtn_flat), "gtn", seed)
        out += branch_rows(metrics_rows("sftn", seed, gap=sftn_gap, entropy_kd_frac=sftn_flat), "sftn", seed)
    return out


def make_results():
    results = []
    for sid, macs in (("a", 1_000_000), ("b", 2_000_000)):
        for seed in (0, 1):
            for teacher, method, acc in (("none", "none", 60.0), ("ce", "kd", 61.0), ("gtn", "kd", 60.5),
                                         ("sftn", "kd", 61.5)):
                results.append({"student": sid, "student_kind": "sampled", "target_macs": None, "macs": macs,
                                "params": 1000, "teacher": teacher, "method": method, "seed": seed,
                                "teacher_seed": None if teacher == "none" else seed, "best_acc": acc,
                                "last_acc": acc, "test_acc": acc + 0.1 * seed, "wall_time_s": 1.0})
    return results


# ------------------------------------------------------------------------------------- reading rows
def test_branch_rows_keeps_branch_and_teacher_keys_only():
    rows = branch_rows(metrics_rows("gtn", 1, epochs=2), "gtn", 1)
    assert [r["epoch"] for r in rows] == [1, 2]
    r = rows[0]
    assert r["teacher"] == "gtn" and r["teacher_seed"] == 1 and r["teacher_acc"] == pytest.approx(59.0)
    assert {"train_acc", "branch3_acc", "sampled_branch2_acc", "sampled_branch3_entropy", "teacher_logit_std",
            "teacher_entropy_t1", "teacher_entropy_kd"} <= set(r)
    assert not {"phi_entropy", "phi_entropy/l0", "lr", "train_loss", "val_acc"} & set(r)
    ce = [{"epoch": 1, "train_acc": 90.0, "val_acc": 88.0, "teacher_logit_std": 5.0}]
    assert branch_rows(ce, "ce", 0) == []  # a teacher without branches has no rows


def test_teacher_histories_collects_gtn_and_sftn_teachers(tmp_path):
    from nasdistill.pipeline.steps import teacher_histories

    teachers = {}
    for method, seed in (("ce", 0), ("gtn", 0), ("sftn", 0), ("gtn", 1), ("sftn", 1)):
        d = tmp_path / f"{method}_s{seed}"
        d.mkdir()
        rows = ([{"epoch": e, "train_acc": 90.0, "val_acc": 88.0} for e in (1, 2)] if method == "ce"
                else metrics_rows(method, seed, epochs=2))
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        teachers[(method, seed)] = {"dir": d}
    gates, branches, _info = teacher_histories(teachers)
    assert {(r["teacher"], r["teacher_seed"]) for r in branches} == {("gtn", 0), ("gtn", 1), ("sftn", 0),
                                                                     ("sftn", 1)}
    assert len(branches) == 8 and len(gates) == 4  # gates: GTN only
    sftn = [r for r in branches if r["teacher"] == "sftn" and r["teacher_seed"] == 1]
    logged = metrics_rows("sftn", 1, epochs=2)[-1]
    assert sftn[-1]["sampled_branch2_acc"] == pytest.approx(logged["sampled_branch2_acc"])


# ------------------------------------------------------------------------------------- plots
def test_branch_accuracy_plot_one_panel_per_teacher_mean_over_seeds(tmp_path, monkeypatch, drawn_figure):
    fig = drawn_figure(plot_branch_accuracy, old_history(), tmp_path / "b.png")
    gtn_ax, sftn_ax = fig.axes
    assert gtn_ax.get_title() == "GTN teacher (mean over 3 teacher seeds, band: min to max)"
    assert sftn_ax.get_title() == "SFTN teacher (mean over 2 teacher seeds, band: min to max)"
    gtn = lines_by_label(gtn_ax)
    assert list(gtn) == ["teacher", "branch 1", "branch 2", "branch 3"]
    assert list(lines_by_label(sftn_ax)) == ["teacher", "branch 1", "branch 2"]
    for line in gtn.values():  # one point per epoch: no zig-zag through the seeds
        assert list(line.get_xdata()) == [1, 2, 3, 4]
    assert list(gtn["teacher"].get_ydata()) == pytest.approx([np.mean([val_acc("gtn", s, e) for s in (0, 1, 2)])
                                                               for e in (1, 2, 3, 4)])
    assert list(gtn["branch 2"].get_ydata()) == pytest.approx([val_acc("gtn", 1, e, 2) for e in (1, 2, 3, 4)])
    assert len(bands(gtn_ax)) == 4 and len(bands(sftn_ax)) == 3  # a min-max band per line
    lo_hi = bands(gtn_ax)[0].get_paths()[0].vertices[:, 1]
    assert min(lo_hi) == pytest.approx(val_acc("gtn", 0, 1)) and max(lo_hi) == pytest.approx(val_acc("gtn", 2, 4))
    assert gtn_ax.get_ylabel() == "validation top-1 accuracy (%)"
    assert gtn_ax.get_xlabel() == "teacher training epoch"
    assert [t.get_text() for t in gtn_ax.get_legend().get_texts()] == list(gtn)


def test_branch_accuracy_plot_single_seed_and_legacy_rows(tmp_path, monkeypatch, drawn_figure):
    legacy = [{"epoch": e, "teacher_acc": 70 + e, "branch1_acc": 60 + e} for e in range(3)]  # no teacher key
    fig = drawn_figure(plot_branch_accuracy, legacy, tmp_path / "b.png")
    (ax,) = fig.axes
    assert ax.get_title() == "GTN teacher (one teacher run)" and not bands(ax)
    assert list(lines_by_label(ax)["branch 1"].get_ydata()) == [60, 61, 62]
    one = old_history(teachers=(("sftn", (3,)),))
    fig = drawn_figure(plot_branch_accuracy, one, tmp_path / "c.png")
    assert fig.axes[0].get_title() == "SFTN teacher (teacher seed 3)"
    assert plot_branch_accuracy([{"epoch": 0, "teacher_acc": 50.0}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_seed_band_mean_and_range():
    groups = {0: [{"epoch": 1, "x": 1.0}, {"epoch": 2, "x": 3.0}], 1: [{"epoch": 1, "x": 2.0}],
              2: [{"epoch": 1, "x": None}]}
    assert seed_band(groups, "x") == ([1, 2], [1.5, 3.0], [1.0, 3.0], [2.0, 3.0], 2)


def test_branch_fit_plot_reads_back(tmp_path, monkeypatch, drawn_figure):
    h = history()
    fig = drawn_figure(plot_branch_fit, h, tmp_path / "f.png", "gtn", 10, 4.0)
    ax_a, ax_b, ax_c, ax_d = fig.axes
    a = lines_by_label(ax_a)
    assert list(a) == ["teacher", "branch 1 (sampled paths)", "branch 2 (sampled paths)",
                       "branch 3 (sampled paths)", "teacher minus 15 points",
                       "mean of the branches (warning below the dotted line)"]
    train = [np.mean([50.0 + 10 * e + s for s in (0, 1)]) for e in (1, 2, 3, 4)]
    assert list(a["teacher"].get_ydata()) == pytest.approx(train)
    assert list(a["teacher minus 15 points"].get_ydata()) == pytest.approx([t - 15 for t in train])
    assert list(a["mean of the branches (warning below the dotted line)"].get_ydata()) == pytest.approx(
        [t - 25 for t in train])
    assert list(a["branch 3 (sampled paths)"].get_ydata()) == pytest.approx([t - 25 + 4 for t in train])
    assert ax_a.get_ylabel() == "training top-1 accuracy (%)"
    b = lines_by_label(ax_b)
    assert list(b) == ["branch 1", "branch 2", "branch 3", f"uniform, ln 10 = {LN10:.2f}"]
    assert list(b["branch 2"].get_ydata()) == pytest.approx([2.0 - 0.2 * e for e in (1, 2, 3, 4)])
    assert b[f"uniform, ln 10 = {LN10:.2f}"].get_ydata()[0] == pytest.approx(LN10)
    assert ax_b.get_ylabel() == "entropy of the predictions at T = 1 (nats)"
    c = lines_by_label(ax_c)
    assert list(c) == ["teacher"] and list(c["teacher"].get_ydata()) == pytest.approx([1.25, 1.5, 1.75, 2.0])
    d = lines_by_label(ax_d)
    assert list(d) == ["T = 1", "T = 4 (distillation)", f"uniform, ln 10 = {LN10:.2f}",
                       f"0.95 ln 10 = {0.95 * LN10:.2f} (flat above)"]
    assert d["T = 4 (distillation)"].get_ydata()[-1] == pytest.approx(0.98 * LN10)
    assert d[f"0.95 ln 10 = {0.95 * LN10:.2f} (flat above)"].get_ydata()[0] == pytest.approx(0.95 * LN10)
    assert ax_d.get_ylabel() == "entropy of the teacher's softmax (nats)"
    assert all(ax.get_xlabel() == "teacher training epoch" for ax in fig.axes)
    assert len(bands(ax_a)) == 4  # teacher and three branches, over two seeds
    assert "GTN teacher" in fig._suptitle.get_text() and "mean over 2 teacher seeds" in fig._suptitle.get_text()
    # the SFTN teacher has its own figure with its two branches; an unknown K draws no ln K line
    fig = drawn_figure(plot_branch_fit, h, tmp_path / "s.png", "sftn")
    assert list(lines_by_label(fig.axes[1])) == ["branch 1", "branch 2"]
    assert list(lines_by_label(fig.axes[3])) == ["T = 1", "the distillation temperature (distillation)"]


def test_branch_fit_plot_needs_the_new_keys(tmp_path):
    assert plot_branch_fit(old_history(), tmp_path / "f.png", "gtn", 10) is None
    assert plot_branch_fit(history(), tmp_path / "f.png", "mse", 10) is None
    assert not (tmp_path / "f.png").exists()


# ------------------------------------------------------------------------------------- precondition
def test_precondition_table_last_epoch_figures():
    rows = precondition_table(history(), num_classes=10, kd_temperature=4.0)
    assert [(r["teacher"], r["teacher_seed"]) for r in rows] == [("gtn", 0), ("gtn", 1), ("sftn", 0), ("sftn", 1)]
    g0 = rows[0]
    assert g0["epoch"] == 4 and g0["train_acc"] == pytest.approx(90.0)
    assert g0["branch_acc"] == pytest.approx({1: 61.0, 2: 65.0, 3: 69.0})
    assert g0["branch_mean"] == pytest.approx(65.0) and g0["gap"] == pytest.approx(25.0)
    assert g0["worst_branch"] == 1 and g0["worst_gap"] == pytest.approx(29.0)
    assert g0["entropy_kd_frac"] == pytest.approx(0.98) and g0["logit_std"] == pytest.approx(2.0)
    assert g0["branches_trail"] and g0["flat_targets"] and g0["warn"]
    s0 = rows[2]
    assert s0["gap"] == pytest.approx(6.0) and s0["entropy_kd_frac"] == pytest.approx(0.80)
    assert not s0["warn"] and s0["gap_checked"] and s0["flat_checked"]
    # thresholds: a gap of exactly 15 points passes, 15.5 fails; 0.95 ln K is flat already
    edge = precondition_table(history(gtn_gap=15.0, gtn_flat=0.95, sftn_gap=15.5, sftn_flat=0.94), 10)
    assert [(r["branches_trail"], r["flat_targets"]) for r in edge] == [(False, True)] * 2 + [(True, False)] * 2
    # without K the targets cannot be checked, only the gap
    bare = precondition_table(history(gtn_gap=5.0), None)
    assert not bare[0]["flat_checked"] and bare[0]["entropy_kd_frac"] is None and not bare[0]["warn"]


def test_report_warns_when_the_precondition_fails(tmp_path):
    text = write_report(tmp_path, make_results(), branch_history=history(), num_classes=10,
                        kd_temperature=4.0).read_text()
    summary = text.split("## Teachers")[0]
    assert ("**Warning:** a branch-trained teacher misses the precondition of distilling from it: the GTN "
            "teacher of seed 0 (sampled branches 25.0 points of training accuracy behind it and soft targets at "
            "T = 4 with an entropy of 0.98 ln 10, near uniform) and the GTN teacher of seed 1") in summary
    assert "SFTN teacher of seed" not in summary
    section = text.split("## Branch-trained teachers")[1].split("## Plots")[0]
    assert "| Entropy T = 4 (nats) | Entropy T = 4 / ln 10 | Warning |" in section
    assert (f"| GTN | 0 | 4 | 90.0 | 61.0 / 65.0 / 69.0 | 25.0 | 2.00 | 1.100 | {0.98 * LN10:.3f} | 0.98 | "
            "branches trail, flat targets |") in section
    assert "| SFTN | 1 | 4 | 91.0 | 83.0 / 87.0 | 6.0 | 2.00 | 1.100 | 1.842 | 0.80 | none |" in section
    assert ("**WARNING: the precondition does not hold**: the GTN teacher of seed 0 ends (epoch 4) with its "
            "sampled branches at 65.0% training accuracy on average (branch 1 61.0%, branch 2 65.0%, branch 3 "
            "69.0%) against 90.0% for the teacher, 25.0 points behind (more than 15) and its soft targets at "
            f"T = 4 at an entropy of {0.98 * LN10:.2f} nats = 0.98 ln 10 (uniform: ln 10 = {LN10:.2f}; flat "
            "from 0.95 ln 10; logit standard deviation 2.00); the GTN teacher of seed 1 ends (epoch 4)") in section
    assert "read the results of distilling from this teacher with this in mind" in section
    for name in ("branch_fit_gtn.png", "branch_fit_sftn.png"):
        assert f"]({name})" in section and _is_png(tmp_path / name)
    assert "](branch_accuracy.png)" in text and "during GTN and SFTN training" in text


def test_report_one_failure_kind_at_a_time(tmp_path):
    trail = write_report(tmp_path / "trail", make_results(), branch_history=history(gtn_flat=0.5),
                         num_classes=10).read_text()
    section = trail.split("## Branch-trained teachers")[1].split("## Plots")[0]
    assert "25.0 points behind (more than 15)" in section and "soft targets at" not in section.split("WARNING")[1]
    assert "Branches this far behind pull the teacher" in section and "toward a uniform" not in section
    flat = write_report(tmp_path / "flat", make_results(), branch_history=history(gtn_gap=3.0),
                        num_classes=10).read_text()
    summary = flat.split("## Teachers")[0]
    assert ("the GTN teacher of seed 0 (soft targets at the distillation temperature with an entropy of "
            "0.98 ln 10, near uniform)") in summary and "points of training accuracy" not in summary


def test_report_says_the_precondition_holds(tmp_path):
    h = history(gtn_gap=9.0, gtn_flat=0.90)
    text = write_report(tmp_path, make_results(), branch_history=h, num_classes=10, kd_temperature=4.0).read_text()
    assert "**Warning:** a branch-trained" not in text.split("## Teachers")[0]
    section = text.split("## Branch-trained teachers")[1].split("## Plots")[0]
    assert "WARNING" not in section
    assert ("The precondition holds: every teacher run ends with its sampled branches within 15 points of its "
            "training accuracy (largest gap 9.0 points, the GTN teacher of seed 0) and targets at T = 4 below "
            "0.95 ln 10 (highest 0.90 ln 10, the GTN teacher of seed 0).") in section


def test_report_of_an_old_run_has_no_precondition(tmp_path):
    text = write_report(tmp_path, make_results(), branch_history=old_history(), num_classes=10).read_text()
    assert "## Branch-trained teachers" not in text and "precondition" not in text
    assert not list(tmp_path.glob("branch_fit_*.png"))
    assert _is_png(tmp_path / "branch_accuracy.png")  # the validation accuracies are still drawn
    text, warning = branch_teacher_section(old_history(), 10)
    assert (text, warning) == ("", "")


def test_precondition_unchecked_without_accuracy_or_classes(tmp_path):
    h = [{k: v for k, v in r.items() if not k.startswith("sampled_branch") and k != "train_acc"} for r in history()]
    text, warning = branch_teacher_section(h, None)
    assert warning == "" and "Whether the precondition holds cannot be checked" in text
    text, warning = branch_teacher_section(h, 10, 4.0)
    assert warning.startswith("**Warning:**") and "near uniform" in warning  # the GTN targets at 0.98 ln 10


def test_distillation_temperature_per_teacher_or_as_logged():
    rows = precondition_table(history(), 10, {"gtn": 4.0, "sftn": 2.0})
    assert [r["kd_temperature"] for r in rows] == [4.0, 4.0, 2.0, 2.0]
    logged = [dict(r, kd_temperature=3.0) if r["teacher"] == "sftn" else r for r in history()]
    rows = precondition_table(logged, 10, 4.0)
    assert [r["kd_temperature"] for r in rows] == [4.0, 4.0, 3.0, 3.0]
    text, _ = branch_teacher_section(logged, 10, 4.0)
    assert "| Entropy the distillation temperature (nats) |" in text  # the teachers differ: no single T
    assert "soft targets at T = 4 at an entropy of" in text

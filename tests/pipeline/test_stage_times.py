"""The main job's stage times: a rerun after a kill reports the table an uninterrupted run would."""
import json

from nasdistill.pipeline.stage_times import StageTimes
from nasdistill.report.tables import stage_table


def _job(path, events):
    """One invocation: ``events`` are (what, stage, times...) in the order the job meets them."""
    clock = StageTimes(path)
    spans = {}
    for what, *args in events:
        if what == "run":  # a run of stage args[0], whose runs began at args[1], ended at args[2]
            clock.run_ended(args[0], args[1], now=args[2])
        elif what == "end":  # the stage is over (args[1]: it had runs to do or reuse)
            spans[args[0]] = clock.spans.get(args[0])
            clock.stage_ended(args[0], had_runs=args[1])
        elif what == "overlap":
            clock.overlap(spans.get("search"), spans.get("teachers"), early=True)
        elif what == "kill":
            return clock
    return clock


def _rows(clock):
    return {r["stage"]: round(r["seconds"], 6) for r in stage_table(clock.table())}


# search 0-10 s on one worker, the teachers 1-8 s beside it then 10-12 s, the distillation 12-22 s
SEARCH = [("run", "search", 0.0, 10.0), ("end", "search", True)]
TEACHERS = [("run", "teachers", 1.0, 8.0), ("run", "teachers", 1.0, 12.0), ("end", "teachers", True), ("overlap",)]
DISTILL = [("run", "distill", 12.0, 16.0), ("run", "distill", 12.0, 22.0), ("end", "distill", True)]


def test_an_uninterrupted_job_counts_each_stage_once_and_the_overlap_once(tmp_path):
    clock = _job(tmp_path / "t.json", SEARCH + TEACHERS + DISTILL)
    # overlap: the teachers ran from 1 s until the search ended at 10 s
    assert clock.table()["overlap"] == 9.0
    assert _rows(clock) == {"search": 10.0, "teachers": 11.0, "distill": 10.0, "total": 22.0}


def test_a_kill_during_the_distillation_then_a_rerun_gives_the_uninterrupted_table(tmp_path):
    path = tmp_path / "t.json"
    whole = _rows(_job(tmp_path / "whole.json", SEARCH + TEACHERS + DISTILL))
    # killed after the distillation's first run (4 s of it done) ...
    _job(path, SEARCH + TEACHERS + [("run", "distill", 12.0, 16.0), ("kill",)])
    assert json.loads(path.read_text())["partial"] == {"distill": 4.0}
    # ... the rerun reuses the search and the teachers (no run of theirs ends) and does the other 6 s
    rerun = _job(path, [("end", "search", True), ("end", "teachers", True), ("overlap",),
                        ("run", "distill", 100.0, 106.0), ("end", "distill", True)])
    assert _rows(rerun) == whole and rerun.table()["overlap"] == 9.0
    assert "partial" not in json.loads(path.read_text())
    # a third invocation that reuses everything reports the same table again
    again = _job(path, [("end", "search", True), ("end", "teachers", True), ("overlap",), ("end", "distill", True)])
    assert _rows(again) == whole


def test_a_kill_inside_a_stage_adds_the_part_done_before_it(tmp_path):
    path = tmp_path / "t.json"
    _job(path, SEARCH + [("run", "teachers", 1.0, 8.0), ("kill",)])
    rerun = _job(path, [("end", "search", True), ("run", "teachers", 50.0, 54.0), ("end", "teachers", True),
                        ("overlap",)] + DISTILL)
    # 7 s of teachers before the kill, 4 s after; the search ran alone now: no overlap is claimed
    assert _rows(rerun)["teachers"] == 11.0 and "overlap" not in rerun.table()


def test_a_stage_without_runs_has_no_row_and_waiting_is_no_stage_time(tmp_path):
    # a baseline-only job: no teacher at all, the distillation after the search
    clock = _job(tmp_path / "t.json", SEARCH + [("end", "teachers", False), ("overlap",)] + DISTILL)
    assert _rows(clock) == {"search": 10.0, "distill": 10.0, "total": 20.0}


def test_a_damaged_record_loses_the_times_not_the_job(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("{not json")
    assert _rows(_job(path, SEARCH)) == {"search": 10.0, "total": 10.0}


def test_a_stage_timed_whole_leaves_nothing_in_progress(tmp_path):
    path = tmp_path / "t.json"
    clock = _job(path, SEARCH + [("run", "export", 30.0, 31.0)])  # the export's runs report as they end
    clock.timed("export", 2.5)
    assert json.loads(path.read_text()) == {"search": 10.0, "export": 2.5}

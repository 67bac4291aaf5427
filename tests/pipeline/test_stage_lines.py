"""The progress line each finished run of the main job gets."""
from nasdistill.pipeline.stage import _accuracy


def test_a_run_line_names_its_accuracy_and_a_shared_search_its_students():
    assert _accuracy({"test_acc": 98.051, "best_acc": 99.0}) == "test 98.05%"
    assert _accuracy({"best_acc": 97.5}) == "best val 97.50%"
    assert _accuracy({}) == "no accuracy"
    # a search of three targets: the supernet's own accuracy would read as a student's
    assert _accuracy({"test_acc": 16.7, "students": [{}, {}, {}]}) == "3 students"

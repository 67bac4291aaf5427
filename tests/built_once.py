"""One build of a test fixture for the whole session, shared by the suite's test processes."""
import json
import os
import shutil

from filelock import FileLock


def built_once(tmp_path_factory, name: str, build):
    """``(folder, value)``: ``build(folder)`` run once for the whole test session, in whichever test
    process asks first, the others waiting for it (a file lock) and reading its JSON ``value``. The
    suite runs in two processes and a fixture of session scope is otherwise built in each; what is
    built here is shared read-only: a test copies it before it changes anything."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, shared by its test processes
    folder, done = root / name, root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed in another process
            value = build(folder)
            done.write_text(json.dumps(value))
    return folder, json.loads(done.read_text())

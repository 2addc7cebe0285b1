"""The import benchmark's own measuring: the processes it counts in the datasets service's
memory include the decoding processes, which the service starts from a worker thread."""

from __future__ import annotations

import os
import subprocess
import threading

from bench.import_bench import children


def test_children_started_from_any_thread_are_counted() -> None:
    # given a child process started from a thread other than the main one
    started: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(target=lambda: started.append(subprocess.Popen(["sleep", "30"])))
    thread.start()
    thread.join()
    try:
        # then it is among this process's children
        assert started[0].pid in children(os.getpid())
    finally:
        started[0].kill()
        started[0].wait()

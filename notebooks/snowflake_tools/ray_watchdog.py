"""Stop a local Ray instance once the process that started it is gone (notebook 04, step 1).

A kernel that exits runs Ray's own shutdown; a kernel that is killed runs nothing, and Ray's
processes would linger, some listening on 127.0.0.1. So ``ray_extract.start_ray`` marks the
instance: the processes Ray starts from the kernel's environment (GCS, raylet, workers) inherit
``MARK=<token>``. It also starts this script beside Ray, reading a pipe that only the kernel
holds open. When the pipe closes, because the kernel stopped Ray or died, the script kills
whatever still carries the mark. Ray 2.60 starts its dashboard and runtime-env agents without
the kernel's environment, so they carry no mark; they stop on their own, about a minute after
their raylet (one listens on 127.0.0.1 until then).

Run as ``python ray_watchdog.py <token>`` with the pipe as standard input. Standard library and
psutil (which Jupyter's kernel already needs) only, so it starts in a fraction of a second.
"""

from __future__ import annotations

import sys
import time

import psutil

#: Environment variable that marks the processes of one local Ray instance.
MARK = "SNOWFLAKE_TOOLS_RAY_INSTANCE"
#: Rounds of killing: a raylet killed in one round may have started a worker in it.
_ROUNDS = 50


def marked_processes(token: str) -> list[psutil.Process]:
    """The running processes whose environment holds ``MARK=token``."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARK) == token and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.Error, OSError):  # gone, another user's, or a kernel thread
            continue
    return found


def stop_marked(token: str) -> None:
    """Kill every process marked with ``token`` and wait until they are gone."""
    for _ in range(_ROUNDS):
        processes = marked_processes(token)
        if not processes:
            return
        for process in processes:
            try:
                process.kill()
            except psutil.Error:
                continue
        psutil.wait_procs(processes, timeout=5)
        time.sleep(0.1)


def main(argv: list[str]) -> None:
    """Wait for standard input to close, then stop the instance marked ``argv[1]``."""
    token = argv[1]
    sys.stdin.buffer.read()  # returns when the kernel closes the pipe or dies
    stop_marked(token)


if __name__ == "__main__":
    main(sys.argv)

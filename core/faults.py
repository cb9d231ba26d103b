"""A test-only hook: stop (or kill) this process at a named point, so a test can act there.

`FOODLAB_TEST_PAUSE_AT=point` (or `point@epoch`) makes the process send itself SIGSTOP when it
reaches that point, once; the test sees the stopped process and sends SIGKILL or SIGCONT.
`FOODLAB_TEST_KILL_AT=point` makes every process that reaches it die by SIGKILL (a job that
kills its worker each time). `FOODLAB_TEST_RAISE_AT=point[@epoch]:message` makes it raise
RuntimeError(message) there, each time (a CUDA error, as torch raises them). Precise timing
without sleeps; unset (always, outside tests), `pause_point` is three dictionary lookups.
"""

from __future__ import annotations

import os
import signal

PAUSE_ENV = "FOODLAB_TEST_PAUSE_AT"
KILL_ENV = "FOODLAB_TEST_KILL_AT"
RAISE_ENV = "FOODLAB_TEST_RAISE_AT"


def pause_point(name: str, epoch: int | None = None) -> None:
    names = (name, f"{name}@{epoch}")
    if os.environ.get(KILL_ENV) in names:
        os.kill(os.getpid(), signal.SIGKILL)
    where, _, message = os.environ.get(RAISE_ENV, "").partition(":")
    if where in names:
        raise RuntimeError(message)
    if os.environ.get(PAUSE_ENV) in names:
        os.environ.pop(PAUSE_ENV)  # once per process: a SIGCONT goes on past it
        os.kill(os.getpid(), signal.SIGSTOP)

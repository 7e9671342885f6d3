"""Child processes that a test kills with SIGKILL at chosen moments (shared by the kill tests)."""

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs SETUP once, then forks a child per line of stdin (a JSON list: the child's sys.argv[1:]),
# which runs WORK; reports "started PID" and, once the child is gone, "ended PID EXITCODE".
_SERVER = """
import json, os, sys, traceback
{setup}
WORK = compile({work!r}, "<work>", "exec")
while line := sys.stdin.readline():
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        sys.argv[1:] = json.loads(line)
        code = 0
        try:
            exec(WORK, globals())  # with what setup made
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
    print("started", pid, flush=True)
    print("ended", pid, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class ForkServer:
    """A Python process that runs ``setup`` once, then forks a child running ``work`` on demand.

    Every child is a copy of the process after ``setup`` (the imports and a first fit, seconds
    with torch), so that a test can kill and restart its loop many times for milliseconds each.
    Each child is a process of its own: it shares nothing with its siblings but files, and a
    SIGKILL ends it at once. Its stdout lines are read as they come (:meth:`wait_for`); stderr
    goes to a file, shown when something goes wrong. Every wait is bounded by ``timeout`` seconds
    from the start. POSIX only (``os.fork``).

    Parameters
    ----------
    setup, work : str
        Python source. Both run with the repository root as working directory and on the path;
        ``work`` sees the names that ``setup`` defined, and its arguments in ``sys.argv[1:]``.
    timeout : float, default=120
    """

    def __init__(self, setup, work, timeout=120):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        # buffered output: print(..., flush=True) writes its whole line at once, so a child killed
        # mid-print leaves no half line for the server's "ended" line to be glued to (unbuffered,
        # print writes each part apart: "teach" + "ended 123 -9" was read as one line)
        env.pop("PYTHONUNBUFFERED", None)
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER.format(setup=setup, work=work)],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            bufsize=1,
        )
        self.deadline = time.monotonic() + timeout
        self.lines = []
        self.pid = self.exit_code = None
        self._lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # end of output

    def _next_line(self, timeout):
        line = self._lines.get(timeout=timeout)
        if line is None:
            self._fail(f"the server ended (return code {self.process.wait()})")
        self.lines.append(line)
        words = line.split()
        if words[:2] == ["ended", str(self.pid)]:
            self.exit_code = int(words[2])
        return words

    def _fail(self, why):
        self.close()
        self.stderr.seek(0)
        stderr = self.stderr.read()[-3000:]
        raise AssertionError(f"{why}; output: {self.lines[-20:]}; stderr:\n{stderr}")

    def start(self, *args):
        """Fork a child that runs ``work`` with ``args``; the output of the one before is forgotten."""
        self.process.stdin.write(json.dumps(list(map(str, args))) + "\n")
        self.process.stdin.flush()
        self.pid, self.exit_code = int(self.wait_for("started")[1]), None
        self.lines = []

    def wait_for(self, prefix):
        """The words of the child's next output line that starts with ``prefix``."""
        while True:
            try:
                words = self._next_line(max(self.deadline - time.monotonic(), 0))
            except queue.Empty:
                self._fail(f"no line starting with {prefix!r} in time")
            if " ".join(words).startswith(prefix):
                return words
            if self.exit_code is not None and prefix != "started":
                self._fail(f"the child ended before printing {prefix!r}")

    def running(self):
        """Whether the child has not ended yet (reads the output that has come, without waiting)."""
        with suppress(queue.Empty):
            while self.exit_code is None:
                self._next_line(0)
        return self.exit_code is None

    def kill(self):
        """SIGKILL the child and wait until it is gone."""
        # the server reaps the child as it ends: a pid it has not reported ended is still the child's
        if self.running():
            with suppress(ProcessLookupError):  # it ended at this very moment
                os.kill(self.pid, signal.SIGKILL)
        self.wait(-signal.SIGKILL)

    def wait(self, expected=0):
        """Wait for the child to end, and fail unless its exit code is ``expected`` (or 0)."""
        if self.running():
            self.wait_for(f"ended {self.pid} ")
        if self.exit_code not in (expected, 0):  # a child to kill may have ended well just before
            self._fail(f"the child ended with exit code {self.exit_code}")

    def close(self):
        """Kill a child still running, then the server: for the end of a test, whatever its outcome."""
        if self.pid is not None and self.exit_code is None and self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        self._reader.join(timeout=30)
        for file in (self.process.stdin, self.process.stdout, self.stderr):
            with suppress(BrokenPipeError):  # stdin, of a server that is gone
                file.close()

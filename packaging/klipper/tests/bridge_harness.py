"""Drives the real lmntd bridge server (Go, cmd/lmnt-bridgeharness)
from the Python tests: JSON command lines on its stdin, JSON event lines on
its stdout. Waiting for an event keeps pumping the fake Klipper's reactor,
so the extra under test keeps running while the daemon acts."""
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
GO_PATHS = ["/usr/local/go/bin"]


def shared_dir():
    """../shared of the repository (or $LMNTD_SHARED): the slicer fixtures."""
    path = os.environ.get("LMNTD_SHARED") or os.path.join(REPO_ROOT, "..",
                                                          "shared")
    return os.path.abspath(path)


def fixture(name):
    path = os.path.join(shared_dir(), "fixtures", name)
    if not os.path.isfile(path):
        raise AssertionError("fixture %s not found (set LMNTD_SHARED)"
                             % (path,))
    return path


def build_harness(out_dir):
    """go build the harness into out_dir; returns the binary's path."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(GO_PATHS + [env.get("PATH", "")])
    binary = os.path.join(out_dir, "lmnt-bridgeharness")
    proc = subprocess.run(
        ["go", "build", "-o", binary, "./cmd/lmnt-bridgeharness"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, timeout=300)
    if proc.returncode != 0:
        raise AssertionError("building lmnt-bridgeharness failed:\n"
                             + proc.stdout.decode(errors="replace"))
    return binary


class BridgeHarness:
    def __init__(self, binary, socket_path, allow_uids=(), status_interval=1):
        self.binary = binary
        self.socket_path = socket_path
        self.allow_uids = list(allow_uids)
        self.status_interval = status_interval
        self.proc = None
        self.events = []        # every event seen, in order
        self._consumed = set()  # indexes of events a wait returned
        self._queue = queue.Queue()
        self.stderr_file = None

    def start(self, pump):
        args = [self.binary, "-socket", self.socket_path,
                "-status-interval", "%ds" % self.status_interval]
        for uid in self.allow_uids:
            args += ["-allow-uid", str(uid)]
        self.stderr_file = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=self.stderr_file)
        threading.Thread(target=self._read, args=(self.proc,),
                         daemon=True).start()
        self.wait("listening", pump)

    def _read(self, proc):
        for line in proc.stdout:
            try:
                self._queue.put(json.loads(line))
            except ValueError:
                self._queue.put({"event": "unparsable", "line": line})
        proc.stdout.close()
        self._queue.put({"event": "_exited"})

    def send(self, **command):
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()

    def stop(self, pump=None):
        """Quit the daemon and wait for it to exit."""
        if self.proc is None:
            return
        try:
            self.send(cmd="quit")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        deadline = time.monotonic() + 10
        while self.proc.poll() is None:
            if pump is not None:
                pump()
            else:
                time.sleep(0.01)
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("lmnt-bridgeharness did not quit")
        self.proc.wait()
        self.stderr_file.close()
        self.proc = None

    def stderr_text(self):
        if self.stderr_file is None or self.stderr_file.closed:
            return ""
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode(errors="replace")

    def _drain(self):
        while True:
            try:
                self.events.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def wait(self, kind, pump, match=None, timeout=10.):
        """The first event of `kind` (satisfying match) no earlier wait has
        returned, pumping the reactor until it arrives."""
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            for i, ev in enumerate(self.events):
                if i in self._consumed or ev.get("event") != kind:
                    continue
                if match is None or match(ev):
                    self._consumed.add(i)
                    return ev
            if time.monotonic() > deadline:
                raise AssertionError(
                    "no %r event within %.0f s; events: %s\nharness log:\n%s"
                    % (kind, timeout, self.events[-8:], self.stderr_text()))
            pump()

    def errors(self):
        self._drain()
        return [e for e in self.events if e.get("event") == "error"]

    def latest_status(self):
        self._drain()
        for ev in reversed(self.events):
            if ev.get("event") == "status":
                return ev["status"]
        return None


def private_tmpdir(testcase, mode=0o700):
    path = tempfile.mkdtemp(prefix="lmnt-klipper-test-")
    os.chmod(path, mode)
    testcase.addCleanup(shutil.rmtree, path, True)
    return path

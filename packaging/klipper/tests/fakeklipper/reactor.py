"""A select()-driven stand-in for Klipper's reactor (klippy/reactor.py).

Same interface the extras use: register_timer / update_timer /
unregister_timer, register_callback, register_fd / unregister_fd,
monotonic, NOW, NEVER. Klipper runs timer callbacks in greenlets that may
pause; this fake has no greenlets, so code under test must not pause (the
extras never do; the fake virtual_sdcard is written as a re-armed timer).

The test drives the loop (run_once / run_until). The clock is the real
monotonic clock plus an offset that only advance() moves, so a test can let
"seconds" pass (reconnect backoff, status polling) without sleeping.
"""
import contextlib
import select
import time

from .errors import KlipperViolation


class ReactorTimer:
    def __init__(self, callback, waketime):
        self.callback = callback
        self.waketime = waketime


class ReactorFileHandler:
    def __init__(self, fd, callback):
        self.fd = fd
        self.callback = callback


class FakeReactor:
    NOW = 0.
    NEVER = 9999999999999999.

    def __init__(self):
        self._offset = 0.
        self._timers = []
        self._fds = []
        self._no_pause_depth = 0

    # ---- Klipper API -------------------------------------------------------
    def monotonic(self):
        return time.monotonic() + self._offset

    def register_timer(self, callback, waketime=NEVER):
        timer = ReactorTimer(callback, waketime)
        self._timers.append(timer)
        return timer

    def update_timer(self, timer, waketime):
        timer.waketime = waketime

    def unregister_timer(self, timer):
        timer.waketime = self.NEVER
        if timer in self._timers:
            self._timers.remove(timer)

    def register_callback(self, callback, waketime=NOW):
        holder = []

        def invoke(eventtime):
            self.unregister_timer(holder[0])
            callback(eventtime)
            return self.NEVER
        holder.append(self.register_timer(invoke, waketime))
        return holder[0]

    def register_fd(self, fd, read_callback, write_callback=None):
        if any(h.fd == fd for h in self._fds):
            raise KlipperViolation("fd %d registered twice" % (fd,))
        handler = ReactorFileHandler(fd, read_callback)
        self._fds.append(handler)
        return handler

    def unregister_fd(self, handler):
        if handler not in self._fds:
            raise KlipperViolation("unregister_fd of an unknown handler")
        self._fds.remove(handler)

    def pause(self, waketime):
        # Real Klipper code pauses greenlets; the fake has none, and the
        # extras must never pause anyway.
        raise KlipperViolation("reactor.pause() called on the fake reactor")

    # ---- test driving -----------------------------------------------------
    def advance(self, seconds):
        """Let `seconds` pass on the reactor clock, instantly."""
        self._offset += seconds

    def fd_count(self):
        return len(self._fds)

    def timer_count(self):
        return len(self._timers)

    def run_once(self, max_wait=0.02):
        now = self.monotonic()
        next_wake = min([t.waketime for t in self._timers] or [self.NEVER])
        timeout = max(0., min(max_wait, next_wake - now))
        handlers = list(self._fds)
        if handlers:
            readable, _, _ = select.select([h.fd for h in handlers], [], [],
                                           timeout)
            for h in handlers:
                if h.fd in readable and h in self._fds:
                    h.callback(self.monotonic())
        elif timeout:
            time.sleep(timeout)
        self._run_timers()

    def _run_timers(self):
        now = self.monotonic()
        for timer in list(self._timers):
            if timer in self._timers and timer.waketime <= now:
                # Like Klipper: the callback's return value is the next
                # waketime (an update_timer inside the callback is lost).
                timer.waketime = self.NEVER
                waketime = timer.callback(now)
                if timer in self._timers:
                    timer.waketime = waketime

    def run_until(self, predicate, timeout=10., what="condition"):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("timed out after %.1f s waiting for %s"
                                     % (timeout, what))
            self.run_once()

    # ---- Klipper master's no-pause sections ----------------------------------
    def in_no_pause_section(self):
        return self._no_pause_depth > 0

    @contextlib.contextmanager
    def _no_pause(self):
        self._no_pause_depth += 1
        try:
            yield
        finally:
            self._no_pause_depth -= 1


class MasterReactor(FakeReactor):
    """Klipper after v0.13: has assert_no_pause (used around klippy:ready
    and klippy:shutdown handlers)."""

    def assert_no_pause(self):
        return self._no_pause()

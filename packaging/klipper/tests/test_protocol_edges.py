"""Protocol cases the real daemon never produces: a daemon speaking another
protocol version, and packets that break v1. A small in-test SEQPACKET
peer plays that daemon (the real one cannot be made to misbehave)."""
import json
import logging
import os
import socket
import unittest

from .bridge_harness import private_tmpdir
from .fakeklipper.printer import make_printer
from .rig import capture_logs, open_fds


class MisbehavingDaemon(unittest.TestCase):
    def setUp(self):
        tmp = private_tmpdir(self)
        self.path = os.path.join(tmp, "klipper.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.listener.settimeout(0)
        self.addCleanup(self.listener.close)
        self.log = capture_logs(self)
        self.fds_before = open_fds()
        self.printer = make_printer("v0.13", {
            "encrypted_file_bridge": {"socket_path": self.path},
            "secure_print": {}})
        self.printer.start()
        self.bridge = self.printer.lookup_object("encrypted_file_bridge")

    def accept(self):
        box = []

        def accepted():
            try:
                box.append(self.listener.accept()[0])
            except BlockingIOError:
                return False
            return True
        self.printer.reactor.run_until(accepted, 5., "the extra to connect")
        peer = box[0]
        self.addCleanup(peer.close)
        peer.settimeout(5)
        hello = json.loads(peer.recv(65536))
        self.assertEqual((hello["v"], hello["type"]), (1, "hello"))
        return peer

    def test_other_protocol_version_is_a_clear_error(self):
        peer = self.accept()
        peer.send(json.dumps({"v": 2, "type": "welcome"}).encode())
        expected = ("!! LMNT: lmntd speaks bridge protocol v2, this extra "
                    "speaks v1; update the lmntd Klipper extras")
        self.printer.reactor.run_until(
            lambda: expected in self.printer.gcode.console, 5.,
            "the console error")
        self.assertFalse(self.bridge.is_connected())
        self.assertEqual(peer.recv(65536), b"", "the extra kept the socket")
        self.assertTrue(any("protocol v2" in m for m in
                            self.log.messages(logging.ERROR)))
        # No hammering of a daemon that will not understand us.
        delay = (self.bridge.connect_timer.waketime
                 - self.printer.reactor.monotonic())
        self.assertGreater(delay, 29.)
        peer.close()
        self.printer.disconnect()
        self.assertEqual(open_fds(), self.fds_before)

    def test_fd_on_a_console_packet_is_closed(self):
        peer = self.accept()
        peer.send(json.dumps({"v": 1, "type": "welcome",
                              "status_interval": 5}).encode())
        self.printer.reactor.run_until(self.bridge.is_connected, 5.,
                                       "the welcome")
        r, w = os.pipe()
        os.close(w)
        socket.send_fds(peer, [json.dumps(
            {"v": 1, "type": "console", "text": "LMNT: hi"}).encode()], [r])
        os.close(r)
        self.printer.reactor.run_until(
            lambda: not self.bridge.is_connected(), 5., "the disconnect")
        self.assertNotIn("// LMNT: hi", self.printer.gcode.console)
        self.assertTrue(any("carried a file descriptor" in m for m in
                            self.log.messages(logging.ERROR)),
                        self.log.messages())
        peer.close()
        self.printer.disconnect()
        self.assertEqual(open_fds(), self.fds_before, "received fd leaked")

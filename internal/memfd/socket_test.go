package memfd

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// seqpacketPair returns both ends of a connected SOCK_SEQPACKET socketpair.
func seqpacketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "seqpacket")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
		t.Cleanup(func() { conns[i].Close() })
	}
	return conns[0], conns[1]
}

func countOpenFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestFDPassingPreservesContentAndOffsets(t *testing.T) {
	a, b := seqpacketPair(t)
	content := bytes.Repeat([]byte("G1 X20 Y20 E1.25 ; move\n"), 5000)
	f := sealedFile(t, content)

	type printPacket struct {
		Type string `json:"type"`
		Size int    `json:"size"`
	}
	if err := SendJSON(a, printPacket{Type: "print", Size: len(content)}, f.Fd()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65537)
	n, fds, err := ReceivePacket(b, buf, 1)
	if err != nil {
		t.Fatal(err)
	}
	var got printPacket
	if err := json.Unmarshal(buf[:n], &got); err != nil || got.Type != "print" || got.Size != len(content) {
		t.Fatalf("packet %q: %+v, %v", buf[:n], got, err)
	}
	if len(fds) != 1 {
		t.Fatalf("got %d fds, want 1", len(fds))
	}
	received := fds[0]
	defer unix.Close(received)
	if flags, err := unix.FcntlInt(uintptr(received), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("received fd not close-on-exec (flags %#x, %v)", flags, err)
	}
	if size, err := CheckSealed(received); err != nil || size != int64(len(content)) {
		t.Fatalf("CheckSealed(received) = %d, %v", size, err)
	}

	// The received fd shares the sender's open file description, offset
	// included: reading it moves the sender's offset.
	if _, err := unix.Seek(f.Fd(), 0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Read(received, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if off, _ := unix.Seek(f.Fd(), 0, io.SeekCurrent); off != 10 {
		t.Fatalf("sender offset %d after receiver read 10 bytes; the fds should share it", off)
	}

	// The reopened file has its own offset and is read-only.
	ro, err := ReopenReadOnly("/proc/self/fd", received)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	all, err := io.ReadAll(ro)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(all, content) {
		t.Fatalf("content differs after fd passing: %d bytes, want %d", len(all), len(content))
	}
	if off, _ := unix.Seek(f.Fd(), 0, io.SeekCurrent); off != 10 {
		t.Errorf("sender offset moved to %d by reading the reopened file", off)
	}
	if _, err := ro.Write([]byte("x")); err == nil {
		t.Error("write to the read-only reopened file succeeded")
	}
}

func TestReceivePacketRejectsExtraFDs(t *testing.T) {
	a, b := seqpacketPair(t)
	f := sealedFile(t, []byte("G28\n"))
	before := countOpenFDs(t)
	if err := SendPacket(a, []byte(`{"type":"status"}`), f.Fd(), f.Fd()); err != nil {
		t.Fatal(err)
	}
	_, fds, err := ReceivePacket(b, make([]byte, 1024), 1)
	if !errors.Is(err, ErrUnexpectedFDs) || fds != nil {
		t.Fatalf("two fds where one is allowed: fds %v, err %v; want ErrUnexpectedFDs", fds, err)
	}
	if after := countOpenFDs(t); after != before {
		t.Errorf("open fds %d → %d: unexpected fds were not closed", before, after)
	}
}

func TestReceivePacketControlTruncated(t *testing.T) {
	a, b := seqpacketPair(t)
	f := sealedFile(t, []byte("G28\n"))
	many := make([]int, MaxFDsPerPacket+4)
	for i := range many {
		many[i] = f.Fd()
	}
	before := countOpenFDs(t)
	if err := SendPacket(a, []byte(`{}`), many...); err != nil {
		t.Fatal(err)
	}
	_, _, err := ReceivePacket(b, make([]byte, 1024), MaxFDsPerPacket)
	if !errors.Is(err, ErrControlTruncated) {
		t.Fatalf("more fds than the control buffer holds: %v, want ErrControlTruncated", err)
	}
	if after := countOpenFDs(t); after != before {
		t.Errorf("open fds %d → %d: truncated fds were not closed", before, after)
	}
}

func TestReceivePacketTooLarge(t *testing.T) {
	a, b := seqpacketPair(t)
	if err := SendPacket(a, bytes.Repeat([]byte("x"), 2048)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReceivePacket(b, make([]byte, 1024), 0); !errors.Is(err, ErrPacketTruncated) {
		t.Fatalf("2048-byte packet into 1024 bytes: %v, want ErrPacketTruncated", err)
	}
	// The next packet is intact: SEQPACKET keeps boundaries.
	if err := SendPacket(a, []byte("next")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1024)
	n, _, err := ReceivePacket(b, buf, 0)
	if err != nil || string(buf[:n]) != "next" {
		t.Fatalf("packet after a truncated one: %q, %v", buf[:n], err)
	}
}

func TestPeerCred(t *testing.T) {
	a, b := seqpacketPair(t)
	for _, c := range []*net.UnixConn{a, b} {
		cred, err := PeerCred(c)
		if err != nil {
			t.Fatal(err)
		}
		if cred.Uid != uint32(os.Getuid()) || cred.Gid != uint32(os.Getgid()) || cred.Pid != int32(os.Getpid()) {
			t.Errorf("PeerCred = %+v, want uid %d gid %d pid %d", cred, os.Getuid(), os.Getgid(), os.Getpid())
		}
	}
}

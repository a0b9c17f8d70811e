package memfd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func sealedFile(t *testing.T, content []byte) *File {
	t.Helper()
	f, err := Create("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Seal(); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSealsAndImmutability(t *testing.T) {
	content := bytes.Repeat([]byte("G1 X10 Y10 E0.5\n"), 1000)
	f, err := Create("seal-test")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if seals, err := f.Seals(); err != nil || seals != 0 {
		t.Fatalf("fresh memfd seals = %#x, %v; want 0", seals, err)
	}
	if _, err := f.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Seal(); err != nil {
		t.Fatal(err)
	}
	seals, err := f.Seals()
	if err != nil {
		t.Fatal(err)
	}
	if seals != FullSeals {
		t.Fatalf("seals = %#x, want %#x", seals, FullSeals)
	}
	if size, err := f.Size(); err != nil || size != int64(len(content)) {
		t.Fatalf("size = %d, %v; want %d", size, err, len(content))
	}

	if _, err := f.Write([]byte("M112\n")); !errors.Is(err, unix.EPERM) {
		t.Errorf("write after seal: %v, want EPERM", err)
	}
	if _, err := unix.Pwrite(f.Fd(), []byte("X"), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("pwrite over content after seal: %v, want EPERM", err)
	}
	if err := unix.Ftruncate(f.Fd(), 10); !errors.Is(err, unix.EPERM) {
		t.Errorf("shrink after seal: %v, want EPERM", err)
	}
	if err := unix.Ftruncate(f.Fd(), int64(len(content))+4096); !errors.Is(err, unix.EPERM) {
		t.Errorf("grow after seal: %v, want EPERM", err)
	}
	if _, err := unix.FcntlInt(uintptr(f.Fd()), unix.F_ADD_SEALS, unix.F_SEAL_FUTURE_WRITE); !errors.Is(err, unix.EPERM) {
		t.Errorf("changing seals after F_SEAL_SEAL: %v, want EPERM", err)
	}
	if _, err := unix.Mmap(f.Fd(), 0, len(content), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); !errors.Is(err, unix.EPERM) {
		t.Errorf("writable shared mapping after seal: %v, want EPERM", err)
	}
	got := make([]byte, len(content))
	if _, err := unix.Pread(f.Fd(), got, 0); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("content changed after seal attempts (err %v)", err)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	f, err := Create("close-test")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for name, err := range map[string]error{
		"Seal":  f.Seal(),
		"Lock":  f.Lock(),
		"Seals": func() error { _, err := f.Seals(); return err }(),
		"Size":  func() error { _, err := f.Size(); return err }(),
		"Write": func() error { _, err := f.Write([]byte("x")); return err }(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func TestCheckSealed(t *testing.T) {
	sealed := sealedFile(t, []byte("G28\n"))
	if size, err := CheckSealed(sealed.Fd()); err != nil || size != 4 {
		t.Fatalf("sealed memfd: size %d, err %v", size, err)
	}

	unsealed, err := Create("unsealed")
	if err != nil {
		t.Fatal(err)
	}
	defer unsealed.Close()
	if _, err := CheckSealed(unsealed.Fd()); !errors.Is(err, ErrMissingSeals) {
		t.Errorf("unsealed memfd: %v, want ErrMissingSeals", err)
	}

	// Only some seals: a sender that froze the size but not the content.
	partial, err := Create("partial")
	if err != nil {
		t.Fatal(err)
	}
	defer partial.Close()
	if _, err := unix.FcntlInt(uintptr(partial.Fd()), unix.F_ADD_SEALS, unix.F_SEAL_GROW|unix.F_SEAL_SHRINK); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckSealed(partial.Fd()); !errors.Is(err, ErrMissingSeals) {
		t.Errorf("memfd without write seal: %v, want ErrMissingSeals", err)
	}

	noSealing, err := unix.MemfdCreate("no-sealing", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(noSealing)
	if _, err := CheckSealed(noSealing); !errors.Is(err, ErrMissingSeals) {
		t.Errorf("memfd created without MFD_ALLOW_SEALING: %v, want ErrMissingSeals", err)
	}

	regular, err := os.CreateTemp(t.TempDir(), "plain")
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	if _, err := CheckSealed(int(regular.Fd())); !errors.Is(err, ErrNotSealable) {
		t.Errorf("regular file: %v, want ErrNotSealable", err)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := CheckSealed(int(r.Fd())); !errors.Is(err, ErrNotRegular) {
		t.Errorf("pipe: %v, want ErrNotRegular", err)
	}
}

func TestLockPinsAndHidesFromCoreDumps(t *testing.T) {
	content := bytes.Repeat([]byte("G1 X1\n"), 20000)
	f, err := Create("lock-test")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Lock(); !errors.Is(err, ErrNotSealed) {
		t.Fatalf("Lock before Seal: %v, want ErrNotSealed", err)
	}
	if err := f.Seal(); err != nil {
		t.Fatal(err)
	}
	// The tests run as root (CAP_IPC_LOCK), so the limit does not apply.
	if err := f.Lock(); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if !f.Locked() {
		t.Fatal("Locked() = false after a successful Lock")
	}
	flags := vmFlagsOfMapping(t, "memfd:lock-test")
	for _, want := range []string{"lo", "dd"} { // locked, do-not-dump
		if !strings.Contains(" "+flags+" ", " "+want+" ") {
			t.Errorf("mapping VmFlags %q lack %q", flags, want)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if flags := vmFlagsOfMapping(t, "memfd:lock-test"); flags != "" {
		t.Errorf("mapping still present after Close: %q", flags)
	}

	empty := sealedFile(t, nil)
	if err := empty.Lock(); err != nil || empty.Locked() {
		t.Errorf("Lock of an empty file: %v, locked %v; want a no-op", err, empty.Locked())
	}
}

// vmFlagsOfMapping returns the VmFlags of the mapping whose path contains
// name in /proc/self/smaps, or "" when there is none.
func vmFlagsOfMapping(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	inMapping := false
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") {
			inMapping = strings.Contains(line, name)
			continue
		}
		if inMapping && strings.HasPrefix(line, "VmFlags:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmFlags:"))
		}
	}
	return ""
}

// The limit path needs a process without CAP_IPC_LOCK: the test re-runs
// itself as a child that lowers RLIMIT_MEMLOCK and drops to uid 65534.
const lockChildEnv = "LMNTD_MEMFD_LOCK_CHILD"

func TestLockUnderMemlockLimit(t *testing.T) {
	if os.Getenv(lockChildEnv) == "" {
		if os.Getuid() != 0 {
			t.Fatalf("this test drops privileges in a child and needs root (running as uid %d)", os.Getuid())
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestLockUnderMemlockLimit$", "-test.v")
		cmd.Env = append(os.Environ(), lockChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child failed: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "lock-limit child ok") {
			t.Fatalf("child did not run its checks:\n%s", out)
		}
		return
	}
	const limit = 64 << 10
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setresgid(65534, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setresuid(65534, 65534, 65534); err != nil {
		t.Fatal(err)
	}

	small := sealedFile(t, bytes.Repeat([]byte("G1\n"), 4000)) // 12 KB, within the limit
	if err := small.Lock(); err != nil {
		t.Fatalf("Lock within the limit: %v", err)
	}
	big := sealedFile(t, bytes.Repeat([]byte("G1 X1 Y1\n"), 100000)) // 900 KB, over it
	err := big.Lock()
	if !errors.Is(err, ErrLockLimited) {
		t.Fatalf("Lock over the limit: %v, want ErrLockLimited", err)
	}
	if big.Locked() {
		t.Fatal("Locked() = true after a failed Lock")
	}
	if _, err := CheckSealed(big.Fd()); err != nil {
		t.Fatalf("file unusable after a failed Lock: %v", err)
	}
	fmt.Println("lock-limit child ok:", err)
}

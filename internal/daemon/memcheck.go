package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/config"
)

// daemonOverhead is what lmntd needs besides the memfds: Go heap, buffers,
// the HTTP and TLS stacks (measured well below this on arm64).
const daemonOverhead = 128 * config.MiB

// memoryCheck compares the unit's MemoryMax= (the cgroup's memory.max) with
// what the configured limits let the memfds take: one decrypted job and a
// full local queue. If the limits were raised past it, the kernel would
// kill lmntd in the middle of a job instead of refusing it up front.
func (d *daemon) memoryCheck() apitype.Check {
	l := d.cfg.Load().Limits
	need := int64(l.MaxDownloadSize) + int64(l.MaxLocalQueueSize) + int64(daemonOverhead)
	c := apitype.Check{Name: "memory limit", Result: apitype.CheckOK}
	limit, where, err := cgroupMemoryMax(d.o.HostRoot)
	switch {
	case err != nil:
		c.Result, c.Detail = apitype.CheckSkip, "cannot read the service's memory limit: "+err.Error()
	case limit < 0:
		c.Detail = fmt.Sprintf("no MemoryMax= (%s); the limits allow up to %s in memory", where, config.ByteSize(need))
	case limit < need:
		c.Result = apitype.CheckWarn
		c.Detail = fmt.Sprintf("MemoryMax= is %s but limits.max_download_size + limits.max_local_queue_size + %s come to %s",
			config.ByteSize(limit), config.ByteSize(daemonOverhead), config.ByteSize(need))
		c.Fix = "lower those limits, or raise MemoryMax= with a drop-in (systemctl edit lmntd) if the board has the memory"
	default:
		c.Detail = fmt.Sprintf("MemoryMax= %s fits the limits (%s)", config.ByteSize(limit), config.ByteSize(need))
	}
	return c
}

// cgroupMemoryMax reads this process's cgroup v2 memory.max below root: -1
// for "max" (no limit).
func cgroupMemoryMax(root string) (limit int64, file string, err error) {
	data, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup"))
	if err != nil {
		return 0, "", err
	}
	var path string
	for line := range strings.Lines(string(data)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			path = p
		}
	}
	if path == "" {
		return 0, "", fmt.Errorf("no cgroup v2 entry in /proc/self/cgroup")
	}
	file = filepath.Join(root, "sys/fs/cgroup", path, "memory.max")
	data, err = os.ReadFile(file)
	if err != nil {
		return 0, file, err
	}
	v := strings.TrimSpace(string(data))
	if v == "max" {
		return -1, file, nil
	}
	limit, err = strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, file, fmt.Errorf("%s: %q is not a byte count", file, v)
	}
	return limit, file, nil
}

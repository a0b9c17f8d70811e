//go:build system

package system

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// aptRepo is the signed repository: stable holds the snapshot (V1), beta a
// second build with a higher version (V2) for the upgrade test.
type aptRepo struct {
	dir     string
	keyring string
	v1, v2  string
	debV1   string
	debV2   string
}

var repoState struct {
	once sync.Once
	repo *aptRepo
}

// upgradeBuild makes the V2 package: the snapshot .deb with lmntd and lmnt
// rebuilt from this tree stamped V2, the control version raised, the
// shipped lmntd.toml changed and the md5sums redone, the way a next release
// differs from this one.
func upgradeBuild(t *testing.T, debV1, v2, out string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pkg")
	run(t, cmdOpts{quiet: true}, "dpkg-deb", "--raw-extract", debV1, dir)
	goBuild(t, "./cmd/lmntd", filepath.Join(dir, "usr/bin/lmntd"), v2)
	goBuild(t, "./cmd/lmnt", filepath.Join(dir, "usr/bin/lmnt"), v2)
	control := filepath.Join(dir, "DEBIAN", "control")
	data, err := os.ReadFile(control)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "Version: ") {
			l = "Version: " + v2
		}
		lines = append(lines, l)
	}
	writeFile(t, control, strings.Join(lines, "\n"), 0o644)
	// The next release ships a changed lmntd.toml (a conffile): the
	// container test upgrades unattended over the owner's own edit of it.
	conffile := filepath.Join(dir, "etc/lmntd/lmntd.toml")
	shipped, err := os.ReadFile(conffile)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, conffile, string(shipped)+"\n# A comment changed in the upgrade build.\n", 0o644)
	run(t, cmdOpts{dir: dir, quiet: true}, "sh", "-c",
		"find . -type f ! -path './DEBIAN/*' -printf '%P\\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums")
	run(t, cmdOpts{quiet: true}, "dpkg-deb", "--root-owner-group", "--build", dir, out)
}

func repository(t *testing.T) *aptRepo {
	t.Helper()
	repoState.once.Do(func() {
		rel := snapshot(t)
		done := stage(t, "signed apt repository (stable = snapshot, beta = upgrade build)")
		defer done()
		home, fpr, keyring := testKey(t)
		r := &aptRepo{keyring: keyring, v1: rel.version, v2: rel.version + "+systest2", debV1: rel.debs["amd64"]}
		run(t, cmdOpts{quiet: true}, "dpkg", "--compare-versions", r.v2, "gt", r.v1)
		base, err := os.MkdirTemp("", "lmntd-apt-")
		if err != nil {
			t.Fatal(err)
		}
		removeAtExit(base) // the repository outlives this test: the container test uses it
		r.dir = filepath.Join(base, "repo")
		r.debV2 = filepath.Join(base, "lmntd_"+r.v2+"_amd64.deb")
		upgradeBuild(t, r.debV1, r.v2, r.debV2)
		script := filepath.Join(repoRoot, "packaging/apt/make-repo.sh")
		var stableDebs []string
		for _, d := range rel.debs {
			stableDebs = append(stableDebs, d)
		}
		run(t, cmdOpts{}, script, append([]string{"--out", r.dir, "--channel", "stable", "--key", fpr, "--gnupghome", home}, stableDebs...)...)
		run(t, cmdOpts{}, script, "--out", r.dir, "--channel", "beta", "--key", fpr, "--gnupghome", home, r.debV2)
		repoState.repo = r
	})
	if repoState.repo == nil {
		t.Fatal("building the apt repository failed (see the first test that built it)")
	}
	return repoState.repo
}

// TestAptRepository checks the repository the way apt will: both channels
// verify against the exported key with gpgv, every architecture is listed,
// and a tampered Release does not verify.
func TestAptRepository(t *testing.T) {
	r := repository(t)
	defer stage(t, "apt repository: signatures, channels, tampering")()
	for _, ch := range []string{"stable", "beta"} {
		dists := filepath.Join(r.dir, "dists", ch)
		run(t, cmdOpts{}, "gpgv", "--keyring", r.keyring, filepath.Join(dists, "InRelease"))
		run(t, cmdOpts{}, "gpgv", "--keyring", r.keyring, filepath.Join(dists, "Release.gpg"), filepath.Join(dists, "Release"))
	}
	for ch, want := range map[string]map[string]string{
		"stable": {"amd64": r.v1, "arm64": r.v1, "armhf": r.v1},
		"beta":   {"amd64": r.v2},
	} {
		for arch, version := range want {
			pk, err := os.ReadFile(filepath.Join(r.dir, "dists", ch, "main", "binary-"+arch, "Packages"))
			if err != nil {
				t.Errorf("%s/%s: %v", ch, arch, err)
				continue
			}
			if !strings.Contains(string(pk), "Package: lmntd\n") || !strings.Contains(string(pk), "Version: "+version+"\n") {
				t.Errorf("%s/%s Packages lacks lmntd %s:\n%s", ch, arch, version, pk)
			}
		}
	}
	// Replay protection and consistent updates: each Release expires in
	// a week and has apt fetch the indexes by hash; every hash it names is
	// there; no staging directory is left in dists/.
	for _, ch := range []string{"stable", "beta"} {
		dists := filepath.Join(r.dir, "dists", ch)
		rel, err := os.ReadFile(filepath.Join(dists, "Release"))
		if err != nil {
			t.Fatal(err)
		}
		fields := map[string]string{}
		section := ""
		byHash := 0
		for _, l := range strings.Split(string(rel), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, " ") {
				fields[k], section = strings.TrimSpace(v), k
				continue
			}
			f := strings.Fields(l)
			if (section != "SHA256" && section != "SHA512") || len(f) != 3 {
				continue
			}
			p := filepath.Join(dists, filepath.Dir(f[2]), "by-hash", section, f[0])
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s: %s names %s, which is not served by hash: %v", ch, section, f[2], err)
			}
			byHash++
		}
		if fields["Acquire-By-Hash"] != "yes" || byHash == 0 {
			t.Errorf("%s Release: Acquire-By-Hash %q, %d by-hash entries", ch, fields["Acquire-By-Hash"], byHash)
		}
		date, err1 := time.Parse(time.RFC1123Z, fields["Date"])
		until, err2 := time.Parse(time.RFC1123Z, fields["Valid-Until"])
		if err1 != nil || err2 != nil || until.Sub(date) != 7*24*time.Hour || time.Since(date) > time.Hour {
			t.Errorf("%s Release: Date %q, Valid-Until %q (%v, %v): want valid for 7 days from now", ch, fields["Date"], fields["Valid-Until"], err1, err2)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(r.dir, "dists", ".*")); len(left) > 0 {
		t.Errorf("make-repo left staging directories: %v", left)
	}
	// A changed byte in Release must break the signature.
	tampered := filepath.Join(t.TempDir(), "Release")
	data, err := os.ReadFile(filepath.Join(r.dir, "dists", "stable", "Release"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, tampered, strings.Replace(string(data), "Suite: stable", "Suite: stablf", 1), 0o644)
	if out, err := tryRun(t, cmdOpts{quiet: true}, "gpgv", "--keyring", r.keyring,
		filepath.Join(r.dir, "dists", "stable", "Release.gpg"), tampered); err == nil {
		t.Errorf("a tampered Release verified:\n%s", out)
	}
}

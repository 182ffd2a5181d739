// Command package builds hotplug-agent's .deb and .rpm with nfpm; `make package` runs it from the
// top of the repository.
//
// It reads deploy/package/nfpm.yaml, makes the files the packages need that are made at build
// time in a temporary directory (the systemd unit with ExecStart in /usr/bin, the changelog, and
// the man page and shell completions when the binary can print them), takes the architecture
// from the binary, the version from -version (as `git describe --tags --always --dirty` prints
// it), and writes the packages into -out.
package main

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"debug/elf"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// The unit in the repository starts the binary where `make install` puts it by default.
const (
	unitSource    = "deploy/systemd/hotplug-agent.service"
	sourceBinary  = "/usr/local/bin/hotplug-agent"
	packageBinary = "/usr/bin/hotplug-agent"
)

func main() {
	var o options
	flag.StringVar(&o.config, "config", "deploy/package/nfpm.yaml", "nfpm configuration")
	flag.StringVar(&o.bin, "bin", "bin/hotplug-agent", "the static binary to package")
	flag.StringVar(&o.version, "version", "", "the binary's version, as `git describe --tags --always --dirty` prints it")
	flag.StringVar(&o.out, "out", "bin", "directory for the packages")
	formats := flag.String("formats", "deb,rpm", "package formats, comma-separated")
	flag.Parse()
	o.formats = strings.Split(*formats, ",")
	if err := build(o, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "package: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	config, bin, version, out string
	formats                   []string
}

// optional is a file the binary prints when it can (kingpin's --help-man and completion
// scripts); a binary that cannot is packaged without it.
type optional struct {
	flag, what, name string // the flag that prints it; what it is, for messages; the staged file
	gzip             bool
	looksRight       func([]byte) bool
	dst              map[string]string // where it goes, by package format
}

var optionals = []optional{
	{
		flag: "--help-man", what: "man page", name: "hotplug-agent.1.gz", gzip: true,
		looksRight: func(b []byte) bool { return bytes.HasPrefix(b, []byte(".TH ")) || bytes.Contains(b, []byte("\n.TH ")) },
		dst: map[string]string{
			"deb": "/usr/share/man/man1/hotplug-agent.1.gz",
			"rpm": "/usr/share/man/man1/hotplug-agent.1.gz",
		},
	},
	{
		flag: "--completion-script-bash", what: "bash completion", name: "hotplug-agent.bash",
		looksRight: func(b []byte) bool { return bytes.Contains(b, []byte("complete ")) },
		dst: map[string]string{
			"deb": "/usr/share/bash-completion/completions/hotplug-agent",
			"rpm": "/usr/share/bash-completion/completions/hotplug-agent",
		},
	},
	{
		flag: "--completion-script-zsh", what: "zsh completion", name: "_hotplug-agent",
		looksRight: func(b []byte) bool { return bytes.Contains(b, []byte("#compdef")) },
		dst: map[string]string{
			"deb": "/usr/share/zsh/vendor-completions/_hotplug-agent", // Debian's zsh reads vendor completions here
			"rpm": "/usr/share/zsh/site-functions/_hotplug-agent",
		},
	},
}

// build writes the packages and reports on w what it wrote and what it left out.
func build(o options, w io.Writer) error {
	arch, err := binaryArch(o.bin)
	if err != nil {
		return err
	}
	ver, err := parseVersion(o.version, commitCount)
	if err != nil {
		return err
	}
	mtime, err := sourceDate()
	if err != nil {
		return err
	}
	stage, err := os.MkdirTemp("", "hotplug-agent-package-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	if err := stageUnit(filepath.Join(stage, "hotplug-agent.service")); err != nil {
		return err
	}
	var extra []optional
	var missing []string
	var why error
	for _, opt := range optionals {
		b, err := printed(o.bin, opt.flag, mtime)
		if err == nil && !opt.looksRight(b) {
			err = fmt.Errorf("%s %s printed something else than a %s", o.bin, opt.flag, opt.what)
		}
		if err != nil {
			missing = append(missing, opt.what)
			why = cmp.Or(why, err)
			continue
		}
		// zsh's compinit reads #compdef on the first line only; kingpin's script starts with an
		// empty one.
		b = bytes.TrimLeft(b, "\n")
		if opt.gzip {
			b = gzipped(b)
		}
		if err := os.WriteFile(filepath.Join(stage, opt.name), b, 0o644); err != nil {
			return err
		}
		extra = append(extra, opt)
	}
	if missing != nil {
		list := strings.Join(missing, ", ")
		if n := len(missing); n > 1 {
			list = strings.Join(missing[:n-1], ", ") + " or " + missing[n-1]
		}
		fmt.Fprintf(w, "package: the packages have no %s: %v\n", list, why)
	}

	cfg, err := nfpm.ParseFileWithEnvMapping(o.config, func(name string) string {
		switch name {
		case "BIN":
			return o.bin
		case "STAGE":
			return stage
		}
		return ""
	})
	if err != nil {
		return fmt.Errorf("%s: %w", o.config, err)
	}
	changelog := debianChangelog(cfg.Name, ver.String(), cfg.Maintainer, commitName(o.version), mtime)
	if err := os.WriteFile(filepath.Join(stage, "changelog.gz"), gzipped([]byte(changelog)), 0o644); err != nil {
		return err
	}

	for _, format := range o.formats {
		info, err := cfg.Get(format)
		if err != nil {
			return fmt.Errorf("%s: %w", format, err)
		}
		info.Arch = arch
		info.VersionSchema = "none"
		info.Version, info.Prerelease, info.VersionMetadata = ver.Version, ver.Prerelease, ver.Metadata
		info.MTime = mtime
		if format == "rpm" {
			// The first line of the description is the summary; rpm has a field for it.
			_, info.Description, _ = strings.Cut(info.Description, "\n")
		}
		for _, opt := range extra {
			info.Contents = append(info.Contents, &files.Content{
				Source:      filepath.Join(stage, opt.name),
				Destination: opt.dst[format],
				FileInfo:    &files.ContentFileInfo{Mode: 0o644},
			})
		}
		info = nfpm.WithDefaults(info)
		p, err := nfpm.Get(format)
		if err != nil {
			return err
		}
		path := filepath.Join(o.out, p.ConventionalFileName(info))
		if err := write(path, func(f io.Writer) error { return p.Package(info, f) }); err != nil {
			return fmt.Errorf("%s: %w", format, err)
		}
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "package: %s (%d KiB)\n", path, (st.Size()+1023)/1024)
	}
	return nil
}

// write creates path with what fill writes, leaving no partial file when fill fails.
func write(path string, fill func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = fill(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// stageUnit writes the systemd unit with ExecStart naming the packaged binary, as `make install`
// does for its PREFIX.
func stageUnit(dst string) error {
	b, err := os.ReadFile(unitSource)
	if err != nil {
		return err
	}
	if !bytes.Contains(b, []byte("ExecStart="+sourceBinary+" ")) {
		return fmt.Errorf("%s: no ExecStart=%s to rewrite", unitSource, sourceBinary)
	}
	return os.WriteFile(dst, bytes.ReplaceAll(b, []byte(sourceBinary), []byte(packageBinary)), 0o644)
}

// binaryArch returns the Go name of the architecture bin is built for, and refuses a dynamically
// linked binary: the packages declare no dependency on a C library.
func binaryArch(bin string) (string, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return "", fmt.Errorf("%s: %w (run make build first)", bin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("%s is dynamically linked; build it with CGO_ENABLED=0 (make build)", bin)
		}
	}
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	case elf.EM_386:
		return "386", nil
	case elf.EM_RISCV:
		return "riscv64", nil
	case elf.EM_S390:
		return "s390x", nil
	case elf.EM_PPC64:
		if f.ByteOrder.String() == "LittleEndian" {
			return "ppc64le", nil
		}
	case elf.EM_LOONGARCH:
		return "loong64", nil
	}
	return "", fmt.Errorf("%s: no package architecture for machine %v", bin, f.Machine)
}

// printed runs bin with one flag and returns its standard output; a binary that does not know the
// flag fails with its usage, and the error carries the first line of what it said. The binary
// gets SOURCE_DATE_EPOCH=date, so that what it dates (the man page) is the packaged files' date
// and a commit packaged twice gives the same packages.
func printed(bin, flag string, date time.Time) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, flag)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+strconv.FormatInt(date.Unix(), 10))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		first, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
		if first != "" {
			return nil, fmt.Errorf("%s %s: %w: %s", bin, flag, err, first)
		}
		return nil, fmt.Errorf("%s %s: %w", bin, flag, err)
	}
	return stdout.Bytes(), nil
}

// gzipped compresses b as `gzip -9n` does: best compression, no name, no time.
func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// pkgVersion is a package version, the same for deb and rpm: Version, then ~Prerelease (which
// sorts before the release), then +Metadata (which sorts after).
type pkgVersion struct {
	Version, Prerelease, Metadata string
}

func (v pkgVersion) String() string {
	s := v.Version
	if v.Prerelease != "" {
		s += "~" + v.Prerelease
	}
	if v.Metadata != "" {
		s += "+" + v.Metadata
	}
	return s
}

var (
	describedRE = regexp.MustCompile(`^(.+)-([0-9]+)-g([0-9a-f]{4,40})$`)
	tagRE       = regexp.MustCompile(`^v?([0-9]+\.[0-9]+\.[0-9]+)(?:-([0-9A-Za-z.-]+))?$`)
	hashRE      = regexp.MustCompile(`^[0-9a-f]{4,40}$`)
)

// parseVersion turns what `git describe --tags --always --dirty` printed into a package version
// that sorts as the commits do: v1.2.3 is 1.2.3, and 4 commits later 1.2.3+git4.gabcdef0;
// v1.2.3-rc.1 is 1.2.3~rc.1, before 1.2.3; in a repository without tags, commit abcdef0 is
// 0.0.0+git110.gabcdef0, where 110 is the commit count, which commits returns; a dirty tree
// adds .dirty.
func parseVersion(describe string, commits func() (int, error)) (pkgVersion, error) {
	s, dirty := strings.CutSuffix(describe, "-dirty")
	var v pkgVersion
	var meta []string
	if m := describedRE.FindStringSubmatch(s); m != nil {
		s = m[1]
		meta = append(meta, "git"+m[2], "g"+m[3])
	}
	switch m := tagRE.FindStringSubmatch(s); {
	case m != nil:
		// A hyphen would end the upstream version of a deb and cannot be in an rpm's.
		v.Version, v.Prerelease = m[1], strings.ReplaceAll(m[2], "-", ".")
	case hashRE.MatchString(s) && meta == nil:
		n, err := commits()
		if err != nil {
			return v, fmt.Errorf("version %q: count the commits: %w", describe, err)
		}
		v.Version = "0.0.0"
		meta = append(meta, "git"+strconv.Itoa(n), "g"+s)
	default:
		return v, fmt.Errorf("version %q: want a tag like v1.2.3 (or VERSION=1.2.3), as git describe --tags prints it", describe)
	}
	if dirty {
		meta = append(meta, "dirty")
	}
	v.Metadata = strings.Join(meta, ".")
	return v, nil
}

// commitCount counts the commits of HEAD.
func commitCount() (int, error) {
	out, err := exec.Command("git", "rev-list", "--count", "HEAD").Output()
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(out)))
}

// commitName names the commit built, for the changelog.
func commitName(describe string) string {
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	return describe
}

// sourceDate is the time of the packaged files and the changelog: SOURCE_DATE_EPOCH, or else the
// time of the last commit, so that a commit packaged twice gives the same packages.
func sourceDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		out, err := exec.Command("git", "log", "-1", "--format=%ct").Output()
		if err != nil {
			return time.Now().UTC().Truncate(time.Second), nil
		}
		s = strings.TrimSpace(string(out))
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}

// debianChangelog is the package's changelog in Debian's format: one entry, for this build.
func debianChangelog(name, version, maintainer, commit string, date time.Time) string {
	return fmt.Sprintf(`%s (%s) unstable; urgency=medium

  * Built from commit %s of hotplug-agent; its changes are in the
    project's history: https://github.com/hotplug-agent/hotplug-agent/commits

 -- %s  %s
`, name, version, commit, maintainer, date.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
}

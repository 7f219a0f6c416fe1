package kmemleak

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// DefaultDebugfs is where debugfs is mounted on every distribution.
const DefaultDebugfs = "/sys/kernel/debug"

// Errors of live mode, each with the message a user needs.
var (
	ErrNotRoot    = errors.New("reading kmemleak needs root: debugfs is readable by root only")
	ErrNotBuiltIn = errors.New("kmemleak is not built into this kernel (CONFIG_DEBUG_KMEMLEAK is not set)")
	ErrMissing    = errors.New("kmemleak is not available: the kernel was probably built without CONFIG_DEBUG_KMEMLEAK")
	ErrDisabled   = errors.New("kmemleak is built in but disabled: boot with kmemleak=on, or it turned itself off after an error (see dmesg)")
)

// LiveOptions say what to do with the running kernel's kmemleak.
type LiveOptions struct {
	// Debugfs is debugfs's mount point; empty means DefaultDebugfs.
	Debugfs string
	// Scan makes kmemleak scan twice before reading: an object is only
	// reported once its contents stayed unchanged across a scan.
	Scan bool
	// Clear forgets the reported objects after reading, so the next read
	// shows only new ones.
	Clear bool
}

// system is what live mode needs from the machine, so tests can stand in.
type system struct {
	euid      func() int
	exists    func(path string) (bool, error)
	mounted   func(dir string) bool
	mount     func(dir string) error
	unmount   func(dir string) error
	write     func(path, cmd string) error
	read      func(path string) ([]byte, error)
	configure func() string // the kernel's CONFIG_DEBUG_KMEMLEAK value, "" if unknown
}

var realSystem = system{
	euid: os.Geteuid,
	exists: func(p string) (bool, error) {
		_, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return err == nil, err
	},
	mounted: debugfsMounted,
	mount: func(dir string) error {
		return syscall.Mount("debugfs", dir, "debugfs", 0, "")
	},
	unmount: func(dir string) error { return syscall.Unmount(dir, 0) },
	write: func(p, cmd string) error {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.Write([]byte(cmd))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	},
	read:      os.ReadFile,
	configure: kernelConfig,
}

// ReadLive reads the running kernel's kmemleak report, mounting debugfs
// for the duration when it is not mounted.
func ReadLive(opt LiveOptions) ([]byte, error) {
	return readLive(realSystem, opt)
}

func readLive(sys system, opt LiveOptions) (data []byte, err error) {
	dir := opt.Debugfs
	if dir == "" {
		dir = DefaultDebugfs
	}
	if sys.euid() != 0 {
		return nil, ErrNotRoot
	}
	path := filepath.Join(dir, "kmemleak")
	ok, err := sys.exists(path)
	if err != nil {
		return nil, liveErr(path, err)
	}
	if !ok && !sys.mounted(dir) {
		if err := sys.mount(dir); err != nil {
			return nil, fmt.Errorf("mounting debugfs on %s: %w", dir, err)
		}
		// Leave the machine as it was found.
		defer func() {
			if uerr := sys.unmount(dir); uerr != nil && err == nil {
				err = fmt.Errorf("unmounting debugfs from %s: %w", dir, uerr)
			}
		}()
		if ok, err = sys.exists(path); err != nil {
			return nil, liveErr(path, err)
		}
	}
	if !ok {
		switch sys.configure() {
		case "n":
			return nil, ErrNotBuiltIn
		default:
			return nil, ErrMissing
		}
	}
	if opt.Scan {
		for i := 0; i < 2; i++ {
			if err := sys.write(path, "scan"); err != nil {
				return nil, liveErr(path, err)
			}
		}
	}
	data, err = sys.read(path)
	if err != nil {
		return nil, liveErr(path, err)
	}
	if opt.Clear {
		if err := sys.write(path, "clear"); err != nil {
			return nil, liveErr(path, err)
		}
	}
	return data, nil
}

// liveErr turns the errnos kmemleak answers with into their meaning.
// Disabled kmemleak refuses everything but "clear" with EPERM (EBUSY on
// some kernels); EACCES means we lack the rights.
func liveErr(path string, err error) error {
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EBUSY):
		return ErrDisabled
	case errors.Is(err, syscall.EACCES):
		return ErrNotRoot
	}
	return fmt.Errorf("%s: %w", path, err)
}

// debugfsMounted reports whether dir is a debugfs mount point.
func debugfsMounted(dir string) bool {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[1] == dir && fields[2] == "debugfs" {
			return true
		}
	}
	return false
}

// kernelConfig looks CONFIG_DEBUG_KMEMLEAK up in the running kernel's
// configuration: "y", "n", or "" when no configuration can be found.
func kernelConfig() string {
	var uts syscall.Utsname
	var release string
	if syscall.Uname(&uts) == nil {
		b := make([]byte, 0, len(uts.Release))
		for _, c := range uts.Release {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		release = string(b)
	}
	open := []func() (io.ReadCloser, error){
		func() (io.ReadCloser, error) {
			f, err := os.Open("/proc/config.gz")
			if err != nil {
				return nil, err
			}
			z, err := gzip.NewReader(f)
			if err != nil {
				f.Close()
				return nil, err
			}
			return struct {
				io.Reader
				io.Closer
			}{z, f}, nil
		},
		func() (io.ReadCloser, error) { return os.Open("/boot/config-" + release) },
	}
	for _, o := range open {
		rc, err := o()
		if err != nil {
			continue
		}
		v := configValue(rc, "CONFIG_DEBUG_KMEMLEAK")
		rc.Close()
		return v
	}
	return ""
}

// configValue reads a kernel .config for one boolean option.
func configValue(r io.Reader, name string) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == name+"=y" {
			return "y"
		}
		if line == "# "+name+" is not set" {
			return "n"
		}
	}
	return "n"
}

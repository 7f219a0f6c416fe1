package kmemleak

import (
	"bytes"
	"encoding/json"
	"errors"
	"libleak/internal/testutil"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func parseFile(t *testing.T, name string) []Object {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs, err := Parse(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return objs
}

var bootStack = []string{"acpi_init", "do_one_initcall", "kernel_init_freeable", "kernel_init", "ret_from_fork"}

// Every kernel era's format, with the groups its objects must make.
var fixtures = []struct {
	file       string
	objects    int
	duplicates int
	groups     []Group
}{
	{
		// Late 2024: no [<address>], crc, _noprof names, modules. The two
		// probe objects differ in crc and past the eighth frame only.
		file: "v6.12-noaddr.txt", objects: 3,
		groups: []Group{
			{Title: "memory leak in demo_probe", Count: 2, Bytes: 128,
				Comms: []string{"modprobe", "systemd-udevd"},
				Frames: []string{"demo_probe [demo_drv]", "platform_probe", "really_probe", "__driver_probe_device",
					"driver_probe_device", "__driver_attach", "bus_for_each_dev", "bus_add_driver"}},
			{Title: "memory leak in demo_ioctl", Count: 1, Bytes: 192, Comms: []string{"demo-ctl"},
				Frames: []string{"demo_ioctl [demo_drv]", "__x64_sys_ioctl", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"}},
		},
	},
	{
		// 6.8+: crc with hashed addresses. fib6_info_alloc is an
		// allocator frame; the third route object has another caller
		// below the signature.
		file: "v6.8-crc-hashed.txt", objects: 4,
		groups: []Group{
			{Title: "memory leak in ip6_route_info_create", Count: 3, Bytes: 768,
				Comms: []string{"NetworkManager", "ip"},
				Frames: []string{"ip6_route_info_create", "ip6_route_add", "inet6_rtm_newroute", "rtnetlink_rcv_msg",
					"netlink_rcv_skb", "netlink_unicast", "netlink_sendmsg", "sock_sendmsg"}},
			{Title: "memory leak in getname_flags", Count: 1, Bytes: 4096, Comms: []string{"cat"},
				Frames: []string{"getname_flags", "do_sys_openat2", "__x64_sys_openat", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"}},
		},
	},
	{
		// 4.15–6.7: (age …), bare backtrace:, hashed addresses; one build
		// with .constprop/.isra clones, one without, grouped together.
		file: "v5.10-age.txt", objects: 3,
		groups: []Group{
			{Title: "memory leak in demo_get_config", Count: 2, Bytes: 256,
				Comms: []string{"kworker/u16:2", "kworker/u16:5"},
				Frames: []string{"demo_get_config [demo_usb]", "demo_usb_probe [demo_usb]", "usb_probe_interface",
					"really_probe", "driver_probe_device", "__device_attach_driver", "bus_for_each_drv", "__device_attach"}},
			{Title: "memory leak in sd_revalidate_disk", Count: 1, Bytes: 1024, Comms: []string{"systemd-udevd"},
				Frames: []string{"sd_revalidate_disk", "sd_probe", "really_probe", "driver_probe_device"}},
		},
	},
	{
		// Before 4.15: real addresses, the all-ones terminator, a module
		// address without a symbol.
		file: "v4.9-realaddr.txt", objects: 3,
		groups: []Group{
			{Title: "memory leak in demo_write", Count: 2, Bytes: 64, Comms: []string{"demod"},
				Frames: []string{"?", "demo_write [demo_legacy]", "__vfs_write", "vfs_write", "SyS_write", "entry_SYSCALL_64_fastpath"}},
			{Title: "memory leak in acpi_init", Count: 1, Bytes: 512, Comms: []string{"swapper/0"}, Boot: true,
				Frames: bootStack},
		},
	},
	{
		// (percpu) and (phys) objects; objects made in interrupts.
		file: "phys-percpu.txt", objects: 5,
		groups: []Group{
			{Title: "memory leak in demo_timer_fn", Count: 2, Bytes: 64, Comms: []string{"hardirq", "softirq"},
				Frames: []string{"demo_timer_fn [demo_stats]", "call_timer_fn", "__run_timers", "run_timer_softirq",
					"handle_softirqs", "irq_exit_rcu", "sysvec_apic_timer_interrupt"}},
			{Title: "memory leak in demo_counters_init", Count: 2, Bytes: 16, Comms: []string{"modprobe"},
				Kinds: []string{"percpu"}, Frames: []string{"demo_counters_init [demo_stats]", "do_one_initcall", "do_init_module"}},
			{Title: "memory leak in setup_arch", Count: 1, Bytes: 4096, Comms: []string{"swapper/0"},
				Kinds: []string{"phys"}, Boot: true, Frames: []string{"setup_arch", "start_kernel"}},
		},
	},
	{
		// syzbot: BUG: memory leak, symbolized frames with file:line and
		// [inline]; inlined allocator frames are skipped too.
		file: "syzbot.txt", objects: 3,
		groups: []Group{
			{Title: "memory leak in demo_sock_bind", Count: 2, Bytes: 128, Comms: []string{"syz-executor281"},
				Frames: []string{"demo_sock_bind", "__sys_bind", "__do_sys_bind", "__se_sys_bind", "__x64_sys_bind",
					"do_syscall_x64", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"}},
			{Title: "memory leak in demo_sock_sendmsg", Count: 1, Bytes: 224, Comms: []string{"syz-executor281"},
				Frames: []string{"demo_sock_sendmsg", "sock_sendmsg_nosec", "__sock_sendmsg", "__sys_sendto",
					"__do_sys_sendto", "__se_sys_sendto", "__x64_sys_sendto", "do_syscall_x64"}},
		},
	},
	{
		// dmesg with kmemleak.verbose: timestamps, caller ids, journal
		// prefixes, zeroed addresses (kptr_restrict), other kernel lines.
		file: "dmesg.txt", objects: 4,
		groups: []Group{
			{Title: "memory leak in demo_session_new", Count: 3, Bytes: 288, Comms: []string{"demo-daemon"},
				Frames: []string{"demo_session_new [demo_net]", "demo_accept [demo_net]", "__sys_accept4_file",
					"__sys_accept4", "__x64_sys_accept4", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"}},
			{Title: "memory leak in demo_session_grow", Count: 1, Bytes: 2048, Comms: []string{"demo-daemon"},
				Frames: []string{"demo_session_grow [demo_net]", "demo_recv [demo_net]", "sock_recvmsg",
					"__sys_recvfrom", "__x64_sys_recvfrom", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"}},
		},
	},
	{
		// Two reads of the file captured together: every object once.
		file: "repeated-reads.txt", objects: 3, duplicates: 2,
	},
}

func init() {
	// The repeated reads are the v6.12 report read twice.
	fixtures[len(fixtures)-1].groups = fixtures[0].groups
}

func TestFixtureGroups(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.file, func(t *testing.T) {
			rep := GroupObjects(parseFile(t, fx.file), 0)
			if rep.Objects != fx.objects || rep.Duplicates != fx.duplicates {
				t.Errorf("objects %d duplicates %d, want %d and %d", rep.Objects, rep.Duplicates, fx.objects, fx.duplicates)
			}
			var bytes uint64
			for _, g := range fx.groups {
				bytes += g.Bytes
			}
			if rep.Bytes != bytes {
				t.Errorf("bytes %d, want %d", rep.Bytes, bytes)
			}
			if !reflect.DeepEqual(rep.Groups, fx.groups) {
				t.Errorf("groups:\n got %+v\nwant %+v", rep.Groups, fx.groups)
			}
		})
	}
}

func TestFixtureGolden(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.file, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteText(&b, GroupObjects(parseFile(t, fx.file), 0), 0); err != nil {
				t.Fatal(err)
			}
			testutil.Golden(t, strings.TrimSuffix(fx.file, ".txt")+".golden", b.Bytes())
		})
	}
}

func TestParsedFields(t *testing.T) {
	objs := parseFile(t, "v6.12-noaddr.txt")
	o := objs[0]
	if o.Address != 0xffff888103a8c000 || o.Size != 64 || o.Comm != "modprobe" || o.Pid != 412 ||
		o.Jiffies != 4294901234 || o.Age != -1 || o.CRC != "5e1a2b3c" || o.Kind != "" || o.Line != 1 {
		t.Errorf("header fields: %+v", o)
	}
	if len(o.Frames) != 16 {
		t.Fatalf("%d frames, want 16", len(o.Frames))
	}
	want := Frame{Function: "demo_probe", Offset: 0x94, Length: 0x1f0, Module: "demo_drv"}
	if o.Frames[2] != want {
		t.Errorf("frame 2: %+v, want %+v", o.Frames[2], want)
	}

	old := parseFile(t, "v5.10-age.txt")[0]
	if old.Age != 862.104 || old.CRC != "" {
		t.Errorf("age %v crc %q", old.Age, old.CRC)
	}
	if f := old.Frames[1]; !f.HasAddress || f.Address != 0xe3f1a2b4 || f.Function != "demo_get_config.constprop.0" {
		t.Errorf("hashed frame: %+v", f)
	}

	real := parseFile(t, "v4.9-realaddr.txt")
	if n := len(real[0].Frames); n != 8 {
		t.Errorf("%d frames, want 8: the terminator is not a frame", n)
	}
	if f := real[1].Frames[3]; f.Function != "" || f.Address != 0xffffffffa03c1f20 {
		t.Errorf("unnamed frame: %+v", f)
	}

	pp := parseFile(t, "phys-percpu.txt")
	if pp[0].Kind != "percpu" || pp[0].Address != 0x3c6048a0e3a8 || pp[2].Kind != "phys" || pp[2].Size != 4096 {
		t.Errorf("kinds: %+v / %+v", pp[0], pp[2])
	}
	if pp[3].Comm != "softirq" || pp[3].Pid != 0 {
		t.Errorf("softirq object: %+v", pp[3])
	}

	syz := parseFile(t, "syzbot.txt")[0]
	if f := syz.Frames[0]; f.Function != "kmemleak_alloc_recursive" || !f.Inline || f.File != "include/linux/kmemleak.h" || f.FileLine != 42 {
		t.Errorf("symbolized inline frame: %+v", f)
	}
	if f := syz.Frames[3]; f.Function != "__kmem_cache_alloc_node" || f.Inline || f.Offset != 0x2bb || f.FileLine != 3517 {
		t.Errorf("symbolized frame: %+v", f)
	}

	dm := parseFile(t, "dmesg.txt")
	if len(dm) != 4 || dm[0].Line != 6 || dm[0].Frames[0].Address != 0 || !dm[0].Frames[0].HasAddress {
		t.Errorf("dmesg: %d objects, first %+v", len(dm), dm[0])
	}
	for i, o := range dm {
		if len(o.Frames) != 8 {
			t.Errorf("dmesg object %d: %d frames, want 8 (other kernel lines must end an object)", i, len(o.Frames))
		}
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"demo_probe":                  "demo_probe",
		"demo_probe.isra.0":           "demo_probe",
		"demo_get_config.constprop.3": "demo_get_config",
		"getname_flags.part.0":        "getname_flags",
		"sd_revalidate_disk.cold":     "sd_revalidate_disk",
		"foo.constprop.0.isra.0":      "foo",
		"bar.llvm.1234567890":         "bar",
		"__kmalloc_cache_noprof":      "__kmalloc_cache",
		"kmemdup_noprof.cold":         "kmemdup",
	} {
		if got := NormalizeFunction(in); got != want {
			t.Errorf("NormalizeFunction(%q) = %q, want %q", in, got, want)
		}
	}
	for fn, want := range map[string]bool{
		"kmalloc_trace": true, "__kmem_cache_alloc_node": true, "kmemleak_alloc": true, "kstrdup": true,
		"kmemdup": true, "kasprintf": true, "pcpu_alloc": true, "slab_post_alloc_hook": true,
		"demo_probe": false, "really_probe": false, "getname_flags": false,
	} {
		if IsAllocator(fn) != want {
			t.Errorf("IsAllocator(%q) = %v", fn, !want)
		}
	}
}

func TestSignatureDepthAndEdges(t *testing.T) {
	o := parseFile(t, "v6.12-noaddr.txt")[0]
	if sig := Signature(o, 3); !reflect.DeepEqual(sig, []string{"demo_probe [demo_drv]", "platform_probe", "really_probe"}) {
		t.Errorf("depth 3: %v", sig)
	}
	// With depth 6 the two probe objects part: their sixth frames differ.
	objs := parseFile(t, "v6.12-noaddr.txt")
	if rep := GroupObjects(objs, 6); len(rep.Groups) != 2 || rep.Groups[0].Count != 2 {
		t.Errorf("depth 6: %+v", rep.Groups)
	}
	if rep := GroupObjects(objs, 5); len(rep.Groups) != 2 {
		t.Errorf("depth 5: %+v", rep.Groups)
	}

	// A stack of allocator frames only is named after its last frame;
	// an object without a backtrace still counts.
	in := "unreferenced object 0xffff888000001000 (size 8):\n" +
		"  comm \"a\", pid 1, jiffies 2\n  backtrace (crc 0):\n    kmalloc_trace+0x1/0x2\n    kmemdup+0x1/0x2\n" +
		"unreferenced object 0xffff888000002000 (size 16):\n  comm \"b\", pid 3, jiffies 4\n"
	objs, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	rep := GroupObjects(objs, 0)
	want := []Group{
		{Title: "memory leak with no backtrace", Count: 1, Bytes: 16, Comms: []string{"b"}, Frames: []string{}},
		{Title: "memory leak in kmemdup", Count: 1, Bytes: 8, Comms: []string{"a"}, Frames: []string{"kmemdup"}},
	}
	if !reflect.DeepEqual(rep.Groups, want) {
		t.Errorf("got %+v\nwant %+v", rep.Groups, want)
	}
}

func TestEmptyAndForeignInput(t *testing.T) {
	for _, in := range []string{"", "\n\n", "[    1.000000] Linux version 6.1.0\nhello\n"} {
		objs, err := Parse(strings.NewReader(in))
		if err != nil || len(objs) != 0 {
			t.Errorf("%q: %d objects, %v", in, len(objs), err)
		}
	}
	var b bytes.Buffer
	WriteText(&b, GroupObjects(nil, 0), 0)
	if b.String() != "kmemleak: no unreferenced objects reported\n" {
		t.Errorf("empty text: %q", b.String())
	}
	b.Reset()
	WriteJSON(&b, GroupObjects(nil, 0))
	if !strings.Contains(b.String(), `"groups": []`) {
		t.Errorf("empty JSON must have an empty groups list: %s", b.String())
	}
}

func TestMalformed(t *testing.T) {
	for file, want := range map[string]string{
		"bad-header.txt": `line 1: malformed object header "unreferenced object 0xffff88810zz8c000 (size 64):"`,
		"bad-comm.txt":   `line 3: malformed comm line "comm \"modprobe\", pid 412 jiffies 4294901234"`,
	} {
		f, err := os.Open(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		_, err = Parse(f)
		f.Close()
		var pe *ParseError
		if !errors.As(err, &pe) || err.Error() != want {
			t.Errorf("%s: %v, want %s", file, err, want)
		}
	}
	_, err := Parse(bytes.NewReader([]byte("unreferenced\x00object")))
	if err == nil || err.Error() != "line 1: binary data, not a kmemleak report" {
		t.Errorf("binary: %v", err)
	}
	_, err = Parse(strings.NewReader("unreferenced object 0xffff888000001000 (size 8):\n  backtrace:\n    [<zz>] foo+0x1/0x2\n"))
	if err == nil || err.Error() != `line 3: malformed backtrace frame "[<zz>] foo+0x1/0x2"` {
		t.Errorf("bad frame: %v", err)
	}
}

func TestJSONShape(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, GroupObjects(parseFile(t, "phys-percpu.txt"), 0)); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Objects int `json:"objects"`
		Groups  []struct {
			Title  string   `json:"title"`
			Count  int      `json:"count"`
			Bytes  uint64   `json:"bytes"`
			Comms  []string `json:"comms"`
			Frames []string `json:"frames"`
			Kinds  []string `json:"kinds"`
			Boot   bool     `json:"boot"`
		} `json:"groups"`
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Objects != 5 || len(doc.Groups) != 3 {
		t.Fatalf("%+v", doc)
	}
	g := doc.Groups[2]
	if g.Title != "memory leak in setup_arch" || g.Count != 1 || g.Bytes != 4096 || !g.Boot ||
		!reflect.DeepEqual(g.Kinds, []string{"phys"}) || !reflect.DeepEqual(g.Comms, []string{"swapper/0"}) ||
		!reflect.DeepEqual(g.Frames, []string{"setup_arch", "start_kernel"}) {
		t.Errorf("%+v", g)
	}
}

// fakeSystem records what live mode does to the machine.
type fakeSystem struct {
	euid      int
	file      bool // the kmemleak file exists
	debugfs   bool // debugfs is mounted
	hidden    bool // the kmemleak file appears once debugfs is mounted
	config    string
	writeErr  error
	readErr   error
	ops       []string
	report    string
	mountFail error
}

func (f *fakeSystem) sys() system {
	return system{
		euid: func() int { return f.euid },
		exists: func(p string) (bool, error) {
			f.ops = append(f.ops, "stat "+p)
			return f.file, nil
		},
		mounted: func(string) bool { return f.debugfs },
		mount: func(dir string) error {
			f.ops = append(f.ops, "mount "+dir)
			if f.mountFail != nil {
				return f.mountFail
			}
			f.debugfs = true
			f.file = f.hidden
			return nil
		},
		unmount: func(dir string) error {
			f.ops = append(f.ops, "umount "+dir)
			return nil
		},
		write: func(p, cmd string) error {
			f.ops = append(f.ops, "write "+cmd)
			return f.writeErr
		},
		read: func(p string) ([]byte, error) {
			f.ops = append(f.ops, "read "+p)
			return []byte(f.report), f.readErr
		},
		configure: func() string { return f.config },
	}
}

func TestLiveOrchestration(t *testing.T) {
	const path = "/sys/kernel/debug/kmemleak"
	f := &fakeSystem{euid: 0, file: true, debugfs: true, report: "x"}
	data, err := readLive(f.sys(), LiveOptions{Scan: true, Clear: true})
	wantOps := []string{"stat " + path, "write scan", "write scan", "read " + path, "write clear"}
	if err != nil || string(data) != "x" || !reflect.DeepEqual(f.ops, wantOps) {
		t.Errorf("scan+clear: %q %v ops %q", data, err, f.ops)
	}

	// debugfs not mounted: mount, read, unmount.
	f = &fakeSystem{euid: 0, hidden: true, report: "y"}
	data, err = readLive(f.sys(), LiveOptions{})
	wantOps = []string{"stat " + path, "mount /sys/kernel/debug", "stat " + path, "read " + path, "umount /sys/kernel/debug"}
	if err != nil || string(data) != "y" || !reflect.DeepEqual(f.ops, wantOps) {
		t.Errorf("mount: %q %v ops %q", data, err, f.ops)
	}

	cases := []struct {
		name string
		f    *fakeSystem
		opt  LiveOptions
		want error
	}{
		{"not root", &fakeSystem{euid: 1000, file: true}, LiveOptions{}, ErrNotRoot},
		{"not built in", &fakeSystem{euid: 0, config: "n"}, LiveOptions{}, ErrNotBuiltIn},
		{"no config", &fakeSystem{euid: 0, debugfs: true}, LiveOptions{}, ErrMissing},
		{"disabled scan", &fakeSystem{euid: 0, file: true, writeErr: syscall.EPERM}, LiveOptions{Scan: true}, ErrDisabled},
		{"disabled read", &fakeSystem{euid: 0, file: true, readErr: syscall.EBUSY}, LiveOptions{}, ErrDisabled},
		{"no rights", &fakeSystem{euid: 0, file: true, readErr: syscall.EACCES}, LiveOptions{}, ErrNotRoot},
	}
	for _, c := range cases {
		if _, err := readLive(c.f.sys(), c.opt); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// A mount we made is undone even when kmemleak is missing.
	f = &fakeSystem{euid: 0, config: "n"}
	if _, err := readLive(f.sys(), LiveOptions{}); !errors.Is(err, ErrNotBuiltIn) || f.ops[len(f.ops)-1] != "umount /sys/kernel/debug" {
		t.Errorf("%v, ops %q", err, f.ops)
	}
	f = &fakeSystem{euid: 0, mountFail: syscall.EPERM}
	if _, err := readLive(f.sys(), LiveOptions{}); err == nil || err.Error() != "mounting debugfs on /sys/kernel/debug: operation not permitted" {
		t.Errorf("mount failure: %v", err)
	}
}

func TestConfigValue(t *testing.T) {
	for in, want := range map[string]string{
		"CONFIG_A=y\nCONFIG_DEBUG_KMEMLEAK=y\n":             "y",
		"# CONFIG_DEBUG_KMEMLEAK is not set\n":              "n",
		"CONFIG_DEBUG_KMEMLEAK_DEFAULT_OFF=y\nCONFIG_B=m\n": "n",
	} {
		if got := configValue(strings.NewReader(in), "CONFIG_DEBUG_KMEMLEAK"); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

// TestLiveThisMachine reads this machine's kmemleak: a report when it is
// built in and enabled, the matching error otherwise.
func TestLiveThisMachine(t *testing.T) {
	if os.Geteuid() != 0 {
		if _, err := ReadLive(LiveOptions{}); !errors.Is(err, ErrNotRoot) {
			t.Fatalf("as a user: %v, want %v", err, ErrNotRoot)
		}
		t.Skip("not root: checked the refusal only; reading kmemleak needs root")
	}
	data, err := ReadLive(LiveOptions{})
	switch {
	case err == nil:
		if _, perr := Parse(bytes.NewReader(data)); perr != nil {
			t.Fatalf("this kernel's report does not parse: %v", perr)
		}
	case errors.Is(err, ErrNotBuiltIn), errors.Is(err, ErrMissing), errors.Is(err, ErrDisabled):
		t.Logf("kmemleak unavailable here, as reported: %v", err)
		if kernelConfig() == "y" && !errors.Is(err, ErrDisabled) {
			t.Errorf("the kernel config says kmemleak is built in, yet: %v", err)
		}
	default:
		t.Fatalf("unexpected error: %v", err)
	}
	if debugfsMounted(DefaultDebugfs) && !wasMounted {
		t.Errorf("debugfs left mounted on %s", DefaultDebugfs)
	}
}

var wasMounted = debugfsMounted(DefaultDebugfs)

package suppress

import (
	"strings"
	"testing"

	"libleak/analyzer/report"
)

// Stacks below are those valgrind 3.19 reported for one-time allocations
// of glibc 2.36 and libstdc++ 6.0.30 on Debian 12, with the allocator frame
// removed as in a report.

func stack(frames ...report.Frame) []report.Frame { return frames }

func in(mod string, fns ...string) []report.Frame {
	var out []report.Frame
	for _, f := range fns {
		out = append(out, fr(f, "", 0, mod))
	}
	return out
}

func cat(parts ...[]report.Frame) []report.Frame {
	var out []report.Frame
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var mainFrame = in(appMod, "main")

var dlopenPath = cat(
	in(ldso, "dl_open_worker_begin"), in(libc, "_dl_catch_exception"), in(ldso, "dl_open_worker"),
	in(libc, "_dl_catch_exception"), in(ldso, "_dl_open"), in(libc, "dlopen_doit", "_dl_catch_exception",
		"_dl_catch_error", "_dlerror_run", "dlopen_implementation", "dlopen@@GLIBC_2.34"), mainFrame)

func TestDefaultsSuppress(t *testing.T) {
	cases := []struct {
		what   string
		kind   string
		family string
		frames []report.Frame
		want   string
	}{
		{"eh pool, no debug info", report.KindReachable, "malloc",
			cat(in(stdcxx, "??"), in(ldso, "call_init", "call_init", "_dl_init", "??")),
			"libstdc++-emergency-eh-pool"},
		{"eh pool, inlined frames", report.KindUnfreed, "malloc",
			cat(in(stdcxx, "(anonymous namespace)::pool::pool()", "__static_initialization_and_destruction_0",
				"_GLOBAL__sub_I_eh_alloc.cc"), in(ldso, "call_init", "_dl_init")),
			"libstdc++-emergency-eh-pool-inlined-2"},
		{"dlopen link map", report.KindReachable, "malloc",
			cat(in(ldso, "malloc", "_dl_new_object", "_dl_map_object_from_fd", "_dl_map_object"), dlopenPath),
			"ld.so-dlopen-state"},
		{"dlopen find_object table", report.KindPossible, "malloc",
			cat(in(ldso, "malloc", "_dlfo_mappings_segment_allocate", "_dl_find_object_update_1",
				"_dl_find_object_update"), dlopenPath),
			"ld.so-dlopen-state"},
		{"dlopen without symbols", report.KindUnfreed, "malloc",
			cat(in(ldso, "??", "??", "??"), in(libc, "_dl_catch_exception"), in(ldso, "??"), in(libc, "dlopen"), mainFrame),
			"ld.so-dlopen-state"},
		{"thread dtv", report.KindPossible, "malloc",
			cat(in(ldso, "calloc", "allocate_dtv", "_dl_allocate_tls"), in(libc, "allocate_stack",
				"pthread_create@@GLIBC_2.34"), mainFrame),
			"ld.so-thread-dtv"},
		{"dynamic TLS block", report.KindReachable, "malloc",
			cat(in(ldso, "allocate_and_init", "tls_get_addr_tail", "__tls_get_addr"), in(libMod, "foo_counter"), mainFrame),
			"ld.so-dynamic-tls"},
		{"dlopen error string", report.KindReachable, "malloc",
			cat(in(ldso, "_dl_exception_create_format", "_dl_signal_error", "_dl_map_object"), dlopenPath),
			"ld.so-dlopen-state"},
		{"dlopen error string, stack cut short", report.KindUnfreed, "malloc",
			cat(in(ldso, "_dl_exception_create_format", "_dl_signal_error", "_dl_map_object")),
			"ld.so-dlerror-exception"},
		{"dlerror result", report.KindReachable, "malloc",
			cat(in(libc, "_dlerror_run", "dlopen_implementation", "dlopen@@GLIBC_2.34"), mainFrame),
			"glibc-dlerror-result"},
		{"dlerror result, no libc symbols", report.KindUnfreed, "malloc",
			cat(in(libc, "??", "dlopen"), mainFrame),
			"glibc-dlerror-result-dlopen"},
		{"dlerror message", report.KindReachable, "malloc",
			cat(in(libc, "__vasprintf_internal", "asprintf", "dlerror@@GLIBC_2.34"), mainFrame),
			"glibc-dlerror-message"},
		{"setlocale", report.KindReachable, "malloc",
			cat(in(libc, "_nl_intern_locale_data", "_nl_load_locale", "_nl_find_locale", "setlocale"), mainFrame),
			"glibc-setlocale"},
		{"locale alias table", report.KindPossible, "malloc",
			cat(in(libc, "read_alias_file", "_nl_expand_alias", "_nl_find_locale", "setlocale"), mainFrame),
			"glibc-setlocale"},
		{"newlocale's shared locale data", report.KindReachable, "malloc",
			cat(in(libc, "_nl_intern_locale_data", "_nl_load_locale", "_nl_find_locale", "__newlocale"), mainFrame),
			"glibc-locale-data"},
		{"gettext catalog", report.KindReachable, "malloc",
			cat(in(libc, "_nl_make_l10nflist", "_nl_find_domain", "__dcigettext"), mainFrame),
			"glibc-gettext"},
		{"textdomain", report.KindReachable, "malloc",
			cat(in(libc, "strdup", "__textdomain", "textdomain"), mainFrame),
			"glibc-textdomain"},
		{"tzset", report.KindReachable, "malloc",
			cat(in(libc, "__tzstring_len", "__tzfile_read", "tzset_internal", "tzset"), mainFrame),
			"glibc-tzset"},
		{"localtime", report.KindUnfreed, "malloc",
			cat(in(libc, "strdup", "tzset_internal", "__tz_convert"), mainFrame),
			"glibc-tzset"},
		{"nsswitch.conf", report.KindReachable, "malloc",
			cat(in(libc, "__nss_module_allocate", "nss_action_parse", "__nss_action_parse", "process_line",
				"nss_database_reload_1", "nss_database_reload", "nss_database_check_reload_and_get",
				"__nss_passwd_lookup2", "getpwnam_r@@GLIBC_2.2.5", "getpwnam"), mainFrame),
			"glibc-nss-lookup"},
		{"NSS global state", report.KindReachable, "malloc",
			cat(in(libc, "global_state_allocate", "__libc_allocate_once_slow", "allocate_once",
				"nss_database_state_get", "__nss_database_get", "__nss_passwd_lookup2", "getpwnam_r", "getpwnam"), mainFrame),
			"glibc-allocate-once"},
		{"getpwnam buffer", report.KindReachable, "malloc",
			cat(in(libc, "getpwnam"), mainFrame),
			"glibc-getpwnam-buffer"},
		{"atexit list", report.KindReachable, "malloc",
			cat(in(libc, "__new_exitfn", "__internal_atexit"), mainFrame),
			"glibc-atexit-list"},
		{"stdout buffer", report.KindReachable, "malloc",
			cat(in(libc, "_IO_file_doallocate", "_IO_doallocbuf", "_IO_file_overflow@@GLIBC_2.2.5",
				"_IO_new_file_xsputn", "__vfprintf_internal", "printf"), mainFrame),
			"glibc-stdio-buffer"},
	}
	for _, c := range cases {
		s := Defaults()
		l := &report.Leak{Kind: c.kind, Family: c.family, Bytes: 10, Blocks: 1, Frames: c.frames}
		if got := matchName(s, l); got != c.want {
			t.Errorf("%s: matched %q, want %q", c.what, got, c.want)
		}
	}
}

func TestDefaultsKeepRealLeaks(t *testing.T) {
	cases := []struct {
		what   string
		kind   string
		frames []report.Frame
	}{
		{"leak in main", report.KindDefinite, mainFrame},
		{"strdup by the program", report.KindDefinite, cat(in(libc, "strdup"), mainFrame)},
		{"unfreed strdup by the program", report.KindUnfreed, cat(in(libc, "strdup"), mainFrame)},
		{"allocation in a library constructor run by dlopen", report.KindReachable,
			cat(in(libMod, "foo_init"), in(ldso, "call_init", "_dl_init"), dlopenPath)},
		{"std::string in a library constructor", report.KindReachable,
			cat(in(stdcxx, "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >::_M_create(unsigned long&, unsigned long)"),
				in(libMod, "_GLOBAL__sub_I_names.cc"), in(ldso, "call_init", "_dl_init"))},
		{"definite leak below setlocale", report.KindDefinite,
			cat(in(libc, "_nl_intern_locale_data", "_nl_load_locale", "_nl_find_locale", "setlocale"), mainFrame)},
		{"the locale object of newlocale", report.KindUnfreed, cat(in(libc, "__newlocale"), mainFrame)},
		{"buffer of a leaked FILE", report.KindIndirect,
			cat(in(libc, "_IO_file_doallocate", "_IO_doallocbuf", "_IO_file_overflow", "fwrite"), mainFrame)},
		{"a leaked FILE", report.KindUnfreed, cat(in(libc, "__fopen_internal", "fopen64"), mainFrame)},
		{"getpwnam called further up", report.KindReachable, cat(in(appMod, "copy_user", "getpwnam_wrapper"), mainFrame)},
		{"getaddrinfo result", report.KindUnfreed, cat(in(libc, "gaih_inet", "getaddrinfo"), mainFrame)},
		{"unjoined thread's own allocation", report.KindDefinite,
			cat(in(appMod, "worker"), in(libc, "start_thread", "clone3"))},
	}
	for _, c := range cases {
		l := &report.Leak{Kind: c.kind, Family: "malloc", Bytes: 10, Blocks: 1, Frames: c.frames}
		if got := matchName(Defaults(), l); got != "-" {
			t.Errorf("%s: suppressed by %q", c.what, got)
		}
	}
}

func TestDefaultsInventory(t *testing.T) {
	s := Defaults()
	if s.Ignored() != 0 {
		t.Errorf("default.supp has %d non-leak blocks", s.Ignored())
	}
	seen := map[string]bool{}
	for _, u := range s.Used() {
		if seen[u.Name] {
			t.Errorf("duplicate default suppression name %q", u.Name)
		}
		seen[u.Name] = true
		if !strings.HasPrefix(u.Source, "<default>:") || u.Format != FormatValgrind || u.Sites != 0 {
			t.Errorf("default %q: %+v", u.Name, u)
		}
		if !strings.HasPrefix(u.Name, "glibc-") && !strings.HasPrefix(u.Name, "ld.so-") && !strings.HasPrefix(u.Name, "libstdc++-") {
			t.Errorf("default %q does not name its library", u.Name)
		}
	}
	for _, sp := range s.supps {
		if sp.kinds == nil || sp.kinds[report.KindDefinite] || sp.kinds[report.KindIndirect] {
			t.Errorf("default %q may suppress definite or indirect leaks", sp.name)
		}
	}
	// Counts belong to each Defaults() result.
	a, b := Defaults(), Defaults()
	a.Match(&report.Leak{Kind: report.KindReachable, Frames: cat(in(libc, "getpwnam"), mainFrame)})
	var an, bn int
	for i, u := range a.Used() {
		an += u.Sites
		bn += b.Used()[i].Sites
	}
	if an != 1 || bn != 0 {
		t.Errorf("usage counts: a %d, b %d; want 1, 0", an, bn)
	}
}

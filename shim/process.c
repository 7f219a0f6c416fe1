// Process life: settings, the trace file, the hand-shake with the Go
// writer, fork, exec, exit and crash handling.
//
// Go's threads do not survive fork, so a forked child switches to writing
// uncompressed frames itself (leak_c_writer). Exit paths flush
// synchronously, with a time limit, so the program is never held hostage.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "live.h"

HIDDEN struct settings cfg;
HIDDEN int leak_active;
HIDDEN pid_t leak_pid;
HIDDEN int leak_c_writer;
HIDDEN uintptr_t self_text_lo, self_text_hi;
HIDDEN uintptr_t ldso_text_lo, ldso_text_hi;
HIDDEN volatile int go_writer_alive;
HIDDEN int in_freeres;

HIDDEN void rec_start(void);
HIDDEN void modules_reset(void);

static int fd = -1;
static dev_t fd_dev;
static ino_t fd_ino;
static char path[PATH_MAX];
static int finished;
static int flags_header; // 1: forked child

// ---- messages -----------------------------------------------------------------

HIDDEN void logmsg(const char *fmt, ...) {
	char msg[1024];
	int n = snprintf(msg, sizeof msg, "libleak: ");
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof msg - 2)
		n = (int)sizeof msg - 2;
	msg[n++] = '\n';
	ssize_t w = write(2, msg, (size_t)n);
	(void)w;
}

// ---- futexes --------------------------------------------------------------------

static uint32_t req_seq;  // bumped to ask the writer for a cycle
static uint32_t done_seq; // the last request the writer completed
static uint32_t final_req;
static pthread_mutex_t write_mu = PTHREAD_MUTEX_INITIALIZER;

static void futex_wait(uint32_t *addr, uint32_t val, int ms) {
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, ms >= 0 ? &ts : NULL, NULL, 0);
}

static void futex_wake(uint32_t *addr) { syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0); }

HIDDEN void wake_writer_impl(void) {
	__atomic_fetch_add(&req_seq, 1, __ATOMIC_ACQ_REL);
	futex_wake(&req_seq);
}

HIDDEN uint64_t mono_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

// ---- the Go writer's side -------------------------------------------------------

// leak_writer_wait blocks the writer until a cycle is due (a request, or
// the flush interval passed) and returns the request it serves. It takes
// write_mu, which leak_writer_done releases: one frame is written at a
// time, in drain order, whoever writes it.
uint32_t leak_writer_wait(int timeout_ms) {
	go_writer_alive = 1;
	uint32_t seen = __atomic_load_n(&done_seq, __ATOMIC_ACQUIRE);
	uint32_t cur = __atomic_load_n(&req_seq, __ATOMIC_ACQUIRE);
	if (cur == seen)
		futex_wait(&req_seq, cur, timeout_ms);
	pthread_mutex_lock(&write_mu);
	return __atomic_load_n(&req_seq, __ATOMIC_ACQUIRE);
}

// leak_writer_area maps n bytes for the writer's own buffers: the
// tracer's, so never scanned, and in huge pages (live.c).
void *leak_writer_area(size_t n) { return live_map(n); }

int leak_writer_final(void) { return (int)__atomic_load_n(&final_req, __ATOMIC_ACQUIRE); }

void leak_writer_drain(int final, struct drained *d) {
	modules_scan_if_due();
	drain_collect(final, 1, d);
}

void leak_writer_done(uint32_t gen) {
	pthread_mutex_unlock(&write_mu);
	uint32_t d = __atomic_load_n(&done_seq, __ATOMIC_ACQUIRE);
	if ((int32_t)(gen - d) > 0)
		__atomic_store_n(&done_seq, gen, __ATOMIC_RELEASE);
	futex_wake(&done_seq);
}

int leak_writer_fd(void) { return fd; }

// ---- the trace file ---------------------------------------------------------------

HIDDEN uint32_t crc32_ieee(uint32_t crc, const void *data, size_t n) {
	static uint32_t table[256];
	if (!table[1]) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;
			for (int k = 0; k < 8; k++)
				c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
			table[i] = c;
		}
	}
	const uint8_t *p = data;
	crc = ~crc;
	while (n--)
		crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static int write_all(const struct iovec *iov, int n) {
	struct iovec v[4];
	memcpy(v, iov, (size_t)n * sizeof *v);
	int i = 0;
	while (i < n) {
		ssize_t w = writev(fd, v + i, n - i);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		while (i < n && (size_t)w >= v[i].iov_len) {
			w -= (ssize_t)v[i].iov_len;
			i++;
		}
		if (i < n) {
			v[i].iov_base = (char *)v[i].iov_base + w;
			v[i].iov_len -= (size_t)w;
		}
	}
	return 0;
}

// The program may close our descriptor (daemons close every fd) and reuse
// its number: never write into a file that is not the trace.
static int fd_ok(void) {
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0 || st.st_dev != fd_dev || st.st_ino != fd_ino) {
		if (fd >= 0)
			logmsg("trace descriptor of %s was closed by the program; tracing stops", path);
		fd = -1;
		leak_active = 0;
		return 0;
	}
	return 1;
}

// leak_write_frame writes one frame: a 16-byte header (stored length, raw
// length, encoding, CRC-32 of the stored bytes) and the payload. The Go
// writer computes the CRC (vectorized); C writes only small raw frames.
void leak_write_frame(int enc, const void *p, size_t n, size_t raw_len, uint32_t crc) {
	if (n == 0 || !fd_ok())
		return;
	uint8_t h[16] = {0};
	uint32_t sl = (uint32_t)n, rl = (uint32_t)raw_len;
	memcpy(h, &sl, 4);
	memcpy(h + 4, &rl, 4);
	h[8] = (uint8_t)enc;
	memcpy(h + 12, &crc, 4);
	struct iovec iov[2] = {{h, 16}, {(void *)p, n}};
	int e = errno;
	if (write_all(iov, 2) != 0)
		logmsg("cannot write %s: %s", path, strerror(errno));
	errno = e;
}

static void expand(char *dst, size_t cap, const char *tmpl, const char *exe, pid_t pid) {
	size_t n = 0;
	for (const char *s = tmpl; *s && n + 1 < cap; s++) {
		if (s[0] == '%' && (s[1] == 'p' || s[1] == 'e' || s[1] == '%')) {
			char tmp[64];
			const char *ins = tmp;
			if (s[1] == 'p')
				snprintf(tmp, sizeof tmp, "%d", (int)pid);
			else if (s[1] == 'e')
				ins = exe;
			else
				ins = "%";
			size_t l = strlen(ins);
			if (n + l >= cap)
				break;
			memcpy(dst + n, ins, l);
			n += l;
			s++;
		} else {
			dst[n++] = *s;
		}
	}
	dst[n] = 0;
}

static void exe_name(char *buf, size_t cap) {
	char tmp[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", tmp, sizeof tmp - 1);
	if (n <= 0) {
		snprintf(buf, cap, "unknown");
		return;
	}
	tmp[n] = 0;
	const char *b = strrchr(tmp, '/');
	snprintf(buf, cap, "%s", b ? b + 1 : tmp);
}

static void put_header(void) {
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	exe[n > 0 ? n : 0] = 0;
	proc_lock();
	uint8_t tag = REC_HEADER;
	proc_put(&tag, 1);
	proc_varint(TRACE_VERSION);
	proc_varint((uint64_t)getpid());
	proc_varint((uint64_t)getppid());
	proc_string(exe);
	// The command line, NUL-separated as the kernel keeps it.
	char cmd[8192];
	size_t len = 0;
	int cfd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (cfd >= 0) {
		ssize_t r;
		while (len < sizeof cmd && (r = read(cfd, cmd + len, sizeof cmd - len)) > 0)
			len += (size_t)r;
		close(cfd);
	}
	proc_varint(len);
	proc_put(cmd, len);
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	proc_varint((uint64_t)rt.tv_sec * 1000000000u + (uint64_t)rt.tv_nsec - ((uint64_t)barrier_time() << TIME_SHIFT));
	proc_string("monotonic");
	proc_varint(TIME_SHIFT);
	proc_string(unwind_name());
	proc_varint((uint64_t)cfg.depth);
	proc_varint((uint64_t)flags_header);
	Dl_info di;
	proc_string(dladdr((void *)put_header, &di) && di.dli_fname ? di.dli_fname : "");
	proc_unlock();
}

// trace_open creates this process's trace file: never overwriting, never
// following a symlink, readable by the owner only.
HIDDEN int trace_open(void) {
	char exe[256], base[PATH_MAX];
	exe_name(exe, sizeof exe);
	expand(base, sizeof base, cfg.out, exe, getpid());
	struct stat st;
	if (stat(base, &st) == 0 && S_ISDIR(st.st_mode)) {
		char dir[PATH_MAX];
		snprintf(dir, sizeof dir, "%s", base);
		char name[PATH_MAX];
		expand(name, sizeof name, "leak.%e.%p.zst", exe, getpid());
		snprintf(base, sizeof base, "%s/%s", dir, name);
	}
	size_t bl = strlen(base);
	int has_ext = bl > 4 && strcmp(base + bl - 4, ".zst") == 0;
	for (int i = 0; i < 1000; i++) {
		if (i == 0)
			snprintf(path, sizeof path, "%s", base);
		else if (has_ext)
			snprintf(path, sizeof path, "%.*s.%d.zst", (int)(bl - 4), base, i);
		else
			snprintf(path, sizeof path, "%s.%d", base, i);
		int f = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (f < 0 && errno == EEXIST)
			continue;
		if (f < 0) {
			logmsg("cannot create trace %s: %s; not tracing", path, strerror(errno));
			return -1;
		}
		// Out of the way of programs that expect small descriptor numbers.
		int hi = fcntl(f, F_DUPFD_CLOEXEC, 900);
		if (hi >= 0) {
			close(f);
			f = hi;
		}
		fd = f;
		fstat(fd, &st);
		fd_dev = st.st_dev;
		fd_ino = st.st_ino;
		uint8_t h[16] = {0};
		memcpy(h, TRACE_MAGIC, 8);
		h[8] = TRACE_VERSION;
		struct iovec iov = {h, 16};
		if (write_all(&iov, 1) != 0) {
			logmsg("cannot write %s: %s; not tracing", path, strerror(errno));
			int f = fd;
			fd = -1;
			close(f);
			return -1;
		}
		if (cfg.verbose)
			logmsg("tracing pid %d to %s", (int)getpid(), path);
		return 0;
	}
	logmsg("cannot create trace %s: too many files of that name; not tracing", base);
	return -1;
}

HIDDEN int trace_fd(void) { return __atomic_load_n(&fd, __ATOMIC_RELAXED); }

// trace_fd_move gives the trace another descriptor: the program is about
// to dup2 onto this one, free as far as it knows. No frame is being
// written meanwhile (write_mu).
HIDDEN void trace_fd_move(int wanted) {
	t_guard++;
	pthread_mutex_lock(&write_mu);
	if (fd == wanted) {
		int n = fcntl(fd, F_DUPFD_CLOEXEC, 900);
		if (n >= 0) {
			__atomic_store_n(&fd, n, __ATOMIC_RELAXED);
			syscall(SYS_close, wanted);
		}
	}
	pthread_mutex_unlock(&write_mu);
	t_guard--;
}

// ---- flushing ---------------------------------------------------------------------

static void c_write_cycle(int final, int timeout_ms) {
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += timeout_ms / 1000;
	dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (dl.tv_nsec >= 1000000000) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000;
	}
	if (pthread_mutex_timedlock(&write_mu, &dl) != 0)
		return;
	struct drained d;
	drain_collect(final, 0, &d);
	leak_write_frame(ENC_RAW, d.payload, d.payload_len, d.payload_len, crc32_ieee(0, d.payload, d.payload_len));
	pthread_mutex_unlock(&write_mu);
}

// flush_and_wait gets everything recorded so far into the file: through
// the Go writer when it runs, by writing raw frames here otherwise.
HIDDEN void flush_and_wait(int final, int timeout_ms) {
	t_guard++;
	int e = errno;
	if (final)
		__atomic_store_n(&final_req, 1, __ATOMIC_RELEASE);
	if (leak_c_writer || !go_writer_alive) {
		c_write_cycle(final, timeout_ms > 0 ? timeout_ms : 2000);
	} else {
		uint32_t gen = __atomic_add_fetch(&req_seq, 1, __ATOMIC_ACQ_REL);
		futex_wake(&req_seq);
		uint64_t deadline = mono_ms() + (uint64_t)timeout_ms;
		for (;;) {
			uint32_t d = __atomic_load_n(&done_seq, __ATOMIC_ACQUIRE);
			if ((int32_t)(d - gen) >= 0)
				break;
			uint64_t now = mono_ms();
			if (now >= deadline) {
				logmsg("the trace writer did not answer in %d ms; writing directly", timeout_ms);
				c_write_cycle(final, 500);
				break;
			}
			futex_wait(&done_seq, d, (int)(deadline - now));
		}
	}
	errno = e;
	t_guard--;
}

// finish_as ends the trace: the module map, the reachability scan when
// asked (the heap is as the program left it), the end record, the last
// flush. Once per process; finish_done says it is over.
static volatile int finish_done;
static volatile pid_t finish_tid; // the thread ending the trace
static volatile int deferred_sig;  // a signal that came in the middle (term_handler)

// t_crash is up while the program's own handler for a crash signal runs:
// an exit from there ends the trace unscanned, the heap possibly corrupt.
static TLS int t_crash;

static void finish_as(int reason, int status, int scan);

// set_default puts sig's default action back; die_of then raises sig
// again, pending while the handler that calls it runs, fatal after.
static void set_default(int sig) {
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	real.sigaction(sig, &dfl, NULL);
}

static void die_of(int sig) {
	set_default(sig);
	raise(sig);
}

HIDDEN void finish(int reason, int status) { finish_as(reason, status, reason != END_SIGNAL && !t_crash); }

static void finish_as(int reason, int status, int scan) {
	if (!leak_active || fd < 0)
		return;
	// A vfork child shares our memory but must not write our trace.
	if (getpid() != leak_pid)
		return;
	if (__atomic_exchange_n(&finished, 1, __ATOMIC_ACQ_REL))
		return;
	finish_tid = (pid_t)syscall(SYS_gettid);
	// As valgrind does before its leak check, let glibc and libstdc++
	// release what they keep for the whole run (stdio buffers, locale
	// data, cached thread stacks, the exception pool), recording the frees.
	// Only on exit(), whose next step flushes stdio anyway, and only when
	// no other thread of the program could still use what is released.
	// A thread that was just joined can still be finishing in the kernel:
	// give such threads a few milliseconds before deciding.
	int others = reason == END_EXIT && cfg.scan && cfg.freeres ? live_other_threads() : 1;
	for (int i = 0; i < 10 && others > 0 && reason == END_EXIT && cfg.scan && cfg.freeres; i++) {
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, NULL);
		others = live_other_threads();
	}
	if (reason == END_EXIT && cfg.scan && cfg.freeres && others == 0) {
		void (*fns[2])(void) = {dlsym(RTLD_DEFAULT, "_ZN9__gnu_cxx9__freeresEv"), dlsym(RTLD_DEFAULT, "__libc_freeres")};
		in_freeres = 1;
		for (int i = 0; i < 2; i++)
			if (fns[i])
				fns[i]();
		in_freeres = 0;
	}
	t_guard++;
	modules_scan();
	// Exit and _exit leave memory as the program left it: scan it. After
	// a crash the heap may be corrupt; reading it could fault.
	if (scan && cfg.scan)
		scan_run(1);
	leak_active = 0;
	proc_lock();
	uint8_t tag = REC_END;
	proc_put(&tag, 1);
	proc_varint(barrier_time());
	proc_varint((uint64_t)reason);
	proc_varint(((uint64_t)(int64_t)status << 1) ^ (uint64_t)((int64_t)status >> 63));
	proc_varint(drain_dropped_total());
	proc_unlock();
	rec_thread_handoff();
	t_guard--;
	flush_and_wait(1, 3000);
	finish_done = 1;
	if (deferred_sig)
		die_of(deferred_sig);
}

static void on_exit_handler(int status, void *arg) {
	(void)arg;
	EXIT_SCAN_HERE();
	finish(END_EXIT, status);
}

// ---- exec -----------------------------------------------------------------------------

HIDDEN void exec_prepare(const char *file) {
	if (!leak_active || fd < 0 || getpid() != leak_pid)
		return;
	t_guard++;
	proc_lock();
	uint8_t tag = REC_EXEC;
	proc_put(&tag, 1);
	proc_varint(barrier_time());
	proc_string(file ? file : "");
	proc_unlock();
	rec_thread_handoff();
	t_guard--;
	flush_and_wait(0, 3000);
}

HIDDEN void exec_failed(void) {
	if (!leak_active || fd < 0 || getpid() != leak_pid)
		return;
	t_guard++;
	proc_lock();
	uint8_t tag = REC_EXEC_FAILED;
	proc_put(&tag, 1);
	proc_varint(barrier_time());
	proc_unlock();
	t_guard--;
}

// ---- fork --------------------------------------------------------------------------------

static void atfork_prepare(void) {
	t_guard++;
	pthread_mutex_lock(&write_mu);
	rec_atfork_prepare();
	if (live_enabled)
		live_freeze();
}

static void atfork_parent(void) {
	if (live_enabled)
		live_thaw();
	rec_atfork_parent();
	pthread_mutex_unlock(&write_mu);
	t_guard--;
}

static void atfork_child(void) {
	pthread_mutex_init(&write_mu, NULL);
	rec_after_fork_child();
	live_after_fork();
	t_guard--;
	if (!leak_active || fd < 0)
		return;
	t_guard++;
	// The parent's file stays the parent's.
	int f = fd;
	fd = -1;
	close(f);
	leak_pid = getpid();
	leak_c_writer = 1;
	go_writer_alive = 0;
	finished = 0;
	finish_done = 0;
	finish_tid = 0;
	deferred_sig = 0;
	flags_header = 1;
	modules_reset();
	if (trace_open() == 0) {
		put_header();
		modules_scan();
	} else {
		leak_active = 0;
	}
	t_guard--;
}

// ---- crash signals ----------------------------------------------------------------------
// The tracer's handler runs first on SIGSEGV, SIGBUS, SIGILL, SIGFPE and
// SIGABRT. Left at the default, the signal ends the trace (flushed with a
// time limit, unscanned) and then the process; the program's own handler
// decides for itself (crash_handler).
//
// The Go runtime in this library sets its own actions, through our
// sigaction (its cgo part calls libc's), for SIGSEGV, SIGBUS, SIGFPE,
// SIGPIPE and SIGURG. Those are kept apart in go_act and never shown to
// the program, which reads back the actions it had and set: a program
// that ignores SIGPIPE only when its action is the default must still do
// so. The runtime's SIGURG action gets its preemption requests (routed
// signals, below); a crash is a crash on any thread, and goes as the
// program asked; SIGPIPE stays the program's: the runtime writes to no
// pipe, and our threads block it.

static const int crash_sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
static struct sigaction app_act[65];
static struct sigaction go_act[65];
static int go_act_set[65];
static int crash_installed;

static int is_crash_sig(int sig);

static int is_crash(int sig) {
	for (unsigned i = 0; i < sizeof crash_sigs / sizeof crash_sigs[0]; i++)
		if (crash_sigs[i] == sig)
			return 1;
	return 0;
}

// app_action gives the program's action for sig, for its handler's run
// now; a one-shot action (SA_RESETHAND) is the default from then on.
static struct sigaction app_action(int sig) {
	struct sigaction a = app_act[sig];
	if (a.sa_flags & SA_RESETHAND) {
		memset(&app_act[sig], 0, sizeof app_act[sig]);
		app_act[sig].sa_handler = SIG_DFL;
	}
	return a;
}

static void crash_handler(int sig, siginfo_t *info, void *uc) {
	struct sigaction a = app_action(sig);
	int own = (a.sa_flags & SA_SIGINFO) ? a.sa_sigaction != NULL : a.sa_handler != SIG_DFL && a.sa_handler != SIG_IGN;
	// A fault the program handles may be one it recovers from (a
	// collector's write barrier, a JIT's guard page): its handler decides,
	// and tracing goes on. One that exits comes back through exit or _exit;
	// one that puts the default back and lets the fault repeat, here.
	// abort() restores the default behind our back (glibc's own sigaction)
	// before it raises again: SIGABRT ends the trace first.
	int e = errno;
	if ((!own || sig == SIGABRT) && !t_guard && !t_tracer && !t_busy)
		finish(END_SIGNAL, sig);
	errno = e;
	if (own) {
		t_crash++;
		if (a.sa_flags & SA_SIGINFO)
			a.sa_sigaction(sig, info, uc);
		else
			a.sa_handler(sig);
		t_crash--;
		return;
	}
	if (a.sa_handler == SIG_IGN)
		return;
	// The default: a fault repeats when we return; a sent signal must be
	// sent again.
	set_default(sig);
	if (info->si_code <= 0 || sig == SIGABRT)
		raise(sig);
}

static void install_crash(int sig, const struct sigaction *like) {
	struct sigaction ours;
	memset(&ours, 0, sizeof ours);
	ours.sa_sigaction = crash_handler;
	ours.sa_flags = SA_SIGINFO | SA_RESTART;
	if (like) {
		ours.sa_flags |= like->sa_flags & (SA_ONSTACK | SA_NODEFER);
		ours.sa_mask = like->sa_mask;
	}
	real.sigaction(sig, &ours, NULL);
}

// ---- signals that end the process ------------------------------------------------------
// A signal whose default action ends the process, left at that default
// (SIGTERM from a CI timeout, SIGINT, SIGHUP, SIGPIPE from a closed pipe),
// would cut the trace short: unscanned, and the last flush interval lost.
// The tracer's handler stands in for the default: it ends the trace as
// exit does, scan included (unlike after a crash, the heap is intact), as
// valgrind checks for leaks when a signal ends the process; then it puts
// the default back and raises the signal again, and the process dies of
// it as it would have. An ignored signal, or one with the program's own
// handler, goes to the kernel as the program set it.

static const int term_sigs[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGPIPE, SIGALRM,   SIGTERM, SIGUSR1,
				SIGUSR2, SIGXCPU, SIGXFSZ, SIGVTALRM, SIGIO,   SIGPWR,  SIGSTKFLT};

static int is_term(int sig) {
	if (sig == cfg.scan_signal)
		return 0;
	for (unsigned i = 0; i < sizeof term_sigs / sizeof term_sigs[0]; i++)
		if (term_sigs[i] == sig)
			return 1;
	return 0;
}

static void term_handler(int sig, siginfo_t *info, void *uc) {
	(void)info;
	(void)uc;
	int e = errno;
	if (!t_guard && !t_tracer && !t_busy)
		finish_as(END_SIGNAL, sig, 1);
	// Another thread may be ending the trace (exit, or a signal of its
	// own): dying now would cut its flush short. When the signal
	// interrupted this thread's own ending of the trace, that ending
	// raises it again when done.
	int self = finish_tid == (pid_t)syscall(SYS_gettid);
	if (self && !finish_done) {
		deferred_sig = sig; // it ends the process once the trace is ended
		errno = e;
		return;
	}
	for (int i = 0; i < 3500 && finished && !finish_done; i++) {
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, NULL);
	}
	errno = e;
	die_of(sig);
}

static void install_term(int sig) {
	struct sigaction a = app_act[sig];
	if ((a.sa_flags & SA_SIGINFO) || a.sa_handler != SIG_DFL) {
		real.sigaction(sig, &a, NULL);
		return;
	}
	struct sigaction ours;
	memset(&ours, 0, sizeof ours);
	ours.sa_sigaction = term_handler;
	ours.sa_flags = SA_SIGINFO | SA_RESTART;
	for (unsigned i = 0; i < sizeof term_sigs / sizeof term_sigs[0]; i++)
		sigaddset(&ours.sa_mask, term_sigs[i]);
	real.sigaction(sig, &ours, NULL);
}

// ---- routed signals ---------------------------------------------------------------------
// The Go runtime unblocks SIGCHLD and SIGPROF on every thread it starts
// (they are "never blocked" in its signal table). When the program's own
// threads all block one of them (block SIGCHLD, check the children, then
// sigsuspend: timeout, shells, daemons), the kernel hands it to a Go
// thread instead of leaving it pending: the program's handler runs there,
// and the sigsuspend or sigwait waiting for it never returns. So the
// handler the kernel calls for these two is ours. On one of our threads it
// sends the signal on to the program's main thread (a live one, if main
// has exited), where it stays pending while blocked, as it would have for
// the process; on a program thread it does what the program asked. A
// signal sent on keeps the original's fields but says SI_QUEUE (send_on),
// so the original is kept too and handed whole to the program's handler.
//
// SIGURG is the Go runtime's preemption request, which it sends to its own
// threads with tgkill. A program's SIGURG handler (for out-of-band socket
// data) would replace the runtime's and be called for those requests,
// which the program never made; and the program would see the runtime's
// handler as its own. So the runtime's action is kept apart (go_act): a
// SIGURG one of our threads sent itself goes to it, any other on our
// threads is sent on, and on the program's threads the program's action
// runs, as for the others.

static const int routed_sigs[] = {SIGCHLD, SIGPROF, SIGURG};
static siginfo_t routed_info[65];
static int routed_info_set[65];

static int is_routed(int sig) {
	for (unsigned i = 0; i < sizeof routed_sigs / sizeof routed_sigs[0]; i++)
		if (routed_sigs[i] == sig)
			return 1;
	return 0;
}

static void send_on(int sig, siginfo_t *info) {
	pid_t pid = getpid(), to = pid;
	if (!thread_runs(pid)) {
		to = 0;
		for (int i = 0; i < nthreads_known && !to; i++)
			if (thread_runs(threads_known[i].tid))
				to = threads_known[i].tid;
	}
	if (!to)
		return; // no thread of the program left to take it
	routed_info[sig] = *info;
	__atomic_store_n(&routed_info_set[sig], 1, __ATOMIC_RELEASE);
	// The kernel takes any siginfo from a process for its own threads, but
	// for the codes only it and kill(2) give: the copy keeps the fields (a
	// child's pid, status and times) for sigwaitinfo and signalfd, and
	// says SI_QUEUE.
	siginfo_t fwd = *info;
	if (fwd.si_code >= 0 || fwd.si_code == SI_TKILL)
		fwd.si_code = SI_QUEUE;
	if (syscall(SYS_rt_tgsigqueueinfo, pid, to, sig, &fwd) != 0)
		syscall(SYS_tgkill, pid, to, sig);
}

// go_preempt runs the Go runtime's SIGURG handler, with every signal
// blocked as the runtime's own action asks.
static void go_preempt(int sig, siginfo_t *info, void *uc) {
	if (!go_act_set[sig] || !(go_act[sig].sa_flags & SA_SIGINFO) || !go_act[sig].sa_sigaction)
		return;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, NULL); // sigreturn restores the mask
	go_act[sig].sa_sigaction(sig, info, uc);
}

static void routed_handler(int sig, siginfo_t *info, void *uc) {
	if (t_tracer) {
		int e = errno;
		if (sig == SIGURG && info && info->si_code == SI_TKILL && info->si_pid == getpid())
			go_preempt(sig, info, uc);
		else
			send_on(sig, info);
		errno = e;
		return;
	}
	if (info && (info->si_code == SI_QUEUE || info->si_code == SI_TKILL) &&
	    __atomic_load_n(&routed_info_set[sig], __ATOMIC_ACQUIRE) &&
	    info->si_pid == (info->si_code == SI_TKILL ? getpid() : routed_info[sig].si_pid) &&
	    __atomic_exchange_n(&routed_info_set[sig], 0, __ATOMIC_ACQ_REL))
		info = &routed_info[sig];
	struct sigaction a = app_action(sig);
	if ((a.sa_flags & SA_SIGINFO) && a.sa_sigaction) {
		a.sa_sigaction(sig, info, uc);
	} else if (a.sa_handler == SIG_DFL) {
		if (sig == SIGPROF) // its default ends the process
			die_of(sig);
	} else if (a.sa_handler != SIG_IGN) {
		a.sa_handler(sig);
	}
}

// install_routed puts the program's action for a routed signal in place:
// ignoring stays the kernel's (SIGCHLD's then reaps children), anything
// else runs through routed_handler with the program's flags and mask.
static void install_routed(int sig) {
	struct sigaction a = app_act[sig];
	if (!(a.sa_flags & SA_SIGINFO) && a.sa_handler == SIG_IGN) {
		real.sigaction(sig, &a, NULL);
		return;
	}
	struct sigaction ours = a;
	ours.sa_sigaction = routed_handler;
	ours.sa_flags = (a.sa_flags | SA_SIGINFO) & ~SA_RESETHAND;
	if (sig == SIGURG) {
		// The runtime runs its handlers on its signal stacks, and restarts
		// what the program has no say in.
		ours.sa_flags |= SA_ONSTACK;
		if (a.sa_handler == SIG_DFL && !(a.sa_flags & SA_SIGINFO))
			ours.sa_flags |= SA_RESTART;
	}
	real.sigaction(sig, &ours, NULL);
}

// app_sigaction takes the program's sigaction for a crash or routed
// signal: it keeps the program's action and installs ours in its place.
HIDDEN int app_sigaction(int sig, const struct sigaction *act, struct sigaction *old, int *handled, int from_tracer) {
	// Once our handlers are in place they stay, tracing or not (a trace
	// closed behind our back): so does keeping the program's actions.
	if (!crash_installed || sig <= 0 || sig > 64 ||
	    !(is_crash(sig) || is_routed(sig) || is_term(sig))) {
		*handled = 0;
		return 0;
	}
	*handled = 1;
	if (from_tracer) { // the Go runtime's
		if (old && go_act_set[sig])
			*old = go_act[sig];
		else if (old)
			*old = app_act[sig];
		if (act) {
			go_act[sig] = *act;
			go_act_set[sig] = 1;
		}
		return 0;
	}
	if (old)
		*old = app_act[sig];
	if (act) {
		app_act[sig] = *act;
		if (is_routed(sig))
			install_routed(sig);
		else if (is_term(sig))
			install_term(sig);
		else if (act->sa_handler == SIG_DFL && !(act->sa_flags & SA_SIGINFO))
			install_crash(sig, NULL);
		else
			install_crash(sig, act);
	}
	return 0;
}

HIDDEN void process_crash_handlers(void) {
	for (unsigned i = 0; i < sizeof crash_sigs / sizeof crash_sigs[0]; i++) {
		int sig = crash_sigs[i];
		struct sigaction cur;
		if (real.sigaction(sig, NULL, &cur) != 0)
			continue;
		// Only take over signals left at their default; a handler set
		// before us (an earlier preload) keeps running as it was.
		if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler != SIG_DFL)
			continue;
		if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction)
			continue;
		app_act[sig] = cur;
		install_crash(sig, NULL);
	}
	for (unsigned i = 0; i < sizeof routed_sigs / sizeof routed_sigs[0]; i++) {
		int sig = routed_sigs[i];
		if (real.sigaction(sig, NULL, &app_act[sig]) == 0)
			install_routed(sig);
	}
	for (unsigned i = 0; i < sizeof term_sigs / sizeof term_sigs[0]; i++) {
		int sig = term_sigs[i];
		if (is_term(sig) && real.sigaction(sig, NULL, &app_act[sig]) == 0)
			install_term(sig);
	}
	crash_installed = 1;
}

static int is_crash_sig(int sig) { return is_crash(sig); }

// ---- scans while the program runs ---------------------------------------------------------
// A signal (LEAK_SCAN_SIGNAL) or a period (LEAK_SCAN_INTERVAL) asks for a
// scan; the writer thread runs it, so the handler only sets a flag. The
// program's allocations wait while the table is frozen.

static volatile int scan_requested;
static uint64_t last_scan_ms;

static void scan_signal_handler(int sig) {
	(void)sig;
	int e = errno;
	scan_requested = 1;
	wake_writer_impl();
	errno = e;
}

// leak_scan_due is called by the writer each cycle; it runs a scan when
// one was asked for and returns 1 if it did.
int leak_scan_due(void) {
	if (!leak_active || !cfg.scan || leak_c_writer)
		return 0;
	uint64_t now = mono_ms();
	int due = scan_requested || (cfg.scan_interval_ms && now - last_scan_ms >= cfg.scan_interval_ms);
	if (!due)
		return 0;
	scan_requested = 0;
	last_scan_ms = now;
	exit_scan_sp = 0;
	scan_run(0);
	return 1;
}

// ---- start --------------------------------------------------------------------------------

static void text_range(struct dl_phdr_info *info, uintptr_t *plo, uintptr_t *phi) {
	uintptr_t lo = UINTPTR_MAX, hi = 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
			uintptr_t s = info->dlpi_addr + ph->p_vaddr, e = s + ph->p_memsz;
			if (s < lo)
				lo = s;
			if (e > hi)
				hi = e;
		}
	}
	*plo = lo;
	*phi = hi;
}

struct text_query {
	uintptr_t base, lo, hi;
};

static int find_text(struct dl_phdr_info *info, size_t size, void *data) {
	(void)size;
	struct text_query *q = data;
	if (info->dlpi_addr != q->base)
		return 0;
	text_range(info, &q->lo, &q->hi);
	return 1;
}

// text_of finds the executable segments of the object holding addr.
HIDDEN void text_of(const void *addr, uintptr_t *lo, uintptr_t *hi) {
	Dl_info di;
	struct text_query q = {0, 0, 0};
	if (dladdr(addr, &di) && di.dli_fbase) {
		q.base = (uintptr_t)di.dli_fbase;
		dl_iterate_phdr(find_text, &q);
	}
	*lo = q.lo;
	*hi = q.hi;
}

static int find_ldso(struct dl_phdr_info *info, size_t size, void *data) {
	(void)size;
	(void)data;
	if (info->dlpi_name && (strstr(info->dlpi_name, "/ld-linux") || strstr(info->dlpi_name, "/ld.so"))) {
		text_range(info, &ldso_text_lo, &ldso_text_hi);
		return 1;
	}
	return 0;
}

static void read_settings(void) {
	const char *v;
	cfg.off = (v = getenv("LEAK_OFF")) && *v && strcmp(v, "0") != 0;
	cfg.verbose = (v = getenv("LEAK_VERBOSE")) && *v && strcmp(v, "0") != 0;
	cfg.depth = 32;
	if ((v = getenv("LEAK_DEPTH")) && *v) {
		char *end;
		long d = strtol(v, &end, 10);
		if (*end || d < 1 || d > 128)
			logmsg("LEAK_DEPTH=%s is not a number from 1 to 128; using 32", v);
		else
			cfg.depth = (int)d;
	}
	if ((v = getenv("LEAK_UNWIND")) && *v) {
		if (strcmp(v, "fp") == 0)
			cfg.unwind_fp = 1;
		else if (strcmp(v, "cfi") != 0 && strcmp(v, "libunwind") != 0)
			logmsg("LEAK_UNWIND=%s is not cfi, libunwind or fp; using cfi", v);
	}
	cfg.scan = !((v = getenv("LEAK_SCAN")) && strcmp(v, "0") == 0);
	cfg.freeres = !((v = getenv("LEAK_FREERES")) && strcmp(v, "0") == 0);
	if ((v = getenv("LEAK_SCAN_SIGNAL")) && *v) {
		char *end;
		long n = strtol(v, &end, 10);
		if (strcmp(v, "USR1") == 0 || strcmp(v, "SIGUSR1") == 0)
			n = SIGUSR1, end = "";
		else if (strcmp(v, "USR2") == 0 || strcmp(v, "SIGUSR2") == 0)
			n = SIGUSR2, end = "";
		if (*end || n < 1 || n > 64 || n == SIGKILL || n == SIGSTOP || is_crash_sig((int)n))
			logmsg("LEAK_SCAN_SIGNAL=%s is not a signal that can be used (USR1, USR2 or a number)", v);
		else
			cfg.scan_signal = (int)n;
	}
	if ((v = getenv("LEAK_SCAN_INTERVAL")) && *v) {
		char *end;
		double d = strtod(v, &end);
		if (*end || d <= 0)
			logmsg("LEAK_SCAN_INTERVAL=%s is not a number of seconds", v);
		else
			cfg.scan_interval_ms = (uint64_t)(d * 1000);
	}
	if ((v = getenv("LEAK_CONTENT")) && *v) {
		char *end;
		long n = strtol(v, &end, 10);
		if (*end || n < 0 || n > 4096)
			logmsg("LEAK_CONTENT=%s is not a number of bytes from 0 to 4096; recording no content", v);
		else
			cfg.content = (int)n;
	}
	v = getenv("LEAK_OUT");
	snprintf(cfg.out, sizeof cfg.out, "%s", v && *v ? v : "leak.%e.%p.zst");
}

HIDDEN void process_init(void) {
	t_guard++;
	read_settings();
	if (cfg.off || getauxval(AT_SECURE)) {
		t_guard--;
		return;
	}
	text_of((void *)process_init, &self_text_lo, &self_text_hi);
	dl_iterate_phdr(find_ldso, NULL);
	rec_start();
	leak_pid = getpid();
	live_enabled = cfg.scan;
	scan_content_bytes = cfg.content;
	unwind_init();
	if (trace_open() != 0) {
		t_guard--;
		return;
	}
	put_header();
	modules_scan();
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
	on_exit(on_exit_handler, NULL);
	process_crash_handlers();
	if (cfg.scan && cfg.scan_signal) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = scan_signal_handler;
		sa.sa_flags = SA_RESTART;
		real.sigaction(cfg.scan_signal, &sa, NULL);
	}
	last_scan_ms = mono_ms();
	leak_active = 1;
	clock_ticker_start();
	t_guard--;
}

// Objects glibc loads by itself (NSS modules, iconv) bypass our dlopen:
// the writer rescans the module map once a second.
static uint64_t last_modules_ms;
HIDDEN void modules_scan_if_due(void) {
	uint64_t now = mono_ms();
	if (now - last_modules_ms >= 1000 && leak_active) {
		last_modules_ms = now;
		modules_scan();
	}
}

/* exit_paths: leaks a known set of blocks, then leaves the process by the
 * path named in argv[1]:
 *
 *   return          return 0 from main
 *   exit_thread     exit(2) called from a second thread while main waits
 *   _exit           _exit(4)
 *   _Exit           _Exit(5)
 *   abort           abort(), with the program's own SIGABRT handler, which
 *                   prints "marker=sigabrt" and returns: the process then
 *                   dies of SIGABRT
 *   segv            NULL store, with the program's own SIGSEGV handler,
 *                   which prints "marker=sigsegv" and calls _exit(3)
 *   segv_nohandler  NULL store without a handler: dies of SIGSEGV
 *   pthread_exit    main calls pthread_exit while a second thread sleeps
 *                   20 ms, prints "marker=last_thread" and returns: the
 *                   process ends with status 0 when that thread does
 *   pthread_exit_alone
 *                   main calls pthread_exit with no other thread: the
 *                   process ends with status 0
 *   segv_recover    a store into a read-only page, with the program's own
 *                   SIGSEGV handler, which makes the page writable and
 *                   returns, as a collector's write barrier does: the
 *                   store is retried, and main returns 0
 *   sigterm         kill(getpid(), SIGTERM), left at its default: dies of it
 *   sigpipe         a write into a pipe nobody reads: dies of SIGPIPE
 *   sigint_thread   a second thread sends the process SIGINT while main
 *                   waits in pause(): dies of SIGINT
 *
 * Before leaving it prints, and flushes:
 *   path=P leaked_blocks=3 leaked_bytes=666 expect=exit:N|signal:NAME
 * The leaked blocks are 111, 222 and 333 bytes, and no pointer to them
 * remains; all else is freed.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The asm makes the compiler treat the block as used, so no optimization
 * level drops the allocation; the pointer itself is then forgotten. */
static void use(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

__attribute__((noinline)) static void make_leaks(void)
{
	use(malloc(111));
	use(calloc(1, 222));
	void *p = malloc(20);
	use(realloc(p, 333));
	void *tmp = malloc(4096);
	use(tmp);
	free(tmp);
}

static void say(const char *s)
{
	/* Async-signal-safe: the handlers use it too. */
	ssize_t r = write(STDOUT_FILENO, s, strlen(s));
	(void)r;
}

static void on_abrt(int sig)
{
	(void)sig;
	say("marker=sigabrt\n");
	/* Returning lets abort() restore the default action and raise again. */
}

static void on_segv(int sig)
{
	(void)sig;
	say("marker=sigsegv\n");
	_exit(3);
}

static char *barrier_page;

static void on_segv_recover(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	mprotect(barrier_page, 4096, PROT_READ | PROT_WRITE);
}

static void *interrupt_main(void *arg)
{
	(void)arg;
	usleep(20000);
	kill(getpid(), SIGINT);
	return NULL;
}

static void *exit_from_thread(void *arg)
{
	(void)arg;
	exit(2);
}

static void *last_thread(void *arg)
{
	(void)arg;
	usleep(20000);
	say("marker=last_thread\n");
	return NULL;
}

__attribute__((noinline)) static void crash(void)
{
	volatile int *p = NULL;
	*p = 1;
}

static const struct {
	const char *path, *expect;
} paths[] = {
	{"return", "exit:0"},      {"exit_thread", "exit:2"},    {"_exit", "exit:4"},
	{"_Exit", "exit:5"},       {"abort", "signal:SIGABRT"}, {"segv", "exit:3"},
	{"segv_nohandler", "signal:SIGSEGV"}, {"pthread_exit", "exit:0"}, {"pthread_exit_alone", "exit:0"},
	{"segv_recover", "exit:0"}, {"sigterm", "signal:SIGTERM"}, {"sigpipe", "signal:SIGPIPE"},
	{"sigint_thread", "signal:SIGINT"},
};

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "return";
	const char *expect = NULL;
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (strcmp(path, paths[i].path) == 0)
			expect = paths[i].expect;
	if (expect == NULL) {
		fprintf(stderr, "unknown exit path %s\n", path);
		return 64;
	}
	make_leaks();
	printf("path=%s leaked_blocks=3 leaked_bytes=666 expect=%s\n", path, expect);
	fflush(stdout);

	if (strcmp(path, "return") == 0) {
		return 0;
	} else if (strcmp(path, "exit_thread") == 0) {
		pthread_t t;
		pthread_create(&t, NULL, exit_from_thread, NULL);
		pthread_join(t, NULL); /* never returns: the thread exits the process */
		say("not reached\n");
		return 1;
	} else if (strcmp(path, "pthread_exit") == 0) {
		pthread_t t;
		pthread_create(&t, NULL, last_thread, NULL);
		pthread_exit(NULL);
	} else if (strcmp(path, "pthread_exit_alone") == 0) {
		pthread_exit(NULL);
	} else if (strcmp(path, "_exit") == 0) {
		_exit(4);
	} else if (strcmp(path, "_Exit") == 0) {
		_Exit(5);
	} else if (strcmp(path, "abort") == 0) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_abrt;
		sigaction(SIGABRT, &sa, NULL);
		abort();
	} else if (strcmp(path, "segv_recover") == 0) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = on_segv_recover;
		sa.sa_flags = SA_SIGINFO;
		sigaction(SIGSEGV, &sa, NULL);
		barrier_page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		barrier_page[0] = 1;
		munmap(barrier_page, 4096);
		return 0;
	} else if (strcmp(path, "sigterm") == 0) {
		kill(getpid(), SIGTERM);
		pause();
	} else if (strcmp(path, "sigpipe") == 0) {
		int p[2];
		if (pipe(p) == 0) {
			close(p[0]);
			ssize_t r = write(p[1], "x", 1);
			(void)r;
		}
	} else if (strcmp(path, "sigint_thread") == 0) {
		pthread_t t;
		pthread_create(&t, NULL, interrupt_main, NULL);
		pause();
	} else if (strcmp(path, "segv") == 0) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_segv;
		sigaction(SIGSEGV, &sa, NULL);
		crash();
	} else {
		crash();
	}
	say("not reached\n");
	return 1;
}

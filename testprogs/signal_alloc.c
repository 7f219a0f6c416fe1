/* signal_alloc: a signal handler that allocates, fired every 50 µs while
 * the program allocates and frees in a loop. malloc is not
 * async-signal-safe, but programs do this. Here it is safe natively: the
 * handler's block size has a per-thread cache bin of its own, filled
 * before the timer starts, so the handler never enters the allocator's
 * shared state whatever call it interrupts. Under a tracer the handler
 * also interrupts the tracer's own bookkeeping, which must not deadlock.
 *
 * usage: signal_alloc [ITERATIONS]   (default 300000)
 * The loop's blocks are 16..215 bytes, the handler's 1000: the two are
 * told apart by size. A watchdog ends the process with status 99 (the
 * raw system call, past any library's _exit) if it runs 20 s of CPU.
 * prints: iterations=N loop_allocs=N handler_ran=yes
 * on stderr: handler_allocs=N
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#define HANDLER_SIZE 1000 /* within glibc's per-thread cache (tcache), unlike 4000 */

static volatile sig_atomic_t handler_allocs;

static void on_alarm(int sig)
{
	(void)sig;
	void *p = malloc(HANDLER_SIZE);
	__asm__ volatile("" : : "r"(p) : "memory");
	free(p);
	handler_allocs++;
}

static void on_watchdog(int sig)
{
	(void)sig;
	static const char msg[] = "signal_alloc: stuck for 20 s of CPU\n";
	ssize_t r = write(2, msg, sizeof msg - 1);
	(void)r;
	syscall(SYS_exit_group, 99);
}

int main(int argc, char **argv)
{
	long iters = argc > 1 ? atol(argv[1]) : 300000;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	sa.sa_handler = on_watchdog;
	sigaction(SIGVTALRM, &sa, NULL);
	free(malloc(HANDLER_SIZE - 1)); /* fills the handler's cache bin (same chunk size), told apart by size */
	struct itimerval wd = {{0, 0}, {20, 0}};
	setitimer(ITIMER_VIRTUAL, &wd, NULL);
	struct itimerval it = {{0, 50}, {0, 50}};
	setitimer(ITIMER_REAL, &it, NULL);
	long allocs = 0;
	for (long i = 0; i < iters; i++) {
		void *p = malloc(16 + (size_t)(i % 200));
		__asm__ volatile("" : : "r"(p) : "memory");
		allocs++;
		free(p);
	}
	struct itimerval off = {{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &off, NULL);
	printf("iterations=%ld loop_allocs=%ld handler_ran=%s\n", iters, allocs, handler_allocs > 0 ? "yes" : "no");
	fprintf(stderr, "handler_allocs=%d\n", (int)handler_allocs);
	return 0;
}

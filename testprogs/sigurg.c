/* sigurg: takes SIGURG for itself, as a program reading out-of-band socket
 * data does. The Go runtime inside the tracer sends SIGURG to its own
 * threads to preempt them; the program must see only its own action and
 * only the SIGURGs meant for it:
 *   - before it sets an action, the action is the default;
 *   - with its handler set, the action it reads back is its own, and a
 *     long run of allocations (the tracer's writer busy, and preempted)
 *     calls the handler no time;
 *   - with SIGURG blocked, one sent to the process stays pending for it
 *     (sigtimedwait), although the runtime's threads never block SIGURG;
 *   - one it raises runs its handler once.
 *
 * argv[1]: allocations and frees (default 4000000).
 * prints: default=yes own=yes during=0 sigwait=ok raise=1
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t calls;

static void on_urg(int sig, siginfo_t *info, void *uc)
{
	(void)sig;
	(void)info;
	(void)uc;
	calls++;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 4000000;
	struct sigaction a, q;
	sigaction(SIGURG, NULL, &q);
	int dfl = !(q.sa_flags & SA_SIGINFO) && q.sa_handler == SIG_DFL;

	memset(&a, 0, sizeof a);
	a.sa_sigaction = on_urg;
	a.sa_flags = SA_SIGINFO;
	sigaction(SIGURG, &a, NULL);
	sigaction(SIGURG, NULL, &q);
	int own = (q.sa_flags & SA_SIGINFO) && q.sa_sigaction == on_urg;

	void *keep[64] = {0};
	for (long i = 0; i < n; i++) {
		int k = i & 63;
		free(keep[k]);
		keep[k] = malloc(16 + (size_t)(i % 200));
	}
	for (int k = 0; k < 64; k++)
		free(keep[k]);
	int during = calls;

	sigset_t urg;
	sigemptyset(&urg);
	sigaddset(&urg, SIGURG);
	sigprocmask(SIG_BLOCK, &urg, NULL);
	kill(getpid(), SIGURG);
	/* Waiting at once would take the signal from the process's queue
	 * before another thread could: give one the time to. */
	struct timespec pause = {0, 200 * 1000 * 1000};
	nanosleep(&pause, NULL);
	struct timespec limit = {5, 0};
	int got = sigtimedwait(&urg, NULL, &limit);
	sigprocmask(SIG_UNBLOCK, &urg, NULL);

	calls = 0;
	raise(SIGURG);

	printf("default=%s own=%s during=%d sigwait=%s raise=%d\n", dfl ? "yes" : "no", own ? "yes" : "no",
	       during, got == SIGURG ? "ok" : "timeout", (int)calls);
	return 0;
}

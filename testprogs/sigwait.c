/* sigwait: blocks SIGTERM in every thread and waits for it with sigwait,
 * as many servers do. A SIGTERM sent to the process must reach sigwait,
 * whatever other threads the process has.
 *
 * prints: ready, then got=15 once the signal arrived; exits 0.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *idle(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

int main(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_t t;
	pthread_create(&t, NULL, idle, NULL);
	char *p = malloc(32); /* some allocation, so the tracer is busy too */
	free(p);
	printf("ready\n");
	fflush(stdout);
	int sig = 0;
	if (sigwait(&set, &sig) != 0)
		return 1;
	printf("got=%d\n", sig);
	return 0;
}

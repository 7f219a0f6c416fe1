/* sigchld_wait: waits for its children the way timeout(1) and many
 * daemons do: SIGCHLD blocked, the child checked for, then sigsuspend
 * until SIGCHLD comes. The child exits while SIGCHLD is blocked, so the
 * signal must stay pending for the program, wherever else it could go.
 * Then the same with an SA_SIGINFO handler, which must see the child's
 * pid and status, and with sigwaitinfo, which must see them too.
 *
 * prints: suspend=ok siginfo=ok sigwait=ok
 * An alarm ends the process (status 142) if a wait never returns.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile pid_t seen_pid;
static volatile int seen_status;

static void on_chld(int sig) { (void)sig; }

static void on_chld_info(int sig, siginfo_t *info, void *uc)
{
	(void)sig;
	(void)uc;
	seen_pid = info->si_pid;
	seen_status = info->si_status;
}

static pid_t child(int status)
{
	pid_t p = fork();
	if (p == 0) {
		usleep(20000);
		_exit(status);
	}
	return p;
}

int main(void)
{
	alarm(10);
	sigset_t chld, old;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &old);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_chld;
	sigaction(SIGCHLD, &sa, NULL);
	pid_t p = child(7);
	int st = 0;
	while (waitpid(p, &st, WNOHANG) == 0) {
		usleep(100000); /* the child exits here, SIGCHLD blocked */
		sigsuspend(&old);
	}
	printf("suspend=%s ", WEXITSTATUS(st) == 7 ? "ok" : "bad");

	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_chld_info;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGCHLD, &sa, NULL);
	p = child(5);
	usleep(100000);
	sigsuspend(&old);
	waitpid(p, &st, 0);
	printf("siginfo=%s ", seen_pid == p && seen_status == 5 ? "ok" : "bad");

	p = child(6);
	usleep(100000); /* the child exits here, SIGCHLD blocked */
	siginfo_t si;
	int sig = sigwaitinfo(&chld, &si);
	waitpid(p, &st, 0);
	printf("sigwait=%s\n", sig == SIGCHLD && si.si_pid == p && si.si_status == 6 && WEXITSTATUS(st) == 6 ? "ok" : "bad");
	return 0;
}

/* sigactions: prints the action of every standard signal as the program
 * finds it at start, one letter each for signals 1 to 31: d (default),
 * i (ignored) or h (a handler). A program that ignores SIGPIPE only when
 * its action is the default, or chains to the handler it replaced, acts
 * on exactly this. */
#include <signal.h>
#include <stdio.h>

int main(void)
{
	char out[32];
	for (int sig = 1; sig <= 31; sig++) {
		struct sigaction q;
		if (sigaction(sig, NULL, &q) != 0)
			out[sig - 1] = '?';
		else if (q.sa_flags & SA_SIGINFO)
			out[sig - 1] = 'h';
		else
			out[sig - 1] = q.sa_handler == SIG_DFL ? 'd' : q.sa_handler == SIG_IGN ? 'i' : 'h';
	}
	out[31] = 0;
	printf("%s\n", out);
	return 0;
}

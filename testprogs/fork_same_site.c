/* fork_same_site: allocations from one call site, with a fork between
 * them. The child goes on calling the site from the same frame, so its
 * first stack walk after the fork repeats the parent's last one exactly.
 * Whatever the parent's trace knows of that stack, the child's trace must
 * define it again: the child's file starts from nothing.
 *
 *   parent leaks 200 blocks of 32 bytes (100 before the fork, 100 after)
 *   child  leaks 100 blocks of 48 bytes, all from the same site
 *
 * prints (the child first): role=child pid=C blocks=100 bytes=4800
 *                           role=parent pid=P blocks=200 bytes=6400
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) static void *site(size_t n)
{
	void *p = malloc(n);
	__asm__ volatile("" : : "r"(p) : "memory");
	return p;
}

int main(void)
{
	pid_t pid = -1;
	size_t size = 32;
	int blocks = 0;
	for (int i = 0; i < 200; i++) {
		if (i == 100) {
			fflush(stdout);
			pid = fork();
			if (pid < 0) {
				perror("fork");
				return 1;
			}
			if (pid == 0) {
				size = 48;
				blocks = 0;
			}
		}
		site(size);
		blocks++;
	}
	if (pid == 0) {
		printf("role=child pid=%d blocks=%d bytes=%zu\n", (int)getpid(), blocks, blocks * size);
		fflush(stdout);
		_exit(0);
	}
	waitpid(pid, NULL, 0);
	printf("role=parent pid=%d blocks=%d bytes=%zu\n", (int)getpid(), blocks, blocks * size);
	return 0;
}

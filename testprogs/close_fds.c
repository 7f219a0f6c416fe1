/* close_fds: closes every descriptor it did not open, as daemons do, then
 * leaks. The tracer's own descriptor must survive and its trace must hold
 * the leak; the program must see what it sees without the tracer.
 *
 * usage: close_fds loop|closefrom|close_range|dup2
 *   loop         close(2) on 3 .. getdtablesize()-1
 *   closefrom    closefrom(3)
 *   close_range  close_range(3, ~0U, 0)
 *   dup2         dup2 /dev/null onto 899, 900 and 901, then close them
 * prints: close900=EBADF fd=3 leaked_blocks=3 leaked_bytes=12000
 * (fd: the number its next open got; close900: close(900) after that.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "loop";
	if (strcmp(mode, "loop") == 0) {
		for (int i = 3; i < getdtablesize(); i++)
			close(i);
	} else if (strcmp(mode, "closefrom") == 0) {
		closefrom(3);
	} else if (strcmp(mode, "close_range") == 0) {
		if (close_range(3, ~0U, 0) != 0)
			perror("close_range");
	} else if (strcmp(mode, "dup2") == 0) {
		int null = open("/dev/null", O_RDONLY);
		for (int i = 899; i <= 901; i++)
			if (dup2(null, i) != i)
				perror("dup2");
		for (int i = 899; i <= 901; i++)
			close(i);
		close(null);
	} else {
		fprintf(stderr, "close_fds: unknown mode %s\n", mode);
		return 2;
	}
	int f = open("/dev/null", O_WRONLY);
	errno = 0;
	int rc = close(900);
	const char *c900 = rc == 0 ? "closed" : errno == EBADF ? "EBADF" : strerror(errno);
	for (int i = 0; i < 3; i++) {
		char *p = malloc(4000);
		memset(p, 1, 4000);
		p = NULL; /* lost */
	}
	printf("close900=%s fd=%d leaked_blocks=3 leaked_bytes=12000\n", c900, f);
	return 0;
}

/* scan_noclone: a program whose seccomp filter refuses new threads, with
 * a heap big enough that the exit scan would fault its block array in on
 * a thread of its own. The scan must run without that thread.
 *
 *   definitely lost  lose's 100 bytes
 *   still reachable  a chain of 2,500,000 blocks of 16 bytes from a global,
 *                    and the 48-byte block at its end
 *
 * prints: done (exit status 77 when the kernel has no seccomp filters)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static void *volatile held;

static void use(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

__attribute__((noinline)) static void lose(void)
{
	use(malloc(100));
}

/* clone with CLONE_THREAD fails with EPERM; everything else is allowed. */
static int refuse_threads(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
		BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {sizeof f / sizeof f[0], f};
	return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

int main(void)
{
	if (refuse_threads()) {
		perror("seccomp");
		return 77;
	}
	held = malloc(48);
	lose();
	for (int i = 0; i < 2500000; i++) {
		void **n = malloc(16);
		n[0] = held;
		held = n;
	}
	printf("done\n");
	return 0;
}

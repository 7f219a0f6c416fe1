/* handover: a block one thread frees is handed out again to another
 * thread, which keeps it. Run with MALLOC_ARENA_MAX=1 and
 * GLIBC_TUNABLES=glibc.malloc.tcache_count=0, so both threads allocate
 * from one arena without per-thread caches: the freed 48-byte block goes
 * to a shared free list, and the other thread's next 48-byte malloc gets
 * the same address.
 *
 * The freeing thread then waits without freeing anything else until the
 * program ends, so a tracer that defers removing freed blocks from its
 * books still holds that release when the second thread takes the
 * address. The second thread's block holds the only pointer to a 16-byte
 * one; both pointers to it are dropped before exit, so it is definitely
 * lost and the 16-byte block indirectly lost. A tracer that lost track of
 * the handed-over block would see it as never allocated and the small one
 * as definitely lost.
 *
 * prints: same address   (or "other address" when the allocator did not
 * hand the block over, which makes the run say nothing)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *freed, *kept;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int stage;

static void use(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

static void wait_stage(int s)
{
	pthread_mutex_lock(&mu);
	while (stage < s)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
}

static void set_stage(int s)
{
	pthread_mutex_lock(&mu);
	stage = s;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

static void *guard;

__attribute__((noinline)) static void *first(void *arg)
{
	(void)arg;
	wait_stage(1); /* both threads exist: nothing else allocates now */
	void *p = malloc(48);
	guard = malloc(48); /* keeps p off the top of the heap; reachable */
	use(p);
	freed = p;
	free(p);
	set_stage(2);
	wait_stage(4); /* no other free on this thread until the end */
	return NULL;
}

__attribute__((noinline)) static void *child(void)
{
	return malloc(16);
}

__attribute__((noinline)) static void take(void)
{
	kept = malloc(48);
	*(void **)kept = child();
}

static void *second(void *arg)
{
	(void)arg;
	set_stage(1);
	wait_stage(2);
	take();
	set_stage(3);
	return NULL;
}

/* Overwrites the stack below main's frame, so no stale copy of a pointer
 * survives there to be found by a conservative scan. */
__attribute__((noinline)) static void scrub(void)
{
	volatile char buf[4096];
	memset((char *)buf, 0, sizeof(buf));
}

int main(void)
{
	pthread_t a, b;
	pthread_create(&a, NULL, first, NULL);
	pthread_create(&b, NULL, second, NULL);
	pthread_join(b, NULL);
	puts(kept == freed ? "same address" : "other address");
	fflush(stdout);
	set_stage(4);
	pthread_join(a, NULL);
	freed = kept = NULL;
	scrub();
	return 0;
}

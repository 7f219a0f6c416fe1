/* stress: many threads hammering the allocator, with blocks freed by a
 * thread other than the one that allocated them, and a fork() in the
 * middle of the run after which the child keeps allocating.
 *
 * usage: stress [THREADS] [EVENTS|big] [nofork]
 *   THREADS  worker threads (default 8, at most 256)
 *   EVENTS   allocator calls to make in all (default 200000; "big" means
 *            12000000)
 *   nofork   do not fork
 *
 * Each worker owns 256 slots. At random it allocates into a slot (malloc
 * or calloc; a slot's previous block is freed, or handed to the next
 * worker through a lock-free queue for that worker to free), reallocs a
 * slot (realloc of NULL when empty), frees a slot, or frees what other
 * workers handed it. Worker 0 forks when half through its share; the child
 * (worker 0 alone) goes on for the other half of that share, then frees
 * its slots except 4 blocks of 3000..3003 bytes. At the end of the parent
 * every worker keeps 4 blocks of 1000+16*id+k bytes (k = 0..3) and all
 * else is freed.
 *
 * Counters are allocator calls this program made, in this process:
 *   role=child pid=C ppid=P allocs=A reallocs=R frees=F live_blocks=B
 *       live_bytes=S inherited_frees=I inherited_reallocs=J
 *   role=parent pid=P threads=N allocs=A reallocs=R frees=F live_blocks=B
 *       live_bytes=S cross_thread_frees=X forked=0|1
 * (each on one line). allocs counts malloc and calloc calls, reallocs
 * realloc calls, frees free calls. The child counts only calls made after
 * the fork; its live_* are the blocks it allocated itself and left live,
 * and inherited_* count the parent's blocks it freed or reallocated. The
 * child prints first: the parent waits for it before printing.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SLOTS 256
#define MAX_THREADS 256
#define LEAK_PER_THREAD 4

/* Every block starts with this header: the queue link, the size asked
 * for (to keep live bytes exact), the allocating worker and whether the
 * block was born in the forked child. */
struct hdr {
	struct hdr *next;
	size_t size;
	int owner;
	int child;
};

struct queue {
	_Atomic(struct hdr *) head;
	char pad[64 - sizeof(void *)]; /* one cache line each */
};

struct worker {
	pthread_t thread;
	int id;
	uint64_t rng;
	unsigned long ops, budget;
	struct hdr *slot[SLOTS];
};

static atomic_ulong allocs, frees, reallocs, live_blocks, live_bytes, cross_frees;
static unsigned long inherited_frees, inherited_reallocs;
static struct queue queues[MAX_THREADS];
static struct worker workers[MAX_THREADS];
static int nthreads = 8, do_fork = 1;
static int in_child;
static pid_t child_pid;

static uint64_t next_rand(struct worker *w)
{
	/* xorshift64*: deterministic per worker, no shared state. */
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return w->rng * 2685821657736338717ULL;
}

static size_t pick_size(struct worker *w)
{
	uint64_t r = next_rand(w);
	if (r % 512 == 0)
		return 160 * 1024 + r % 4096; /* above the mmap threshold */
	return sizeof(struct hdr) + r % 2048;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

__attribute__((noinline)) static struct hdr *new_block(struct worker *w, size_t size)
{
	struct hdr *h;
	if (next_rand(w) & 1)
		h = malloc(size);
	else
		h = calloc(1, size);
	if (h == NULL)
		die("malloc");
	atomic_fetch_add(&allocs, 1);
	h->next = NULL;
	h->size = size;
	h->owner = w->id;
	h->child = in_child;
	atomic_fetch_add(&live_blocks, 1);
	atomic_fetch_add(&live_bytes, size);
	w->ops++;
	return h;
}

/* In the child, blocks from before the fork are not the child's own:
 * they are counted apart and never in its live totals. */
static int own(const struct hdr *h)
{
	return !in_child || h->child;
}

__attribute__((noinline)) static void free_block(struct worker *w, struct hdr *h)
{
	if (own(h)) {
		atomic_fetch_sub(&live_blocks, 1);
		atomic_fetch_sub(&live_bytes, h->size);
	} else {
		inherited_frees++;
	}
	if (h->owner != w->id && !in_child)
		atomic_fetch_add(&cross_frees, 1);
	free(h);
	atomic_fetch_add(&frees, 1);
	w->ops++;
}

__attribute__((noinline)) static struct hdr *resize_block(struct worker *w, struct hdr *h, size_t size)
{
	size_t old = 0;
	int was_own = 1;
	if (h != NULL) {
		old = h->size;
		was_own = own(h);
	}
	struct hdr *n = realloc(h, size);
	if (n == NULL)
		die("realloc");
	atomic_fetch_add(&reallocs, 1);
	if (h == NULL || !was_own) {
		if (!was_own)
			inherited_reallocs++;
		atomic_fetch_add(&live_blocks, 1);
		n->owner = w->id;
	} else {
		atomic_fetch_sub(&live_bytes, old);
	}
	atomic_fetch_add(&live_bytes, size);
	n->next = NULL;
	n->size = size;
	n->child = in_child;
	w->ops++;
	return n;
}

static void push(struct queue *q, struct hdr *h)
{
	struct hdr *old = atomic_load(&q->head);
	do
		h->next = old;
	while (!atomic_compare_exchange_weak(&q->head, &old, h));
}

/* Single consumer: taking the whole list at once has no ABA problem. */
static void drain(struct worker *w, struct queue *q)
{
	struct hdr *h = atomic_exchange(&q->head, NULL);
	while (h != NULL) {
		struct hdr *next = h->next;
		free_block(w, h);
		h = next;
	}
}

static void fork_now(struct worker *w);

static void run(struct worker *w)
{
	while (w->ops < w->budget) {
		if (w->id == 0 && do_fork && !in_child && child_pid == 0 && w->ops >= w->budget / 2)
			fork_now(w);
		unsigned r = next_rand(w) % 100;
		int i = next_rand(w) % SLOTS;
		struct hdr **s = &w->slot[i];
		if (r < 40) {
			if (*s != NULL) {
				if (nthreads > 1 && !in_child && (next_rand(w) & 1))
					push(&queues[(w->id + 1) % nthreads], *s);
				else
					free_block(w, *s);
			}
			*s = new_block(w, pick_size(w));
		} else if (r < 60) {
			*s = resize_block(w, *s, pick_size(w));
		} else if (r < 90) {
			if (*s != NULL) {
				free_block(w, *s);
				*s = NULL;
			}
		} else if (!in_child) {
			drain(w, &queues[w->id]);
		}
	}
}

/* finish leaves the worker's first LEAK_PER_THREAD slots holding blocks of
 * known sizes, and frees every other slot. */
static void finish(struct worker *w, size_t first_size)
{
	for (int k = 0; k < SLOTS; k++) {
		if (w->slot[k] != NULL) {
			free_block(w, w->slot[k]);
			w->slot[k] = NULL;
		}
		if (k < LEAK_PER_THREAD)
			w->slot[k] = new_block(w, first_size + k);
	}
}

static void fork_now(struct worker *w)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid > 0) {
		child_pid = pid;
		return;
	}
	/* The child: only this thread exists now. Count from zero. */
	in_child = 1;
	atomic_store(&allocs, 0);
	atomic_store(&frees, 0);
	atomic_store(&reallocs, 0);
	atomic_store(&live_blocks, 0);
	atomic_store(&live_bytes, 0);
	run(w);
	finish(w, 3000);
	printf("role=child pid=%d ppid=%d allocs=%lu reallocs=%lu frees=%lu live_blocks=%lu live_bytes=%lu "
	       "inherited_frees=%lu inherited_reallocs=%lu\n",
	       (int)getpid(), (int)getppid(), (unsigned long)allocs, (unsigned long)reallocs,
	       (unsigned long)frees, (unsigned long)live_blocks, (unsigned long)live_bytes,
	       inherited_frees, inherited_reallocs);
	exit(0);
}

static void *thread_main(void *arg)
{
	struct worker *w = arg;
	run(w);
	return NULL;
}

int main(int argc, char **argv)
{
	unsigned long events = 200000;
	if (argc > 1)
		nthreads = atoi(argv[1]);
	if (nthreads < 1 || nthreads > MAX_THREADS) {
		fprintf(stderr, "threads must be 1..%d\n", MAX_THREADS);
		return 2;
	}
	if (argc > 2)
		events = strcmp(argv[2], "big") == 0 ? 12000000 : strtoul(argv[2], NULL, 10);
	if (argc > 3 && strcmp(argv[3], "nofork") == 0)
		do_fork = 0;

	for (int i = 0; i < nthreads; i++) {
		workers[i].id = i;
		workers[i].rng = 0x9E3779B97F4A7C15ULL * (i + 1);
		workers[i].budget = events / nthreads;
	}
	for (int i = 0; i < nthreads; i++)
		if (pthread_create(&workers[i].thread, NULL, thread_main, &workers[i]) != 0)
			die("pthread_create");
	for (int i = 0; i < nthreads; i++)
		pthread_join(workers[i].thread, NULL);

	int forked = child_pid > 0;
	if (forked) {
		int status;
		if (waitpid(child_pid, &status, 0) < 0)
			die("waitpid");
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "child failed: status %#x\n", status);
			return 1;
		}
	}
	/* Whatever is still queued is freed by its addressee. */
	for (int i = 0; i < nthreads; i++)
		drain(&workers[i], &queues[i]);
	for (int i = 0; i < nthreads; i++)
		finish(&workers[i], 1000 + 16 * i);

	printf("role=parent pid=%d threads=%d allocs=%lu reallocs=%lu frees=%lu live_blocks=%lu live_bytes=%lu "
	       "cross_thread_frees=%lu forked=%d\n",
	       (int)getpid(), nthreads, (unsigned long)allocs, (unsigned long)reallocs, (unsigned long)frees,
	       (unsigned long)live_blocks, (unsigned long)live_bytes, (unsigned long)cross_frees, forked);
	return 0;
}

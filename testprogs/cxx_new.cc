// cxx_new: operator new and new[] leaks next to correctly deleted objects.
// Leaks: one `new int(1)` (4 bytes, operator new) and one `new int[10]`
// (40 bytes, operator new[]).
//
// prints: news=N new_arrays=N deletes=N delete_arrays=N leaked_blocks=2 leaked_bytes=44
#include <cstdio>
#include <string>

static int news, new_arrays, deletes, delete_arrays;
static volatile int sink;

struct Point {
	int x, y;
};

__attribute__((noinline)) static void leak_scalar()
{
	int *p = new int(1);
	news++;
	sink = *p; // used, never deleted
}

__attribute__((noinline)) static void leak_array()
{
	int *a = new int[10]();
	new_arrays++;
	sink = a[3];
}

__attribute__((noinline)) static void balanced()
{
	for (int i = 0; i < 5; i++) {
		Point *p = new Point{i, i};
		news++;
		sink = p->x;
		delete p;
		deletes++;
	}
	double *d = new double[32]();
	new_arrays++;
	sink = (int)d[1];
	delete[] d;
	delete_arrays++;
}

int main()
{
	balanced();
	leak_scalar();
	leak_array();
	std::printf("news=%d new_arrays=%d deletes=%d delete_arrays=%d leaked_blocks=2 leaked_bytes=%zu\n",
		    news, new_arrays, deletes, delete_arrays, sizeof(int) + 10 * sizeof(int));
	return 0;
}

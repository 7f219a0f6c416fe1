// cxx_owner: C++ objects that own heap buffers, leaked through the owner.
//
//   Owner (16 bytes: a pointer and a size) allocates a 1000-byte buffer in
//   its constructor and frees it in its destructor. One Owner made with
//   new is never deleted: the Owner is definitely lost, its buffer
//   indirectly lost.
//   A std::vector<int> (24 bytes) made with new and holding 100 ints
//   (a 400-byte buffer) is never deleted: the vector definitely lost, its
//   buffer indirectly lost.
//   Other Owners and vectors are destroyed properly.
//
// prints: definite_blocks=2 definite_bytes=40 indirect_blocks=2 indirect_bytes=1400
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <vector>

class Owner {
public:
	explicit Owner(std::size_t n) : buf_(new char[n]), n_(n) { std::memset(buf_, 'x', n_); }
	~Owner() { delete[] buf_; }
	Owner(const Owner &) = delete;
	Owner &operator=(const Owner &) = delete;
	std::size_t size() const { return n_; }

private:
	char *buf_;
	std::size_t n_;
};

static void use(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

__attribute__((noinline)) static void leak_owner()
{
	Owner *o = new Owner(1000);
	use(o);
}

__attribute__((noinline)) static void leak_vector()
{
	auto *v = new std::vector<int>();
	v->reserve(100);
	for (int i = 0; i < 100; i++)
		v->push_back(i);
	use(v);
}

__attribute__((noinline)) static void balanced()
{
	Owner stack_owner(64);
	Owner *o = new Owner(2000);
	use(o);
	delete o;
	std::vector<int> v(50, 7);
	auto *pv = new std::vector<int>(10, 1);
	use(pv);
	delete pv;
	use(&stack_owner);
}

__attribute__((noinline)) static void scrub()
{
	volatile char buf[4096];
	std::memset(const_cast<char *>(buf), 0, sizeof(buf));
}

int main()
{
	balanced();
	leak_owner();
	leak_vector();
	scrub();
	std::printf("definite_blocks=2 definite_bytes=%zu indirect_blocks=2 indirect_bytes=%zu\n",
		    sizeof(Owner) + sizeof(std::vector<int>), 1000 + 100 * sizeof(int));
	return 0;
}

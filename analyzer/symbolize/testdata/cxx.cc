// C++ symbolization test program: a class method in a namespace with an
// inlined member call inside it.
#include "modules.h"

namespace ns {

class Widget {
public:
	__attribute__((noipa)) void *make(int n);
	__attribute__((always_inline)) inline void *helper() {
		return grab(); // LINE:helper-call
	}
	__attribute__((noipa)) static void *grab() { return __builtin_return_address(0); }
	int count = 0;
};

void *Widget::make(int n)
{
	void *r = helper(); // LINE:make-call
	count += n;
	return r;
}

} // namespace ns

int main()
{
	ns::Widget w;
	printf("ra make %lx\n", (unsigned long)w.make(3));
	print_modules();
	return 0;
}

/* case: one test of the calculator and the string buffer, chosen by the
 * program's name, case_N (N = 1..25); it exits 0 when the case passes.
 * Case 13 divides by zero, which calc_eval rejects correctly but, on that
 * path, leaks its token array: (strlen("7/0") + 1) * 16 = 64 bytes in 1
 * block. No other case leaks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calc.h"
#include "strbuf.h"

struct tcase {
	const char *expr;
	long want;
	int fails; /* calc_eval must reject it */
};

static const struct tcase cases[] = {
	{"1+2", 3, 0},        {"2*3+4", 10, 0},      {"2*(3+4)", 14, 0},
	{"10/3", 3, 0},       {"-5+2", -3, 0},       {"((1))", 1, 0},
	{"7-2-1", 4, 0},      {"100/10/5", 2, 0},    {"3*3*3", 27, 0},
	{"1+", 0, 1},         {"(1+2", 0, 1},        {"1 + 2 * 3", 7, 0},
	{"7/0", 0, 1},        {"x", 0, 1},           {"42", 42, 0},
	{"-(2+3)*2", -10, 0}, {"8/(3-1)", 4, 0},     {"0*12345", 0, 0},
	{"1-(2-(3-4))", -2, 0}, {"2*2*2*2*2", 32, 0}, {"9/3*3", 9, 0},
	{"5--5", 10, 0},      {"(", 0, 1},           {"12+30", 42, 0},
	{"6*7", 42, 0},
};

int main(int argc, char **argv)
{
	(void)argc;
	const char *name = strrchr(argv[0], '/');
	name = name ? name + 1 : argv[0];
	int n = strncmp(name, "case_", 5) == 0 ? atoi(name + 5) : 0;
	if (n < 1 || n > (int)(sizeof cases / sizeof cases[0])) {
		fprintf(stderr, "%s: name the program case_N, N from 1 to %zu\n", name, sizeof cases / sizeof cases[0]);
		return 2;
	}
	const struct tcase *c = &cases[n - 1];
	long got = 0;
	int rc = calc_eval(c->expr, &got);

	struct strbuf msg;
	strbuf_init(&msg);
	strbuf_append(&msg, c->expr);
	strbuf_append(&msg, " = ");
	if (rc == 0)
		strbuf_appendf_long(&msg, got);
	else
		strbuf_append(&msg, "error");
	int ok = c->fails ? rc != 0 : rc == 0 && got == c->want;
	printf("case %d: %s: %s\n", n, msg.data, ok ? "ok" : "FAILED");
	strbuf_free(&msg);
	return ok ? 0 : 1;
}

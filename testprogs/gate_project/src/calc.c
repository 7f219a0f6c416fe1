#include "calc.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

enum kind { NUM, OP, END };

struct token {
	enum kind kind;
	long value; /* the number, or the operator character */
};

struct parser {
	struct token *tok;
	int pos;
	int error;
};

/* calc_tokenize returns an array of strlen(expr)+1 tokens, enough for any
 * expression, ending with an END token; NULL on a character it does not
 * know. */
__attribute__((noinline)) static struct token *calc_tokenize(const char *expr)
{
	struct token *t = malloc((strlen(expr) + 1) * sizeof *t);
	if (t == NULL)
		return NULL;
	int n = 0;
	for (const char *p = expr; *p;) {
		if (isspace((unsigned char)*p)) {
			p++;
		} else if (isdigit((unsigned char)*p)) {
			char *end;
			t[n].kind = NUM;
			t[n++].value = strtol(p, &end, 10);
			p = end;
		} else if (strchr("+-*/()", *p)) {
			t[n].kind = OP;
			t[n++].value = *p++;
		} else {
			free(t);
			return NULL;
		}
	}
	t[n].kind = END;
	t[n].value = 0;
	return t;
}

static long expr(struct parser *ps);

static long primary(struct parser *ps)
{
	struct token *t = &ps->tok[ps->pos];
	if (t->kind == NUM) {
		ps->pos++;
		return t->value;
	}
	if (t->kind == OP && t->value == '(') {
		ps->pos++;
		long v = expr(ps);
		if (ps->tok[ps->pos].kind == OP && ps->tok[ps->pos].value == ')')
			ps->pos++;
		else
			ps->error = 1;
		return v;
	}
	if (t->kind == OP && t->value == '-') {
		ps->pos++;
		return -primary(ps);
	}
	ps->error = 1;
	return 0;
}

static long term(struct parser *ps)
{
	long v = primary(ps);
	while (!ps->error && ps->tok[ps->pos].kind == OP &&
	       (ps->tok[ps->pos].value == '*' || ps->tok[ps->pos].value == '/')) {
		long op = ps->tok[ps->pos++].value;
		long r = primary(ps);
		if (op == '*') {
			v *= r;
		} else if (r == 0) {
			ps->error = 2;
			return 0;
		} else {
			v /= r;
		}
	}
	return v;
}

static long expr(struct parser *ps)
{
	long v = term(ps);
	while (!ps->error && ps->tok[ps->pos].kind == OP &&
	       (ps->tok[ps->pos].value == '+' || ps->tok[ps->pos].value == '-')) {
		long op = ps->tok[ps->pos++].value;
		long r = term(ps);
		v = op == '+' ? v + r : v - r;
	}
	return v;
}

int calc_eval(const char *s, long *result)
{
	struct parser ps = {calc_tokenize(s), 0, 0};
	if (ps.tok == NULL)
		return -1;
	long v = expr(&ps);
	if (ps.error == 2)
		return -1; /* the bug the leak gate is there to catch: tokens not freed */
	if (ps.error || ps.tok[ps.pos].kind != END) {
		free(ps.tok);
		return -1;
	}
	free(ps.tok);
	*result = v;
	return 0;
}

#ifndef CALC_H
#define CALC_H

/* calc_eval evaluates an integer expression of numbers, + - * / and
 * parentheses, with the usual precedence. It returns 0 and sets *result,
 * or -1 on a syntax error or a division by zero. */
int calc_eval(const char *expr, long *result);

#endif

#include "strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void strbuf_init(struct strbuf *sb)
{
	sb->data = NULL;
	sb->len = sb->cap = 0;
}

static int grow(struct strbuf *sb, size_t need)
{
	if (sb->len + need + 1 <= sb->cap)
		return 0;
	size_t cap = sb->cap ? sb->cap : 16;
	while (cap < sb->len + need + 1)
		cap *= 2;
	char *p = realloc(sb->data, cap);
	if (p == NULL)
		return -1;
	sb->data = p;
	sb->cap = cap;
	return 0;
}

int strbuf_append(struct strbuf *sb, const char *s)
{
	size_t n = strlen(s);
	if (grow(sb, n) != 0)
		return -1;
	memcpy(sb->data + sb->len, s, n + 1);
	sb->len += n;
	return 0;
}

int strbuf_appendf_long(struct strbuf *sb, long v)
{
	char tmp[32];
	snprintf(tmp, sizeof tmp, "%ld", v);
	return strbuf_append(sb, tmp);
}

void strbuf_free(struct strbuf *sb)
{
	free(sb->data);
	strbuf_init(sb);
}

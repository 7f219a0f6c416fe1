#ifndef STRBUF_H
#define STRBUF_H

#include <stddef.h>

/* A growable, always NUL-terminated string. */
struct strbuf {
	char *data;
	size_t len, cap;
};

void strbuf_init(struct strbuf *sb);
int strbuf_append(struct strbuf *sb, const char *s);
int strbuf_appendf_long(struct strbuf *sb, long v);
void strbuf_free(struct strbuf *sb);

#endif

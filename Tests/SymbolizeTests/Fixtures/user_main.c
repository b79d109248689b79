/* Symbolize test fixture: a dynamically linked user program, for PLT entries (foo@plt). */
#include <stdio.h>
#include <string.h>

static int count_a(const char *s)
{
    int n = 0;
    while (*s)
        n += *s++ == 'a';
    return n;
}

int main(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        printf("%d %zu\n", count_a(argv[i]), strlen(argv[i]));
    return 0;
}

/* A freestanding x86-64 program (no libc) whose single-stepped execution gives the
 * call-tree tests a real branch stream. Build:
 *   gcc -g -O2 -static -nostdlib -fno-pie -no-pie -fcf-protection=none -o calltree calltree.c
 * Facts the tests check, from this source alone:
 *   fib(5) makes 15 calls of fib in all (C(n) = 1 + C(n-1) + C(n-2), C(0) = C(1) = 1),
 *   nested at most 5 deep; tail() reaches leaf() by a jump, so leaf's return pops both;
 *   via_pointer() calls leaf through a register; via_table() through a memory operand
 *   (7 bytes: FF 14 xx disp32); outer() holds sum_to() inlined, whose loop branches
 *   stay inside the inlined instance. */

static volatile long sink;

__attribute__((noinline)) long fib(long n)
{
    if (n < 2)
        return n;
    long a = fib(n - 1);
    __asm__ volatile("" : "+r"(a)); /* keeps the second call out of tail position */
    long b = fib(n - 2);
    __asm__ volatile("" : "+r"(b));
    return a + b;
}

__attribute__((noinline)) long leaf(long x)
{
    sink += x;
    return x * 3;
}

__attribute__((noinline)) long tail(long x)
{
    return leaf(x + 1); /* a sibling call: jmp leaf */
}

__attribute__((noinline)) long via_pointer(long (*f)(long), long x)
{
    long r = f(x);
    __asm__ volatile("" : "+r"(r));
    return r + 1;
}

long (*const table[2])(long) = { leaf, tail };

__attribute__((noinline)) long via_table(long i, long x)
{
    long r;
    /* call *table(,%index,8): an indirect call through memory with a SIB byte (7 bytes). */
    long k = i & 1;
    __asm__ volatile("call *table(,%1,8)"
                     : "=a"(r), "+r"(k), "+D"(x)
                     :
                     : "rcx", "rdx", "rsi", "r8", "r9", "r10", "r11", "memory", "cc");
    return r;
}

/* Inlined into outer(): its loop's branches lie inside the inlined instance. */
static inline __attribute__((always_inline)) long sum_to(long n)
{
    long s = 0;
    for (long i = 0; i < n; i++) {
        s += i;
        __asm__ volatile("" : "+r"(s));
    }
    return s;
}

__attribute__((noinline)) long outer(long n)
{
    long r = sum_to(n);
    __asm__ volatile("" : "+r"(r));
    return r + 1;
}

void _start(void)
{
    long r = fib(5);
    r += tail(r);
    r += via_pointer(leaf, 2);
    r += via_table(0, 4);
    r += outer(4);
    __asm__ volatile("syscall" : : "a"(60L), "D"(r & 0x7f) : "rcx", "r11", "memory");
    __builtin_unreachable();
}

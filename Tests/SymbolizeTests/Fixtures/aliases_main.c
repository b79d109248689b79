/* C aliases: a weak alias and a global alias of one function (one DWARF subprogram),
   and the entry point calling the assembler functions. */
extern long mm_weak(long, long);
extern long cp_weak(long);

__attribute__((noinline)) long real_work(long x)
{
    return x * 3 + 1;
}
extern long weak_work(long) __attribute__((weak, alias("real_work")));
extern long strong_work(long) __attribute__((alias("real_work")));

void _start(void)
{
    volatile long v = mm_weak(1, 2) + cp_weak(3) + weak_work(4) + strong_work(5);
    (void)v;
    for (;;)
        ;
}

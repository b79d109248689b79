/* Symbolize test fixture, unit B: the second static `helper`, the tail-call target,
   and another inlined helper used from two places. */
extern volatile int sink;

static __attribute__((noinline)) int helper(int x)
{
    sink = x;
    return x - 7;
}

static inline __attribute__((always_inline)) int clamp(int x)
{
    if (x > 1000)
        return 1000;
    return x < -1000 ? -1000 : x;
}

int tail_target(int x)
{
    sink = clamp(x);
    return helper(x) + clamp(x * 5);
}

int b_entry(int x)
{
    return helper(clamp(x)) * 2;
}

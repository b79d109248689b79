/* Symbolize test fixture, unit A: inlined helpers (nested), a cold-split path,
   recursion, a tail call, and a static function whose name unit B also uses. */
volatile int sink;
int b_entry(int x);
int tail_target(int x);

__attribute__((cold, noinline)) void report_failure(int code)
{
    sink = code;
    sink = code * 2;
}

static __attribute__((noinline)) int helper(int x)
{
    sink = x;
    return x * 3 + 1;
}

static inline __attribute__((always_inline)) int square(int x)
{
    sink = x;
    return x * x;
}

static inline __attribute__((always_inline)) int square_sum(int x)
{
    int a = square(x);
    sink = a;
    return a + square(x + 1);
}

int recurse(int n)
{
    if (n <= 0)
        return sink;
    sink = n;
    return n + recurse(n - 1) * 3;
}

int tailer(int x)
{
    sink = x;
    return tail_target(x + 1);
}

int work(int x)
{
    if (__builtin_expect(x == 12345, 0)) {
        report_failure(x);
        sink = x + 1;
        report_failure(x + 2);
        for (int i = 0; i < x; i++)
            sink = i * x;
        return -1;
    }
    return square_sum(x) + helper(x);
}

void _start(void)
{
    for (;;)
        sink = work(sink) + recurse(sink) + tailer(sink) + b_entry(sink);
}

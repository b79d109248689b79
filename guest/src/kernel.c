/*
 * The bundled tt guest's main program, shared by the 32-bit and 64-bit builds.
 *
 * It runs ROUNDS rounds over a fixed set of named functions (a checksum loop, a
 * recursive fib, a tail call, a `rep movsb` copy), reads the two sources of real
 * non-determinism (rdtsc and the CMOS RTC), prints one line per round on COM1, and waits
 * for a PIT tick between rounds so that timer interrupts really arrive during the run.
 * At the end it checks its own results and leaves through the isa-debug-exit device.
 */
#include "guest.h"

#define ROUNDS 32
#define FIB_N 12            /* fib(12) = 144, computed with 2*fib(13)-1 = 465 calls of fib */
#define FIB_EXPECTED 144
#define BLOCK_SIZE 1024
#define COPY_BASE 40        /* copy_block copies COPY_BASE + round bytes: 41 .. 72 iterations */
#define PIT_HZ_DIVISOR 119  /* 1.193182 MHz / 119 = ~10 kHz: ticks also land mid-round */

#define COM1 0x3f8
#define DEBUG_EXIT_PORT 0xf4

volatile u32 timer_ticks;          /* incremented by timer_tick, read by the main loop */
static u8 source_block[BLOCK_SIZE];
static u8 dest_block[BLOCK_SIZE];

/* ---- serial port (COM1) ---- */

static inline void serial_putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20))     /* line status: transmit holding register empty */
        ;
    outb(COM1, (u8)c);
}

NAMED void serial_puts(const char *s)
{
    while (*s)
        serial_putc(*s++);
}

static void serial_init(void)
{
    outb(COM1 + 1, 0x00);   /* no UART interrupts */
    outb(COM1 + 3, 0x80);   /* DLAB on */
    outb(COM1 + 0, 0x01);   /* divisor 1: 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);   /* 8N1, DLAB off */
    outb(COM1 + 2, 0xC7);   /* FIFO on, cleared */
}

static void put_hex(u64 value, int digits)
{
    char buf[17];
    for (int i = digits - 1; i >= 0; i--) {
        buf[i] = "0123456789abcdef"[value & 0xf];
        value >>= 4;
    }
    buf[digits] = 0;
    serial_puts(buf);
}

/* Decimal of a 32-bit value (no 64-bit division: i386 would need libgcc). */
static void put_dec(u32 value, int min_digits)
{
    char buf[12];
    int i = sizeof buf - 1;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + value % 10);
        value /= 10;
        min_digits--;
    } while (value || min_digits > 0);
    serial_puts(&buf[i]);
}

/* ---- the isa-debug-exit device ---- */

static NORETURN void debug_exit(u8 code)
{
    outb(DEBUG_EXIT_PORT, code);
    /* QEMU 10's isa-debug-exit asks the main loop for a shutdown, which ends QEMU a little
     * later: wait here, interrupts off, printing nothing, so that the output is the same in
     * every recording and replay wherever the end comes. */
    __asm__ volatile("cli");
    for (volatile u32 spin = 0; spin < 20000000u; spin++)
        __asm__ volatile("pause");
    /* Only reached without the device: say so, then triple-fault (with -no-reboot QEMU ends). */
    serial_puts("tt-guest: isa-debug-exit device missing; resetting\n");
    static const struct { u16 limit; uptr base; } __attribute__((packed)) no_idt = { 0, 0 };
    load_idt(&no_idt);
    for (;;)
        __asm__ volatile("int3");
}

NORETURN void fatal_exception(uptr vector, uptr error_code, uptr ip)
{
    serial_puts("tt-guest: unexpected exception ");
    put_dec((u32)vector, 1);
    serial_puts(" error ");
    put_hex(error_code, 8);
    serial_puts(" at ");
    put_hex(ip, 2 * sizeof(uptr));
    serial_puts("\n");
    debug_exit(EXIT_EXCEPTION);
}

/* ---- interrupts: 8259 PIC and 8253 PIT ---- */

static void pic_init(void)
{
    outb(0x20, 0x11); outb(0xA0, 0x11);   /* ICW1: init, ICW4 follows */
    outb(0x21, 0x20); outb(0xA1, 0x28);   /* ICW2: vectors 32-39, 40-47 */
    outb(0x21, 0x04); outb(0xA1, 0x02);   /* ICW3: slave on IRQ 2 */
    outb(0x21, 0x01); outb(0xA1, 0x01);   /* ICW4: 8086 mode */
    outb(0x21, 0xFE); outb(0xA1, 0xFF);   /* unmask IRQ 0 (the PIT) only */
}

static void pit_init(u16 divisor)
{
    outb(0x43, 0x34);                     /* channel 0, lobyte/hibyte, mode 2 (rate generator) */
    outb(0x40, divisor & 0xff);
    outb(0x40, divisor >> 8);
}

/* The PIT interrupt handler proper (irq0_entry saves registers and calls it). */
NAMED void timer_tick(void)
{
    timer_ticks++;
    outb(0x20, 0x20);                     /* end of interrupt to the master PIC */
}

static void wait_for_tick(void)
{
    u32 seen = timer_ticks;
    while (timer_ticks == seen)
        __asm__ volatile("hlt");
}

/* ---- the named functions the tests and the demo use ---- */

NAMED void fill_pattern(u8 *block, u32 size, u32 seed)
{
    for (u32 i = 0; i < size; i++)
        block[i] = (u8)(seed + i * 7 + (i >> 3));
}

/* A Fletcher-style checksum, mixed with the round number. */
NAMED u32 compute_checksum(const u8 *data, u32 size, u32 round)
{
    u32 a = 1 + round, b = 0;
    for (u32 i = 0; i < size; i++) {
        a = (a + data[i]) % 65521;
        b = (b + a) % 65521;
    }
    return (b << 16) | a;
}

/* Plain double recursion: fib(n) makes 2*fib(n+1)-1 calls of fib in total. */
__attribute__((optimize("no-optimize-sibling-calls")))
NAMED u32 fib(u32 n)
{
    if (n < 2)
        return n;
    return fib(n - 1) + fib(n - 2);
}

NAMED u32 tail_callee(u32 v)
{
    return (v * 2654435761u) >> 7;
}

/* Ends in a tail call: compiled to a `jmp tail_callee`, not a call. */
NAMED u32 tail_caller(u32 v)
{
    return tail_callee(v + 17);
}

/* One `rep movsb`: `count` iterations of the same instruction. */
NAMED void copy_block(void *dst, const void *src, uptr count)
{
    __asm__ volatile("cld\n\trep movsb" : "+D"(dst), "+S"(src), "+c"(count) : : "memory");
}

NAMED u64 read_tsc(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

struct rtc_time { u8 hours, minutes, seconds; };

static inline u8 cmos_read(u8 reg)
{
    outb(0x70, reg);
    return inb(0x71);
}

static inline u8 bcd_to_binary(u8 v) { return (u8)((v >> 4) * 10 + (v & 0xf)); }

NAMED void read_rtc(struct rtc_time *t)
{
    while (cmos_read(0x0A) & 0x80)        /* update in progress */
        ;
    t->seconds = cmos_read(0x00);
    t->minutes = cmos_read(0x02);
    t->hours = cmos_read(0x04);
    if (!(cmos_read(0x0B) & 0x04)) {      /* BCD mode */
        t->seconds = bcd_to_binary(t->seconds);
        t->minutes = bcd_to_binary(t->minutes);
        t->hours = bcd_to_binary(t->hours);
    }
}

/* ---- main ---- */

#if defined(__x86_64__)
#define GUEST_BITS "64"
#else
#define GUEST_BITS "32"
#endif

void kmain(u32 multiboot_magic, uptr multiboot_info)
{
    (void)multiboot_info;
    serial_init();
    serial_puts("tt-guest " GUEST_BITS "-bit: start");
    if (multiboot_magic != 0x2BADB002)
        serial_puts(" (not started by a multiboot loader)");
    serial_puts("\n");

    idt_init();
    pic_init();
    pit_init(PIT_HZ_DIVISOR);
    __asm__ volatile("sti");

    fill_pattern(source_block, BLOCK_SIZE, 0x5a);
    u64 tsc_start = read_tsc();
    u32 failures = 0;
    for (u32 round = 1; round <= ROUNDS; round++) {
        u32 sum = compute_checksum(source_block, BLOCK_SIZE, round);
        u32 f = fib(FIB_N);
        u32 t = tail_caller(round);
        u32 count = COPY_BASE + round;
        copy_block(dest_block, source_block + round, count);
        struct rtc_time now;
        read_rtc(&now);
        u64 tsc = read_tsc();

        if (f != FIB_EXPECTED || dest_block[count - 1] != source_block[round + count - 1])
            failures++;

        serial_puts("round ");
        put_dec(round, 2);
        serial_puts(" fib(");
        put_dec(FIB_N, 1);
        serial_puts(")=");
        put_dec(f, 1);
        serial_puts(" sum=");
        put_hex(sum, 8);
        serial_puts(" tail=");
        put_hex(t, 8);
        serial_puts(" copy=");
        put_dec(count, 1);
        serial_puts(" ticks=");
        put_dec(timer_ticks, 1);
        serial_puts(" tsc=+");
        put_hex(tsc - tsc_start, 12);
        serial_puts(" rtc=");
        put_dec(now.hours, 2);
        serial_puts(":");
        put_dec(now.minutes, 2);
        serial_puts(":");
        put_dec(now.seconds, 2);
        serial_puts("\n");

        wait_for_tick();
    }

    /* No more ticks from here on: the final count printed below is the number of timer
     * interrupts taken in the whole run. */
    __asm__ volatile("cli");
    serial_puts("tt-guest: timer interrupts ");
    put_dec(timer_ticks, 1);
    serial_puts("\n");
    if (failures) {
        serial_puts("tt-guest: self-check FAILED\n");
        debug_exit(EXIT_SELFCHECK_FAILED);
    }
    serial_puts("tt-guest: done\n");
    debug_exit(EXIT_SUCCESS_CODE);
}

/* ---- freestanding runtime ---- */

void *memcpy(void *dst, const void *src, unsigned long n)
{
    u8 *d = dst;
    const u8 *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, unsigned long n)
{
    u8 *d = dst;
    while (n--)
        *d++ = (u8)c;
    return dst;
}

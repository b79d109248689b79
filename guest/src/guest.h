/*
 * The bundled tt guest: a tiny freestanding kernel, 32-bit (multiboot) and 64-bit.
 * Shared declarations of the C part; the boot code and interrupt stubs are in
 * src/x86_32/ and src/x86_64/.
 */
#ifndef TT_GUEST_H
#define TT_GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned long uptr;   /* pointer-sized on both i386 and x86-64 */

/* The named functions must stay real, separately called functions: tests and the
 * demo stop at them, count calls into them and trace between them. `noipa` keeps gcc
 * from inlining, cloning or specialising them (so the symbol is the code). */
#define NAMED __attribute__((noipa))
#define NORETURN __attribute__((noreturn))

/* Exit codes written to the isa-debug-exit port (0xf4); QEMU exits with (code << 1) | 1. */
enum {
    EXIT_SUCCESS_CODE = 0x10,    /* QEMU exit status 33: all rounds done, self-checks passed */
    EXIT_SELFCHECK_FAILED = 0x20,/* QEMU exit status 65: a self-check of the results failed */
    EXIT_EXCEPTION = 0x30,       /* QEMU exit status 97: an unexpected CPU exception */
};

/* Port I/O: tiny, always inlined (they appear as inlined subroutines in the DWARF). */
static inline void outb(u16 port, u8 value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

/* Provided by the architecture's boot code (boot.S). */
extern void irq0_entry(void);
extern void irq_ignore_entry(void);
extern const uptr exception_entries[32];
extern void load_idt(const void *descriptor);

/* Provided by idt.c. */
void idt_init(void);

/* Provided by kernel.c. */
void kmain(u32 multiboot_magic, uptr multiboot_info);
void timer_tick(void);
NORETURN void fatal_exception(uptr vector, uptr error_code, uptr ip);
void serial_puts(const char *s);

/* gcc may emit calls to these even in freestanding code. */
void *memcpy(void *dst, const void *src, unsigned long n);
void *memset(void *dst, int c, unsigned long n);

#endif

/* The interrupt descriptor table: exceptions 0-31 go to fatal_exception, the PIT
 * (IRQ 0, remapped to vector 32) to timer_tick, the other PIC vectors are ignored. */
#include "guest.h"

#define KERNEL_CODE_SELECTOR 0x08
#define GATE_INTERRUPT_PRESENT 0x8E   /* present, DPL 0, interrupt gate (IF cleared on entry) */

#if defined(__x86_64__)
struct gate {
    u16 offset_low, selector;
    u8 ist, type;
    u16 offset_mid;
    u32 offset_high, reserved;
} __attribute__((packed));
#else
struct gate {
    u16 offset_low, selector;
    u8 zero, type;
    u16 offset_high;
} __attribute__((packed));
#endif

struct idt_descriptor {
    u16 limit;
    uptr base;
} __attribute__((packed));

static struct gate idt[48] __attribute__((aligned(16)));

static void set_gate(unsigned vector, uptr handler)
{
    struct gate *g = &idt[vector];
    g->offset_low = handler & 0xffff;
    g->selector = KERNEL_CODE_SELECTOR;
    g->type = GATE_INTERRUPT_PRESENT;
#if defined(__x86_64__)
    g->ist = 0;
    g->offset_mid = (handler >> 16) & 0xffff;
    g->offset_high = (u32)(handler >> 32);
    g->reserved = 0;
#else
    g->zero = 0;
    g->offset_high = handler >> 16;
#endif
}

void idt_init(void)
{
    for (unsigned v = 0; v < 32; v++)
        set_gate(v, exception_entries[v]);
    set_gate(32, (uptr)irq0_entry);
    for (unsigned v = 33; v < 48; v++)
        set_gate(v, (uptr)irq_ignore_entry);
    static struct idt_descriptor descriptor;
    descriptor.limit = sizeof idt - 1;
    descriptor.base = (uptr)idt;
    load_idt(&descriptor);
}

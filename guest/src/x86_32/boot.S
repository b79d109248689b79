/*
 * 32-bit boot code of the bundled tt guest: the multiboot (v1) header, a flat GDT,
 * the stack, and the interrupt entry stubs. QEMU's `-kernel` loads the ELF and jumps to
 * _start in 32-bit protected mode with EAX = multiboot magic, EBX = multiboot info.
 */
#define MULTIBOOT_MAGIC 0x1BADB002
#define MULTIBOOT_FLAGS 0x00000003   /* page-aligned modules, memory info; ELF gives the layout */

    .section .multiboot, "a"
    .balign 4
    .long MULTIBOOT_MAGIC
    .long MULTIBOOT_FLAGS
    .long -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)

    .section .rodata
    .balign 8
gdt:
    .quad 0                          /* null */
    .quad 0x00CF9A000000FFFF         /* 0x08: flat 32-bit code */
    .quad 0x00CF92000000FFFF         /* 0x10: flat data */
gdt_end:
gdt_descriptor:
    .word gdt_end - gdt - 1
    .long gdt

    .section .bss
    .balign 16
stack_bottom:
    .skip 16384
stack_top:

    .text
    .globl _start
    .type _start, @function
_start:
    cli
    lgdt gdt_descriptor              /* the loader's GDT may be gone: use our own */
    ljmp $0x08, $1f
1:  movw $0x10, %cx
    movw %cx, %ds
    movw %cx, %es
    movw %cx, %ss
    movw %cx, %fs
    movw %cx, %gs
    movl $stack_top, %esp
    xorl %ebp, %ebp
    pushl %ebx                       /* kmain(magic, info) */
    pushl %eax
    call kmain
2:  cli
    hlt
    jmp 2b
    .size _start, . - _start

    .globl load_idt
    .type load_idt, @function
load_idt:
    movl 4(%esp), %eax
    lidt (%eax)
    ret
    .size load_idt, . - load_idt

/* PIT interrupt: save the caller-saved registers, run timer_tick, return. */
    .globl irq0_entry
    .type irq0_entry, @function
irq0_entry:
    pushl %eax
    pushl %ecx
    pushl %edx
    cld
    call timer_tick
    popl %edx
    popl %ecx
    popl %eax
    iret
    .size irq0_entry, . - irq0_entry

/* Masked PIC lines (and a spurious IRQ 7/15): nothing to do, no EOI for spurious ones. */
    .globl irq_ignore_entry
    .type irq_ignore_entry, @function
irq_ignore_entry:
    iret
    .size irq_ignore_entry, . - irq_ignore_entry

/* Exceptions 0-31: push a zero error code where the CPU pushes none, then the vector,
 * and call fatal_exception(vector, error_code, eip), which never returns. */
.macro EXCEPTION vec
exception_\vec:
    .if (\vec == 8) || ((\vec >= 10) && (\vec <= 14)) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
    .else
    pushl $0
    .endif
    pushl $\vec
    jmp exception_common
.endm

    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    EXCEPTION \v
    .endr

exception_common:
    cld
    call fatal_exception             /* arguments are on the stack: vector, error, eip */
    hlt

    .section .rodata
    .balign 4
    .globl exception_entries
exception_entries:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .long exception_\v
    .endr

    .section .note.GNU-stack, "", @progbits

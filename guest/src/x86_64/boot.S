/*
 * 64-bit boot code of the bundled tt guest. QEMU's `-kernel` accepts only 32-bit
 * multiboot ELFs, so guest64.elf is converted to ELF32 (guest64.mb.elf) for loading:
 * _start runs in 32-bit protected mode, builds nothing at run time (the page tables are
 * static data identity-mapping the first 1 GiB with 2 MiB pages), enables PAE and long
 * mode, and jumps to 64-bit code, which calls kmain(magic, info).
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
    .quad 0x00AF9A000000FFFF         /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF         /* 0x10: flat data */
gdt_end:
gdt_descriptor:
    .word gdt_end - gdt - 1
    .quad gdt

    .section .data
    .balign 4096
pml4:
    .quad pdpt + 0x3                 /* present, writable */
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x3
    .fill 511, 8, 0
pd:
    .set page, 0
    .rept 512
    .quad (page << 21) | 0x83        /* present, writable, 2 MiB page */
    .set page, page + 1
    .endr

    .section .bss
    .balign 16
stack_bottom:
    .skip 16384
stack_top:

    .text
    .code32
    .globl _start
    .type _start, @function
_start:
    cli
    movl %eax, %edi                  /* multiboot magic → kmain's first argument */
    movl %ebx, %esi                  /* multiboot info → second */
    lgdt gdt_descriptor
    movl $pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax                  /* PAE */
    movl %eax, %cr4
    movl $0xC0000080, %ecx           /* EFER */
    rdmsr
    orl $0x100, %eax                 /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax            /* PG | PE */
    movl %eax, %cr0
    ljmp $0x08, $long_mode_entry
    .size _start, . - _start

    .code64
    .type long_mode_entry, @function
long_mode_entry:
    movw $0x10, %cx
    movw %cx, %ds
    movw %cx, %es
    movw %cx, %ss
    movw %cx, %fs
    movw %cx, %gs
    movq $stack_top, %rsp
    xorl %ebp, %ebp
    movl %edi, %edi                  /* upper halves are undefined after the mode switch */
    movl %esi, %esi
    call kmain
1:  cli
    hlt
    jmp 1b
    .size long_mode_entry, . - long_mode_entry

    .globl load_idt
    .type load_idt, @function
load_idt:
    lidt (%rdi)
    ret
    .size load_idt, . - load_idt

/* PIT interrupt: save the caller-saved registers, run timer_tick, return. */
    .globl irq0_entry
    .type irq0_entry, @function
irq0_entry:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    cld
    call timer_tick
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    iretq
    .size irq0_entry, . - irq0_entry

/* Masked PIC lines (and a spurious IRQ 7/15): nothing to do, no EOI for spurious ones. */
    .globl irq_ignore_entry
    .type irq_ignore_entry, @function
irq_ignore_entry:
    iretq
    .size irq_ignore_entry, . - irq_ignore_entry

/* Exceptions 0-31: push a zero error code where the CPU pushes none, then the vector,
 * and call fatal_exception(vector, error_code, rip), which never returns. */
.macro EXCEPTION vec
exception_\vec:
    .if (\vec == 8) || ((\vec >= 10) && (\vec <= 14)) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
    .else
    pushq $0
    .endif
    pushq $\vec
    jmp exception_common
.endm

    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    EXCEPTION \v
    .endr

exception_common:
    movq 0(%rsp), %rdi
    movq 8(%rsp), %rsi
    movq 16(%rsp), %rdx
    andq $-16, %rsp
    cld
    call fatal_exception
    hlt

    .section .rodata
    .balign 8
    .globl exception_entries
exception_entries:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exception_\v
    .endr

    .section .note.GNU-stack, "", @progbits

/* Symbols GDB must choose among at one address (assembled with gcc -g: gas emits a
   DW_TAG_subprogram per function symbol, so the DWARF has the aliases too).

   This unit has code in two sections, so its DW_AT_ranges has two ranges and GDB finds
   its functions through an address map (first DIE wins at equal ranges). */
	.text
	.globl	__mm_global
	.type	__mm_global, @function
	.weak	mm_weak
	.type	mm_weak, @function
__mm_global:
mm_weak:
	mov	%rdi, %rax
	add	%rsi, %rax
	nop
	nop
	ret
	.size	__mm_global, .-__mm_global
	.size	mm_weak, .-__mm_global

/* Two local symbols at one address, same size. */
	.type	loc_b, @function
	.type	loc_a, @function
loc_b:
loc_a:
	xor	%eax, %eax
	inc	%eax
	ret
	.size	loc_b, .-loc_b
	.size	loc_a, .-loc_a

/* A global and a local at one address, different sizes (the local covers more). */
	.globl	short_global
	.type	short_global, @function
	.type	long_local, @function
short_global:
long_local:
	nop
	nop
	.size	short_global, .-short_global
	nop
	nop
	ret
	.size	long_local, .-long_local

/* Zero-sized symbols: a function without .size, and a label without type inside it. */
	.globl	no_size
	.type	no_size, @function
no_size:
	nop
	nop
	.globl	plain_label
plain_label:
	nop
	ret

	.section .text.other, "ax", @progbits
	.globl	other_section
	.type	other_section, @function
other_section:
	nop
	ret
	.size	other_section, .-other_section

	.section .note.GNU-stack, "", @progbits

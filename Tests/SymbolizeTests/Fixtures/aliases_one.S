/* Aliases in a unit with one contiguous range: GDB finds its functions by binary search
   over the blocks sorted by start (last DIE wins at equal ranges). */
	.text
	.globl	__cp_global
	.type	__cp_global, @function
	.weak	cp_weak
	.type	cp_weak, @function
__cp_global:
cp_weak:
	mov	%rdi, %rax
	nop
	ret
	.size	__cp_global, .-__cp_global
	.size	cp_weak, .-__cp_global

	.type	zz_local, @function
	.globl	aa_global
	.type	aa_global, @function
zz_local:
aa_global:
	nop
	nop
	ret
	.size	zz_local, .-zz_local
	.size	aa_global, .-aa_global

	.section .note.GNU-stack, "", @progbits

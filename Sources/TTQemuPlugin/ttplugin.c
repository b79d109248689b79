/*
 * tt's QEMU TCG plugin (skeleton): counts executed instructions, reports the
 * count at exit. The sessions work turns it into the branch counter, tracing
 * switch and shared-memory control block.
 */
#include "qemu-plugin-api.h"
#include <stdio.h>
#include <inttypes.h>

TT_PLUGIN_EXPORT int qemu_plugin_version = TT_QEMU_PLUGIN_VERSION;

static uint64_t instructions;

static void on_exec(unsigned int vcpu_index, void *userdata) {
    (void)vcpu_index; (void)userdata;
    instructions++;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++)
        qemu_plugin_register_vcpu_insn_exec_cb(qemu_plugin_tb_get_insn(tb, i), on_exec,
                                               QEMU_PLUGIN_CB_NO_REGS, NULL);
}

static void on_exit(qemu_plugin_id_t id, void *userdata) {
    (void)id; (void)userdata;
    char line[64];
    snprintf(line, sizeof line, "ttplugin: %" PRIu64 " instructions\n", instructions);
    qemu_plugin_outs(line);
}

TT_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    (void)info; (void)argc; (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit, NULL);
    return 0;
}

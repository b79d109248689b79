#ifndef TT_CIPT_SHIM_H
#define TT_CIPT_SHIM_H
/* Intel PT decoder and encoder (libipt, Debian's libipt-dev). */
#include <intel-pt.h>

/* pt_config_init is static inline with a memset: fine; these keep Swift away from
 * the packet union's layout when building packets in tests. */
static inline struct pt_packet tt_pt_packet(enum pt_packet_type type) {
    struct pt_packet p;
    memset(&p, 0, sizeof p);
    p.type = type;
    return p;
}
static inline struct pt_packet tt_pt_packet_ip(enum pt_packet_type type, enum pt_ip_compression ipc, uint64_t ip) {
    struct pt_packet p = tt_pt_packet(type);
    p.payload.ip.ipc = ipc;
    p.payload.ip.ip = ip;
    return p;
}
static inline struct pt_packet tt_pt_packet_tnt8(uint8_t bits, uint64_t payload) {
    struct pt_packet p = tt_pt_packet(ppt_tnt_8);
    p.payload.tnt.bit_size = bits;
    p.payload.tnt.payload = payload;
    return p;
}
static inline struct pt_packet tt_pt_packet_mode_exec64(void) {
    struct pt_packet p = tt_pt_packet(ppt_mode);
    p.payload.mode.leaf = pt_mol_exec;
    p.payload.mode.bits.exec.csl = 1;
    p.payload.mode.bits.exec.csd = 0;
    return p;
}
#endif

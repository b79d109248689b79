#ifndef TT_CXEN_SHIM_H
#define TT_CXEN_SHIM_H
/*
 * Xen 4.17 toolstack libraries for tt's Xen backend. Order matters:
 * xenctrl.h first (defines __XEN_TOOLS__ and pulls in stdint.h), then the rest.
 * LIBXL_API_VERSION 0x041400 is the newest value 4.17 accepts.
 */
#define LIBXL_API_VERSION 0x041400
#include <xenctrl.h>
#include <xenforeignmemory.h>
#include <xenevtchn.h>
#include <xentoollog.h>
#include <libxl.h>
#include <libxl_utils.h>
#include <xen/vm_event.h>
#include <xen/io/ring.h>
#include <sys/mman.h>
#include <string.h>

/* Intel PT RTIT_CTL MSR and the bits Xen's vmtrace accepts (no public header has them). */
#define TT_MSR_RTIT_CTL     0x570u
#define TT_MSR_RTIT_STATUS  0x571u
#define TT_RTIT_CTL_TRACE_EN  (1ull << 0)
#define TT_RTIT_CTL_OS        (1ull << 2)
#define TT_RTIT_CTL_USR       (1ull << 3)
#define TT_RTIT_CTL_TSC_EN    (1ull << 10)
#define TT_RTIT_CTL_DIS_RETC  (1ull << 11)
#define TT_RTIT_CTL_BRANCH_EN (1ull << 13)

/* vm_event ring (io/ring.h macros). */
DEFINE_RING_TYPES(tt_vm_event, vm_event_request_t, vm_event_response_t);

static inline void tt_vm_event_back_ring_init(tt_vm_event_back_ring_t *ring, void *page, size_t size) {
    SHARED_RING_INIT((tt_vm_event_sring_t *)page);
    BACK_RING_INIT(ring, (tt_vm_event_sring_t *)page, size);
}
static inline int tt_vm_event_unconsumed_requests(tt_vm_event_back_ring_t *ring) {
    return RING_HAS_UNCONSUMED_REQUESTS(ring);
}
static inline void tt_vm_event_get_request(tt_vm_event_back_ring_t *ring, vm_event_request_t *out) {
    RING_IDX cons = ring->req_cons;
    memcpy(out, RING_GET_REQUEST(ring, cons), sizeof(*out));
    ring->req_cons = cons + 1;
    ring->sring->req_event = cons + 2;
}
static inline void tt_vm_event_put_response(tt_vm_event_back_ring_t *ring, const vm_event_response_t *rsp) {
    RING_IDX prod = ring->rsp_prod_pvt;
    memcpy(RING_GET_RESPONSE(ring, prod), rsp, sizeof(*rsp));
    ring->rsp_prod_pvt = prod + 1;
    RING_PUSH_RESPONSES(ring);
}

/* The logger: a xentoollog_logger whose vmessage goes to a C function pointer
 * (a Swift @convention(c) closure) with the message already formatted. */
typedef void (*tt_xtl_sink)(void *context, int level, const char *context_name, const char *message);
typedef struct {
    xentoollog_logger vtable;
    tt_xtl_sink sink;
    void *context;
} tt_xtl_logger;

#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
static inline void tt_xtl_vmessage(xentoollog_logger *logger, xentoollog_level level, int errnoval,
                                   const char *context, const char *format, va_list al) {
    tt_xtl_logger *l = (tt_xtl_logger *)logger;
    char buf[1024];
    int n = vsnprintf(buf, sizeof buf, format, al);
    if (n > 0 && errnoval >= 0 && (size_t)n < sizeof buf - 2)
        snprintf(buf + n, sizeof buf - (size_t)n, ": %s", strerror(errnoval));
    if (l->sink) l->sink(l->context, (int)level, context ? context : "", buf);
}
static inline void tt_xtl_progress(xentoollog_logger *logger, const char *context, const char *doing_what,
                                   int percent, unsigned long done, unsigned long total) {
    (void)logger; (void)context; (void)doing_what; (void)percent; (void)done; (void)total;
}
static inline void tt_xtl_destroy(xentoollog_logger *logger) { (void)logger; }

static inline tt_xtl_logger *tt_xtl_logger_new(tt_xtl_sink sink, void *context) {
    tt_xtl_logger *l = (tt_xtl_logger *)calloc(1, sizeof *l);
    if (!l) return NULL;
    l->vtable.vmessage = tt_xtl_vmessage;
    l->vtable.progress = tt_xtl_progress;
    l->vtable.destroy = tt_xtl_destroy;
    l->sink = sink;
    l->context = context;
    return l;
}
static inline xentoollog_logger *tt_xtl_as_logger(tt_xtl_logger *l) { return &l->vtable; }
static inline void tt_xtl_logger_free(tt_xtl_logger *l) { free(l); }

/* dladdr without _GNU_SOURCE (Swift's Glibc module is built without it, so Dl_info
 * is invisible): the same layout as glibc's Dl_info, bound to the same symbol. */
typedef struct {
    const char *dli_fname;
    void *dli_fbase;
    const char *dli_sname;
    void *dli_saddr;
} tt_dl_info;
extern int tt_dladdr(const void *address, tt_dl_info *info) __asm__("dladdr");

/* Physinfo capability bit for vmtrace (a macro Swift does not import: 1u << 6). */
static inline uint32_t tt_physcap_vmtrace(void) { return XEN_SYSCTL_PHYSCAP_vmtrace; }
#endif

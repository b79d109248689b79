/* Compile-time checks of the control file's layout (the test suite checks the
 * documented offsets from Swift). */
#include "ttplugin.h"
#include <stddef.h>

_Static_assert(sizeof(struct tt_shm_record) == 24, "a ring record is 24 bytes");
_Static_assert(offsetof(struct tt_shm_record, brctr) == 16, "brctr is the record's third word");
_Static_assert(TT_SHM_OFF_RING_HEAD % 64 == 0 && TT_SHM_OFF_RING_TAIL % 64 == 0 &&
               TT_SHM_OFF_RING_TAIL - TT_SHM_OFF_RING_HEAD >= 64, "head and tail on their own cache lines");
_Static_assert(TT_SHM_OFF_RING_TAIL + 8 <= TT_SHM_HEADER_BYTES, "the header holds every field");
_Static_assert((TT_SHM_HEADER_BYTES % 4096) == 0, "the ring starts page-aligned");

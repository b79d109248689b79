#ifndef TT_CRC32C_H
#define TT_CRC32C_H
#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI and ext4.
/// `crc` is a previous result (0 to start); the result is final (already inverted),
/// so update(update(0, a), b) == update(0, a ++ b). Uses the SSE4.2 instruction when the
/// CPU has it, a table otherwise.
uint32_t tt_crc32c_update(uint32_t crc, const void *data, size_t length);

#endif

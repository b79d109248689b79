#ifndef TT_CLIBDW_SHIM_H
#define TT_CLIBDW_SHIM_H
/* elfutils' libdw/libelf, seen from Swift only through the Symbolize target. */
#include <gelf.h>
#include <libelf.h>
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#include <elfutils/version.h>
#endif

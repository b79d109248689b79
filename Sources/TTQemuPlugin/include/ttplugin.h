/* tt's QEMU TCG plugin has no API of its own for Swift: QEMU loads it with -plugin. */
#ifndef TT_PLUGIN_H
#define TT_PLUGIN_H
#endif

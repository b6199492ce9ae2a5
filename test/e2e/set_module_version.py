#!/usr/bin/env python3
"""Rewrites the version field (the root table's first field) of a .tlm
module, to test how runtimes treat older and newer modules.

Usage: set_module_version.py IN.tlm OUT.tlm VERSION
"""
import struct
import sys


def main():
    src, dst, version = sys.argv[1], sys.argv[2], int(sys.argv[3])
    b = bytearray(open(src, "rb").read())
    root = 4 + struct.unpack_from("<I", b, 4)[0]
    vtable = root - struct.unpack_from("<i", b, root)[0]
    field = struct.unpack_from("<H", b, vtable + 4)[0]
    assert field != 0, "the module stores no version field"
    struct.pack_into("<I", b, root + field, version)
    open(dst, "wb").write(bytes(b))


if __name__ == "__main__":
    main()

"""Decode stdin with openpi-client's msgpack_numpy and re-encode it to stdout.

Runs inside the openpi virtualenv; the testbed's interop tests use it to check
that its own encoder and decoder agree with openpi's byte for byte.
"""

from __future__ import annotations

import sys

from openpi_client import msgpack_numpy


def main() -> None:
    obj = msgpack_numpy.unpackb(sys.stdin.buffer.read())
    sys.stdout.buffer.write(msgpack_numpy.packb(obj))


if __name__ == "__main__":
    main()

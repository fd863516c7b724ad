"""Generate the Python gRPC code for ``protos/testbed/v1`` into ``testbed/bridge/generated``.

protoc writes ``testbed/v1/x_pb2.py`` with imports like ``from testbed.v1 import common_pb2``,
which would not resolve inside this package. We generate into a scratch directory, flatten
the files into the target and rewrite those imports to ``testbed.bridge.generated``.
Run with ``python -m testbed.bridge.protogen [OUT_DIR]`` (``make proto`` does).
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from testbed.errors import TestbedError

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_DIR = PROTO_ROOT / "testbed" / "v1"
DEFAULT_OUT = Path(__file__).resolve().parent / "generated"
PACKAGE = "testbed.bridge.generated"
_IMPORT = re.compile(r"^from testbed\.v1 import (\w+)", re.MULTILINE)


def generate(out_dir: Path = DEFAULT_OUT) -> list[Path]:
    """Run protoc on every ``.proto`` in ``protos/testbed/v1`` and write package-ready modules.

    Args:
        out_dir: directory that receives ``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py`` and ``__init__.py``.

    Returns:
        The files written, sorted.

    Raises:
        TestbedError: protoc failed (the message carries its output).
    """
    import grpc_tools
    from grpc_tools import protoc  # dev-only dependency: import only when generating

    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not protos:
        raise TestbedError(f"{PROTO_DIR}: no .proto files found")
    include = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as scratch:
        argv = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            *(str(p) for p in protos),
        ]
        code = protoc.main(argv)
        if code != 0:
            raise TestbedError(f"protoc failed with exit code {code} on {PROTO_DIR}")
        for src in sorted((Path(scratch) / "testbed" / "v1").glob("*.py*")):
            text = _IMPORT.sub(rf"from {PACKAGE} import \1", src.read_text())
            dst = out_dir / src.name
            dst.write_text(text)
            written.append(dst)
    init = out_dir / "__init__.py"
    init.write_text('"""Generated gRPC code for protos/testbed/v1 (``make proto``); do not edit."""\n')
    written.append(init)
    return sorted(written)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for path in generate(target):
        print(path)

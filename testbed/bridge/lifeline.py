"""A child's lifeline: the read end of a pipe whose write end only its parent holds.

The child reads end-of-file once the parent is gone, however it died and even before the
child started watching. Kept free of gRPC imports: the openpi peer uses it too.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

LIFELINE_ENV = "TESTBED_PARENT_PIPE_FD"  # the child finds the read end's descriptor here


def popen_with_lifeline(argv: Sequence[str], env: Mapping[str, str], **popen_kwargs: Any
                        ) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` holding the read end of a new lifeline; returns the child and the write end (close it to
    tell the child its parent is gone).

    Both ends are non-inheritable; ``pass_fds`` hands the read end to this child alone.
    """
    lifeline_read, lifeline_write = os.pipe()
    try:
        proc = subprocess.Popen(list(argv), env={**env, LIFELINE_ENV: str(lifeline_read)},
                                pass_fds=(lifeline_read,), **popen_kwargs)
    except BaseException:
        os.close(lifeline_write)
        raise
    finally:
        os.close(lifeline_read)
    return proc, lifeline_write

"""Pseudonymization keys: one secret per site, kept at that site, never written beside the data it protects.

A site's key lives in ``$TESTBED_KEYS_DIR/<site>.key``, else ``$XDG_DATA_HOME/testbed/keys/<site>.key``, else
``~/.local/share/testbed/keys/<site>.key`` (a data directory, not a cache: losing the key changes every
pseudonym), or wherever the launch file's ``sites.sites[i].key_file`` says. It is created on first use with
32 random bytes, readable by its owner only.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from testbed.errors import ScenarioError

KEYS_DIR_ENV = "TESTBED_KEYS_DIR"
KEY_BYTES = 32


def default_keys_dir() -> Path:
    """``$TESTBED_KEYS_DIR``, else ``$XDG_DATA_HOME/testbed/keys``, else ``~/.local/share/testbed/keys``."""
    explicit = os.environ.get(KEYS_DIR_ENV)
    if explicit:
        return Path(explicit)
    data_home = os.environ.get("XDG_DATA_HOME")
    base = Path(data_home) if data_home else Path.home() / ".local" / "share"
    return base / "testbed" / "keys"


def key_path(site: str, key_file: str | Path | None = None) -> Path:
    """Where ``site``'s key is kept: ``key_file`` if given, else ``<keys dir>/<site>.key``."""
    return Path(key_file).expanduser() if key_file is not None else default_keys_dir() / f"{site}.key"


def load_or_create_key(site: str, key_file: str | Path | None = None) -> bytes:
    """The pseudonymization key of ``site``, created (mode 0600) if it does not exist yet.

    Raises:
        ScenarioError: the key file cannot be read or created, or is shorter than 16 bytes.
    """
    path = key_path(site, key_file)
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # O_EXCL: two runs creating the same key at once must not end with different keys
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
        key = path.read_bytes()
    except FileExistsError:
        key = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read or create the pseudonymization key of site {site!r} "
                            f"({exc.strerror or exc}); set {KEYS_DIR_ENV} or sites.sites[].key_file") from exc
    if len(key) < 16:
        raise ScenarioError(f"{path}: the pseudonymization key of site {site!r} has {len(key)} bytes, expected at "
                            "least 16 (delete it to have a new one made; existing pseudonyms will change)")
    return key

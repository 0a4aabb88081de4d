"""CURVE key pairs for the control channel, in one documented directory layout.

``spinlab keys DIR --name alice`` creates (or completes)::

    DIR/
      server.key              server public key: give it to every client (--server-key)
      server.key_secret       server secret key: stays on the lab PC (--control-keys DIR)
      authorized_clients/
        alice.key             public keys of the clients allowed to control runs
      clients/
        alice.key_secret      alice's key pair: hand it to alice (--key); delete it here after

The server only ever reads ``server.key_secret`` and ``authorized_clients/*.key``; revoking a
client is deleting its file there (takes effect for the next run). Secret files are mode 0600.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import zmq
import zmq.auth

from spinlab.errors import ConfigError

SERVER_NAME = "server"
AUTHORIZED_DIR = "authorized_clients"
CLIENTS_DIR = "clients"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def create_keys(directory: str | Path, name: str) -> dict[str, Path]:
    """Create the server pair (if missing) and a client pair ``name``; authorise the client."""
    if not _NAME_RE.match(name or "") or name == SERVER_NAME:
        raise ConfigError(
            f"client name {name!r} must be 1-64 letters, digits, '_', '-' or '.', and not 'server'"
        )
    root = Path(directory)
    authorized = root / AUTHORIZED_DIR
    clients = root / CLIENTS_DIR
    for folder in (root, authorized, clients):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    server_public, server_secret = root / f"{SERVER_NAME}.key", root / f"{SERVER_NAME}.key_secret"
    if not server_secret.exists():
        zmq.auth.create_certificates(root, SERVER_NAME)
        os.chmod(server_secret, 0o600)
    client_public = authorized / f"{name}.key"
    client_secret = clients / f"{name}.key_secret"
    if client_public.exists() or client_secret.exists():
        raise ConfigError(
            f"a client named {name!r} already exists in {root}; pick another name "
            f"or delete {client_public} and {client_secret} first"
        )
    public, secret = zmq.auth.create_certificates(clients, name)
    os.chmod(secret, 0o600)
    shutil.move(public, client_public)
    return {
        "server_public": server_public,
        "server_secret": server_secret,
        "client_public": client_public,
        "client_secret": client_secret,
    }


def load_server_keys(keys_dir: str | Path) -> tuple[bytes, bytes, Path]:
    """(public, secret, authorized_clients dir) for a control server; checks the layout."""
    if keys_dir is None:
        raise ConfigError(
            "the control channel needs --control-keys DIR (create one with "
            "`spinlab keys DIR --name YOU`); it refuses to run unauthenticated"
        )
    root = Path(keys_dir)
    secret_file = root / f"{SERVER_NAME}.key_secret"
    public, secret = _load(secret_file, "server secret key")
    if secret is None:
        raise ConfigError(f"{secret_file} holds no secret key; recreate it with `spinlab keys`")
    authorized = root / AUTHORIZED_DIR
    if not authorized.is_dir() or not any(authorized.glob("*.key")):
        raise ConfigError(
            f"no authorised client keys in {authorized}; add one with `spinlab keys {root} --name NAME`"
        )
    return public, secret, authorized


def authorized_names(authorized: Path) -> dict[bytes, str]:
    """z85 public key -> client name (file stem), to say who sent a command."""
    names = {}
    for path in sorted(authorized.glob("*.key")):
        try:
            public, _ = zmq.auth.load_certificate(path)
        except (OSError, ValueError):
            continue
        names[public] = path.stem
    return names


def load_client_keys(secret_file: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) of a client from its ``NAME.key_secret`` file."""
    public, secret = _load(Path(secret_file), "client secret key")
    if secret is None:
        raise ConfigError(
            f"{secret_file} holds only a public key; --key needs the client's NAME.key_secret file"
        )
    return public, secret


def load_public_key(public_file: str | Path) -> bytes:
    """The server's public key (``server.key``) a client must know to connect."""
    public, _ = _load(Path(public_file), "server public key")
    return public


def _load(path: Path, what: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the {what} from {path}: {exc}") from None
    for key in (public, secret):
        if key is not None and len(key) != 40:
            raise ConfigError(f"{path} does not hold a valid Z85 CURVE key (40 characters)")
    return public, secret

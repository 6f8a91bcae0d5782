"""What a Matrix connector keeps in its data directory across restarts: :class:`StateStore`.

- ``credentials.json``: the access token and device id of the last login (mode 0600), so a
  restart is the same device: no new login, and the end-to-end keys stay valid.
- ``sync.json``: the sync token up to which every event was handed to the bus, so a restart
  resumes there: what arrived while the connector was down is delivered once, and nothing
  from before is replayed.
- ``crypto/``: the end-to-end encryption store of the library (olm/megolm sessions).

Both files belong to one homeserver and user id: a file written for another account is
ignored (and replaced at the next login). Each write replaces its file atomically, so a crash
leaves the old or the new content, never a mix.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Credentials", "StateStore"]

CREDENTIALS = "credentials.json"
SYNC = "sync.json"


@dataclass(frozen=True)
class Credentials:
    """A login: who, on which homeserver, with which device and token."""

    homeserver: str
    user_id: str
    device_id: str
    access_token: str

    def __repr__(self) -> str:  # never the token, in any log or traceback
        return f"Credentials({self.user_id!r}, device {self.device_id!r})"


class StateStore:
    """The files of one account (``homeserver``, ``user_id``) under ``directory``."""

    def __init__(self, directory: Path, homeserver: str, user_id: str) -> None:
        self.directory = directory
        self.homeserver = homeserver
        self.user_id = user_id

    @property
    def crypto_dir(self) -> Path:
        """Where the encryption keys are kept (created on demand)."""
        path = self.directory / "crypto"
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def _mine(self, data: dict[str, Any]) -> bool:
        return data.get("homeserver") == self.homeserver and data.get("user_id") == self.user_id

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # absent or damaged: as if never written
        return data if isinstance(data, dict) and self._mine(data) else None

    def _write(self, name: str, data: dict[str, Any]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / name
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)

    def credentials(self) -> Credentials | None:
        """The stored login of this account, if any."""
        data = self._read(CREDENTIALS)
        if data is None:
            return None
        try:
            return Credentials(
                homeserver=str(data["homeserver"]),
                user_id=str(data["user_id"]),
                device_id=str(data["device_id"]),
                access_token=str(data["access_token"]),
            )
        except KeyError:
            return None

    def save_credentials(self, creds: Credentials) -> None:
        """Keep ``creds`` for the next start."""
        self._write(CREDENTIALS, asdict(creds))

    def forget_credentials(self) -> None:
        """Drop the stored login (the homeserver refused its token)."""
        (self.directory / CREDENTIALS).unlink(missing_ok=True)

    def sync_token(self) -> str | None:
        """The sync token up to which everything was handed on, if any."""
        data = self._read(SYNC)
        token = None if data is None else data.get("next_batch")
        return token if isinstance(token, str) and token else None

    def forget_sync_token(self) -> None:
        """Drop the stored sync position (the homeserver refused it)."""
        (self.directory / SYNC).unlink(missing_ok=True)

    def save_sync_token(self, token: str) -> None:
        """Everything up to ``token`` was handed on."""
        self._write(
            SYNC, {"homeserver": self.homeserver, "user_id": self.user_id, "next_batch": token}
        )

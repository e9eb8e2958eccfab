"""Who may read the per-user series of `/metrics` under private_data: a scraper presenting the
metrics token (`Authorization: Bearer <token>`, as Prometheus sends it with
`authorization: {credentials_file: ...}`). Anyone else reads the per-account and cluster
series only. The token is a 0600 file of the coordinator's (`metrics_token_path`)."""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from scheduler.config import Settings

TOKEN_FILE = "metrics-token"


def metrics_token_path(settings: Settings) -> Path:
    return Path(settings.metrics_token_file) if settings.metrics_token_file else (
        settings.home / "secrets" / TOKEN_FILE)


def ensure_metrics_token(settings: Settings) -> str:
    """The metrics token, made (0600, never through a link) when missing."""
    path = metrics_token_path(settings)
    try:
        return read_token(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return read_token(path)  # made meanwhile
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


def read_token(path: Path) -> str:
    """The token in `path`, refused unless a regular file of this uid that no one else may
    read or write."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as file:
        info = os.fstat(file.fileno())
        if info.st_uid != os.geteuid() or info.st_mode & 0o077 or not stat.S_ISREG(info.st_mode):
            raise PermissionError(f"{path}: the metrics token must be a file of this user, "
                                  "mode 0600")
        return file.read().strip()


def full_access(authorization: str | None, settings: Settings) -> bool:
    """Whether a scrape with this Authorization header may read every series."""
    if not settings.private_data:
        return True
    if not authorization or not authorization.startswith("Bearer "):
        return False
    try:
        token = read_token(metrics_token_path(settings))
    except OSError:
        return False
    return bool(token) and hmac.compare_digest(authorization[len("Bearer "):].strip(), token)

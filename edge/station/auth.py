"""Station users, password hashing, logins and CSRF tokens (standard library only).

Passwords are stored as ``scrypt$N$r$p$salt$hash`` (:func:`hashlib.scrypt`, 16-byte random salt);
a login is a random token in an ``HttpOnly``/``SameSite=Strict`` cookie, stored only as its SHA-256,
with its own CSRF token that every form of that login must send back.

Roles: ``admin`` (the lab's technician or manager: studies, chambers, sessions, validation, users)
and ``grader`` (blinded grading only).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from edge.station.study import StudyError, check_id
from edge.storage import Store

ROLES = ("admin", "grader")
MIN_PASSWORD = 8
LOGIN_HOURS = 12.0
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    """Salted scrypt hash of a password (the string stored in ``users.pw_hash``)."""
    salt = secrets.token_bytes(16)
    h = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${h.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` string (constant-time compare)."""
    try:
        kind, n, r, p, salt, want = stored.split("$")
        if kind != "scrypt":
            return False
        h = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(h.hex(), want)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(store: Store, name: str, role: str, password: str) -> str:
    """Add a user (or set a new password for an existing one of the same role).

    Raises:
        StudyError: Bad name, unknown role, short password, or the name exists with another role.
    """
    name = check_id(name, "user name")
    if role not in ROLES:
        raise StudyError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if len(password) < MIN_PASSWORD:
        raise StudyError(f"the password must have at least {MIN_PASSWORD} characters")
    row = store.db.execute("SELECT role FROM users WHERE name=?", (name,)).fetchone()
    if row and row[0] != role:
        raise StudyError(f"user {name!r} exists already as {row[0]}")
    store.db.execute(
        "INSERT INTO users (name, role, pw_hash, created_at) VALUES (?,?,?,?) "
        "ON CONFLICT(name) DO UPDATE SET pw_hash=excluded.pw_hash",
        (name, role, hash_password(password), time.time()),
    )
    return name


def has_admin(store: Store) -> bool:
    """Whether an admin password was set."""
    return store.db.execute("SELECT 1 FROM users WHERE role='admin' LIMIT 1").fetchone() is not None


def users(store: Store) -> list[dict[str, Any]]:
    """Users by role and name (no hashes)."""
    return [
        {"name": n, "role": r, "created_at": c}
        for n, r, c in store.db.execute("SELECT name, role, created_at FROM users ORDER BY role, name")
    ]


def login(store: Store, name: str, password: str) -> tuple[str, str] | None:
    """Check a password and open a login.

    Returns:
        ``(cookie token, csrf token)``, or ``None`` when the name or password is wrong.
    """
    row = store.db.execute("SELECT pw_hash FROM users WHERE name=?", (name,)).fetchone()
    if row is None:
        verify_password(password, hash_password("x" * MIN_PASSWORD))  # same time for unknown names
        return None
    if not verify_password(password, row[0]):
        return None
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = time.time()
    store.db.execute("DELETE FROM logins WHERE expires_at < ?", (now,))
    store.db.execute(
        'INSERT INTO logins (token_hash, "user", csrf, created_at, expires_at) VALUES (?,?,?,?,?)',
        (_token_hash(token), name, csrf, now, now + LOGIN_HOURS * 3600),
    )
    return token, csrf


def session_user(store: Store, token: str | None) -> dict[str, Any] | None:
    """The user of a login cookie: ``{"name", "role", "csrf"}``, or ``None`` (unknown or expired)."""
    if not token:
        return None
    row = store.db.execute(
        "SELECT u.name, u.role, l.csrf FROM logins l JOIN users u ON u.name = l.user "
        "WHERE l.token_hash=? AND l.expires_at > ?",
        (_token_hash(token), time.time()),
    ).fetchone()
    return {"name": row[0], "role": row[1], "csrf": row[2]} if row else None


def logout(store: Store, token: str | None) -> None:
    """End a login."""
    if token:
        store.db.execute("DELETE FROM logins WHERE token_hash=?", (_token_hash(token),))


def csrf_ok(expected: str, got: str | None) -> bool:
    """Constant-time check of a form's CSRF token."""
    return bool(got) and hmac.compare_digest(expected, got or "")

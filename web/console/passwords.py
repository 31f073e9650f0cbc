"""Console passwords: made and checked here, stored only as hashes.

werkzeug's scrypt (a memory-hard function, with a random salt per hash) is
the only hashing the console uses; the database stores and returns the hash
and never sees a password.
"""

from __future__ import annotations

from werkzeug.security import check_password_hash, generate_password_hash

MIN_PASSWORD_LENGTH = 12

# Checked when a name is unknown, so that an unknown name costs the same time
# as a wrong password (the answer does not tell which names exist).
_DUMMY_HASH = generate_password_hash("not a password of anyone", method="scrypt")


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def password_matches(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        check_password_hash(_DUMMY_HASH, password)
        return False
    return check_password_hash(password_hash, password)

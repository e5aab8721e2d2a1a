"""What counts as a secret in params and regions files, and how an error shows a value without it."""
from __future__ import annotations

import re
from typing import Any

# A key that contains any of these (lower-cased, separators removed) looks like a credential: refused in
# params and in regions files, its value redacted wherever it is shown.
SECRET_WORDS = ("token", "secret", "passw", "pwd", "auth", "bearer", "credential", "key", "cookie",
                "session", "signature")


def looks_secret(key: Any) -> bool:
    """True for any key that looks like a credential, however spelled: ``auth-token``, ``accessToken``,
    ``API_KEY``, ``Bearer``, ``client-secret``, ``passwd`` ..."""
    squeezed = re.sub(r"[^a-z0-9]", "", str(key).lower())
    return any(word in squeezed for word in SECRET_WORDS)


def redact(value: Any) -> Any:
    """``value`` with every secret-looking entry's value hidden, so an error can show what it refused."""
    if isinstance(value, dict):
        return {k: "<redacted>" if looks_secret(k) else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value

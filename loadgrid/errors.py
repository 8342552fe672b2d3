"""The one error type a user can cause and fix; `cli.main` prints each of its messages as one line."""

from __future__ import annotations

import re
from collections.abc import Iterable

# "config: KEY: ..." or "config: KEY.part: ...": the key a config message is about, for the messages raised
# without an explicit key (cross-key checks, the compose lint).
_CONFIG_KEY = re.compile(r"^config: ([A-Za-z_]\w*(?:\.[\w.\[\]]+)?):")


class UserError(Exception):
    """Bad input or an unusable environment, stated as one line with the fix.

    A config with several mistakes raises one `UserError` carrying them all (`UserError.of`): `messages`
    holds one line per mistake, and `str()` joins them with newlines. `exit_code` follows the usual CLI
    convention: 2 for bad input (config, CLI), 1 for the rest.

    `keys` holds, beside each message, the config key it is about (dotted for a part, e.g.
    `capacity_search.max`), or None; `key` is the first message's. The CLI uses them to name the flag that set
    the key ("--users: ...") instead of the key.
    """

    def __init__(self, message: str, exit_code: int = 2, *, more: Iterable[str] = (), key: str | None = None,
                 more_keys: Iterable[str | None] = ()):
        self.messages: tuple[str, ...] = (message, *more)
        given = [key, *more_keys]
        given = (given + [None] * len(self.messages))[:len(self.messages)]
        self.keys: tuple[str | None, ...] = tuple(k or key_of(m) for k, m in zip(given, self.messages, strict=True))
        super().__init__("\n".join(self.messages))
        self.exit_code = exit_code

    @property
    def key(self) -> str | None:
        return self.keys[0]

    @property
    def items(self) -> list[tuple[str, str | None]]:
        """(message, key) for each message."""
        return list(zip(self.messages, self.keys, strict=True))

    @classmethod
    def of(cls, messages: Iterable[str | tuple[str, str | None]], exit_code: int = 2,
           key: str | None = None) -> UserError:
        """One error holding every message (each once, in order); a message may come as (message, key)."""
        unique: dict[str, str | None] = {}
        for item in messages:
            text, item_key = item if isinstance(item, tuple) else (item, None)
            if text not in unique:
                unique[text] = item_key or (key_of(text) if key is None else _part_of(text, key))
        if not unique:
            raise ValueError("UserError.of needs at least one message")
        texts, keys = list(unique), list(unique.values())
        return cls(texts[0], exit_code, more=texts[1:], key=keys[0], more_keys=keys[1:])


def key_of(message: str) -> str | None:
    """The key a "config: KEY: ..." message names, else None."""
    match = _CONFIG_KEY.match(message)
    return match.group(1) if match else None


def _part_of(message: str, key: str) -> str:
    """A message about `key` that names a part of it ("config: expect.json.x: ...") keeps the part."""
    found = key_of(message)
    return found if found and found.split(".")[0] == key else key

"""The one error type a user can cause and fix; `cli.main` prints each of its messages as one line."""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """Bad input or an unusable environment, stated as one line with the fix.

    A config with several mistakes raises one `UserError` carrying them all (`UserError.of`): `messages`
    holds one line per mistake, and `str()` joins them with newlines. `exit_code` follows the usual CLI
    convention: 2 for bad input (config, CLI), 1 for the rest.
    """

    def __init__(self, message: str, exit_code: int = 2, *, more: Iterable[str] = ()):
        self.messages: tuple[str, ...] = (message, *more)
        super().__init__("\n".join(self.messages))
        self.exit_code = exit_code

    @classmethod
    def of(cls, messages: Iterable[str], exit_code: int = 2) -> UserError:
        """One error holding every message (each once, in order)."""
        unique = list(dict.fromkeys(messages))
        if not unique:
            raise ValueError("UserError.of needs at least one message")
        return cls(unique[0], exit_code, more=unique[1:])

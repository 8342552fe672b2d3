"""The one error type a user can cause and fix; `cli.main` prints it as one line."""


class UserError(Exception):
    """Bad input or an unusable environment, stated as one line with the fix.

    `exit_code` follows the usual CLI convention: 2 for bad input (config, CLI), 1 for the rest.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code

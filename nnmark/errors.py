"""One exception type for everything a user can get wrong (the CLI turns it into exit code 2)."""


class NNMarkError(Exception):
    """A user-facing error: bad input, a missing file, an out-of-range option.

    The message is one line that names the problem; the CLI prints it without a traceback.
    """

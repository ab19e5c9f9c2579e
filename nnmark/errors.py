"""One exception type for everything a user can get wrong (the CLI turns it into exit code 2)."""


class NNMarkError(Exception):
    """A user-facing error: bad input, a missing file, an out-of-range option.

    The message is one line that names the problem; the CLI prints it without a traceback.
    """


class KeyInputsMismatch(NNMarkError):
    """The suspect does not run on a key's inputs, or answers them in another shape: the key is
    for another task or input size. `identify` reads the other candidates past it; every other
    error stays an error."""


def one_line(text: object) -> str:
    """Text the other side wrote (a layer name, a TSA URL, a server's error) as one printable
    line: every character a terminal would act on, newlines included, shown as '?' (a value
    holding one printed lines of its own: "verdict: FOUND" under a key's marks)."""
    return "".join(c if c.isprintable() else "?" for c in str(text))

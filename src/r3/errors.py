"""The one exception type stages turn into a one-line error and a non-zero exit."""


class R3Error(Exception):
    """A user-facing error: bad params, bad input file, unreachable source.

    The message names the bad field, row, file or source; stages print it on one line and exit 1.
    """

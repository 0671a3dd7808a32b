"""The one exception type a stage turns into a clear message and a non-zero exit."""


class PipelineError(Exception):
    """A user-facing failure: bad params, bad data, a missing key, a network error.

    The message names what is wrong (key, file, row or ticker) and how to fix it.
    """

"""The one exception type for bad input that a person can fix.

Its message names the file or value at fault and says what is expected; the scripts print it
as a single ``error: ...`` line and exit non-zero, instead of a stack trace.
"""


class InputError(ValueError):
    """Bad input (a path, a file, a setting); the message says what is wrong and what is expected."""

"""The one error type of lglsearch.

Every problem a user can fix (a bad space file, an arch outside its space, a checkpoint of the
wrong shape) raises :class:`LglsearchError` with a message that names the problem and the fix.
The CLI prints that message as one line on stderr and exits non-zero.
"""

__all__ = ["LglsearchError"]


class LglsearchError(ValueError):
    """A user-facing error: its message says what is wrong and what to do."""

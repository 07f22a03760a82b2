"""The one exception type that the CLI turns into a one-line message.

Raise :class:`FedrayError` for anything a user can fix (bad config, bad data,
unavailable weights). The message states what is wrong and how to fix it, in
one line. The CLI prints ``fedray: error: <message>`` and exits with code 2,
without a traceback. Anything else is a bug and keeps its traceback.
"""


class FedrayError(Exception):
    """A user-fixable problem; ``str(err)`` is the one line shown to the user."""

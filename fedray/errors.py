"""The exceptions the CLI turns into one line: user errors, and interrupts.

Raise :class:`FedrayError` for anything a user can fix (bad config, bad data,
unavailable weights). The message states what is wrong and how to fix it, in
one line. The CLI prints ``fedray: error: <message>`` and exits with code 2,
without a traceback. Anything else is a bug and keeps its traceback.
"""


class FedrayError(Exception):
    """A user-fixable problem; ``str(err)`` is the one line shown to the user."""


class ConfigError(FedrayError):
    """The config cannot be composed or fails its checks (``fedray.compose``): a bad key, value or choice."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: stop, clean up, exit 128 + the signal number (a BaseException, like Ctrl-C)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class SweepInterrupted(Exception):
    """Tune stopped before every trial ended: its state is saved and the resume command printed."""

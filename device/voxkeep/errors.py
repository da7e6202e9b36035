"""One exception root for voxkeep.

Every error a *user* can cause (bad config, bad audio file, bad model file, bad CLI argument) is a
``VoxkeepError``. The CLI prints ``str(error)`` as one line and exits non-zero; anything else is a bug
and keeps its traceback. Each subclass also inherits the builtin error it narrows, so callers that
catch ``ValueError`` or ``OSError`` keep working.
"""


class VoxkeepError(Exception):
    """Base of all user-facing errors; the message must name the problem and the fix."""

    def __str__(self) -> str:
        """The message with control characters escaped.

        Messages quote what the user gave (a TOML key, a file name, a device name), and any of those may hold a
        newline or a terminal escape. Escaping here, where every error becomes its line, keeps that line one
        line and keeps a hostile file from writing to the terminal, whichever raise site forgot to."""
        text = super().__str__()
        if text.isprintable():
            return text
        return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class ConfigError(VoxkeepError, ValueError):
    """The config file or a command-line option is wrong."""


class AudioInputError(VoxkeepError, OSError):
    """An audio file, stream or device cannot be read."""


class ModelError(VoxkeepError, OSError):
    """A model file is missing, truncated or altered."""


class StateError(VoxkeepError, OSError):
    """Persisted daemon state cannot be read or written."""


class VaultError(VoxkeepError, OSError):
    """The recording vault cannot complete an operation."""

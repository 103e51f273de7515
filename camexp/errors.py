"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class CamexpError(Exception):
    """A mistake the user can fix (bad config, missing file, bad image); never shown as a traceback."""


class ConfigError(CamexpError):
    """A config file that does not validate; the message names the file and the key."""

"""Typed errors. The CLI prints any NfhiqlError as one line and exits with status 2."""


class NfhiqlError(Exception):
    """Base class for user-facing errors (bad input files, bad configs, refused overwrites)."""


class ConfigError(NfhiqlError, ValueError):
    """A configuration file or override is invalid; the message names the file and key."""


class DatasetError(NfhiqlError, ValueError):
    """A dataset file is missing, malformed or inconsistent; the message names file and field."""


class OutputExistsError(NfhiqlError, FileExistsError):
    """An output path already exists and overwriting was not requested."""


class BagError(NfhiqlError, ValueError):
    """A rosbag2 recording cannot be converted; the message names the bag, topic and field."""


class ExpertError(NfhiqlError, ValueError):
    """An expert policy file is missing or malformed, or the expert is too weak for the job asked of it."""

"""The project's one exception type: a message written for people, printed by the CLIs without a traceback."""


class DfsearchError(Exception):
    """Bad input or a failed precondition, with a message that names the file, key or address."""


class ConfigError(DfsearchError):
    """A search space or trial config that cannot be used (names the key and what was expected)."""


class DataError(DfsearchError):
    """A dataset, video or cache entry that cannot be used (names the file and what was wrong)."""


class WeightsError(DfsearchError):
    """A pretrained-weights file that is missing, corrupt or does not fit the model."""

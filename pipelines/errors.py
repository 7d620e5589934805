"""One exception root for everything dxpipe reports to a user.

The CLI prints a DxpipeError as one line and exits 2; anything else is a bug and keeps its traceback.
"""


class DxpipeError(Exception):
    """Root of every error dxpipe reports to a user: the message names the field, the value and the fix."""


class ConfigError(DxpipeError):
    """The configuration file or its values are invalid."""


class DataError(DxpipeError):
    """An input file cannot be read as the dataset it claims to be."""


class DataGateError(DxpipeError):
    """ExampleValidator found anomalies: the run stops before training."""

"""One exception root for everything dxpipe reports to a user.

It lives in the lowest layer (`schemas/`, which every layer may import) so that components, models and
serving raise errors of the same family without importing `pipelines/`: the CLI prints any `DxpipeError`
as one `dxpipe: error: ...` line and exits 2; anything else is a bug and keeps its traceback. One root,
rather than per-layer roots mapped by the CLI, because a layer's error then cannot be missed by a new
command's `except` clause.
"""


class DxpipeError(Exception):
    """Root of every error dxpipe reports to a user: the message names the field, the value and the fix."""


class ConfigError(DxpipeError):
    """The configuration file or its values are invalid."""


class DataError(DxpipeError):
    """An input file cannot be read as the dataset it claims to be."""


class DataGateError(DxpipeError):
    """ExampleValidator found anomalies: the run stops before training."""

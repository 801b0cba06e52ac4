"""Named exceptions. Each says what went wrong and, where it can, what to do."""


class CurateError(Exception):
    """Base for errors curate raises on purpose."""


class ConfigError(CurateError):
    """A recipe or source file is invalid."""


class IngestError(CurateError):
    """A file could not be read as its declared format.

    `file` names the culprit (relative to the source root) when a unit holds many files.
    """

    def __init__(self, message: str, file: str | None = None):
        super().__init__(message)
        self.file = file


class UnsupportedFormat(CurateError):
    """A format family is declared but has no adapter yet."""


class TooManyErrors(CurateError):
    """The run stopped because too many work units failed."""


class MissingDependency(CurateError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str | None = None):
        fix = f"pip install 'curate[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{package} is required for this step: {fix}")

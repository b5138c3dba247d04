"""Errors a user can fix: shown as one line with a non-zero exit code, never a traceback."""


class UserError(Exception):
    """A problem with the user's input (path, rules file, model); exit code 2 by default."""

    exit_code = 2


class RulesError(UserError):
    """A rules file is malformed: the message names the file and the field."""

    def __init__(self, path, field: str, problem: str):
        super().__init__(f"{path}: {field}: {problem}")
        self.path, self.field = path, field


class ModelError(UserError):
    """The model cannot be found or loaded."""


class ShardSpecError(UserError):
    """A shard spec names nothing that exists."""


class ResumeConflict(UserError):
    """--out holds a run with a different model, taxonomy or thresholds."""


class DependencyMissing(UserError):
    """An optional package is needed for what was asked."""


def require(module: str, extra: str):
    """Import an optional module or fail with an actionable message."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyMissing(f"'{module}' is needed for this; pip install 'vlmaudit[{extra}]'") from exc

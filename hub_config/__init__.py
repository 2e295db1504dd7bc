"""The workbench's configuration: the domain model and the hub built from it."""

from .loader import ConfigError, load_config
from .model import WorkbenchConfig

__all__ = ["ConfigError", "WorkbenchConfig", "load_config"]

"""Configuration: YAML -> validated objects -> an :class:`Experiment`."""

from .build import Experiment
from .errors import ConfigError
from .load import apply_override, read_config, validate
from .schema import Config

__all__ = ["Config", "ConfigError", "Experiment", "apply_override", "read_config", "validate"]

"""The typed config (:mod:`~fedray.config.schema`), its checks and how it is composed from ``conf/``."""

from fedray.config.compose import (
    CONF_DIR,
    as_dict,
    check_group_choices,
    compose_config,
    normalise_overrides,
    replace,
    to_typed,
)
from fedray.config.schema import Config

__all__ = ["CONF_DIR", "Config", "as_dict", "check_group_choices", "compose_config", "normalise_overrides",
           "replace", "to_typed"]

"""Which registered model the filter is: its MLflow registry name and the alias it follows.

Built once from the settings (``labelloop.runtime.filter_model_ref``) and passed to training,
the gate and serving, so all three act on the same name and alias.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FilterModelRef:
    name: str
    """Registered model name in the MLflow registry."""
    alias: str
    """The alias the filter serves and the gate's approval moves (``production`` by default)."""

    @property
    def alias_uri(self) -> str:
        """``models:/<name>@<alias>``: what serving follows."""
        return f"models:/{self.name}@{self.alias}"

    def version_uri(self, version: str | int) -> str:
        """``models:/<name>/<version>``: one registered version."""
        return f"models:/{self.name}/{version}"

"""What a config reload (SIGHUP, ``POST /-/reload``) changes, decided before
anything is switched.

:func:`plan` compares the running config with a new one that already passed
modelmon.preflight: models whose definition, reference profile and windows
are unchanged are *kept* (their counters and windows carry on), the others
are *added*, *changed* (started afresh) or *removed*.  Settings that live in
sockets and threads started once (ingest, proxy, simulator, inference logs)
cannot change without a restart: a new config that changes them is refused
with that reason, and the running config stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import Config, ConfigError
from .drift.reference import ReferenceProfile

#: Config sections a reload cannot apply (they need a restart).
RESTART_SECTIONS = ("ingest", "proxy", "simulator", "logs")


@dataclass
class ReloadPlan:
    """The outcome of comparing two configs (module docs)."""

    kept: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    windows_changed: bool = False
    web_changed: bool = False

    def summary(self) -> dict[str, Any]:
        """What changed, for the log line and the ``/-/reload`` response."""
        return {"kept": self.kept, "added": self.added, "changed": self.changed, "removed": self.removed,
                "windows_changed": self.windows_changed, "web_changed": self.web_changed}


def _hash(profile: ReferenceProfile | None) -> str | None:
    return profile.hash if profile is not None else None


def plan(old: Config, new: Config, old_profiles: dict[str, ReferenceProfile | None],
         new_profiles: dict[str, ReferenceProfile | None]) -> ReloadPlan:
    """Compare the running config with a checked new one; raises ConfigError
    (naming the section) when the new one needs a restart."""
    for section in RESTART_SECTIONS:
        if getattr(old, section) != getattr(new, section):
            raise ConfigError(f"changed, and {section} settings apply only at start: restart modelmon to apply "
                              "them (the running config stays)", file=new.source or None, field_path=section)
    out = ReloadPlan(windows_changed=old.windows != new.windows, web_changed=old.web != new.web)
    old_models = {m.name: m for m in old.models}
    for m in new.models:
        before = old_models.get(m.name)
        if before is None:
            out.added.append(m.name)
        elif (before == m and not out.windows_changed
              and _hash(old_profiles.get(m.name)) == _hash(new_profiles.get(m.name))):
            out.kept.append(m.name)
        else:
            out.changed.append(m.name)
    out.removed = [name for name in old_models if new.model(name) is None]
    return out

"""Feature configuration: windows, vocabulary sizes and behavioural parameters."""

from __future__ import annotations

from dataclasses import dataclass, fields

from portrait.errors import ConfigError


@dataclass(frozen=True)
class FeatureConfig:
    windows: tuple[int, ...] = (7, 30, 90, 180, 365)
    top_categories: int = 10
    top_brands: int = 5
    top_channels: int = 5
    top_payment_methods: int = 5
    campaign_response_days: int = 7
    # "Payday buying": orders on the 1st..Nth and the 15th..(14+N)th of the month.
    payday_days: int = 5
    # Window of the behaviour ratios (view-to-cart, cart-to-purchase) and active event days.
    behaviour_window: int = 90
    trend_window: int = 90

    def __post_init__(self) -> None:
        # Types first: a TOML file can give "abc" or 5 where a list of day counts belongs.
        if not isinstance(self.windows, tuple) or not all(_whole(w) for w in self.windows):
            raise ConfigError(f"windows must be a list of whole day counts, e.g. [7, 30, 90], got {self.windows!r}")
        for field in fields(self):
            if field.name != "windows" and not _whole(getattr(self, field.name)):
                raise ConfigError(f"{field.name} must be a whole number, got {getattr(self, field.name)!r}")
        if not self.windows or any(w <= 0 for w in self.windows):
            raise ConfigError(f"windows must be positive day counts, got {self.windows}")
        if tuple(sorted(set(self.windows))) != tuple(self.windows):
            raise ConfigError(f"windows must be distinct and ascending, got {self.windows}")
        for name in ("top_categories", "top_brands", "top_channels", "top_payment_methods"):
            if not 1 <= getattr(self, name) <= 998:  # slots below catalogue.OTHER_SLOT
                raise ConfigError(f"{name} must be between 1 and 998, got {getattr(self, name)}")
        if not 1 <= self.payday_days <= 14:
            raise ConfigError("payday_days must be between 1 and 14")
        if self.behaviour_window not in self.windows:  # the behaviour family counts events over it
            raise ConfigError(
                f"behaviour_window = {self.behaviour_window} must be one of the windows {list(self.windows)}"
            )
        for name in ("trend_window", "campaign_response_days"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1 day, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict) -> FeatureConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown feature settings {sorted(unknown)}; known: {sorted(known)}")
        values = dict(data)
        if isinstance(values.get("windows"), list | tuple):
            values["windows"] = tuple(values["windows"])
        return cls(**values)

    @property
    def longest_window(self) -> int:
        return max(self.windows)


def _whole(value) -> bool:
    """An int and not a bool (TOML's true would otherwise be 1)."""
    return isinstance(value, int) and not isinstance(value, bool)

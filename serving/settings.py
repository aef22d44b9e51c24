"""What ``portrait serve`` serves: every folder and file the API reads, in one object.

``portrait serve`` builds a :class:`ServeSettings` from its options, and ``build_app(settings)``
(``serving/api.py``) the app from it. With ``--workers N`` uvicorn starts each worker from an
import string, so the settings travel to the workers as one JSON environment variable
(:meth:`ServeSettings.to_environment`, :meth:`ServeSettings.from_environment`). The API key is
never written there: it stays in ``PORTRAIT_API_KEY``, which the workers inherit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from portrait.errors import ConfigError, PortraitError

API_KEY_ENV = "PORTRAIT_API_KEY"
SETTINGS_ENV = "PORTRAIT_SERVE_SETTINGS"
DEFAULT_SCORES = Path("outputs/scores")
# The models `portrait score` and a refresh score when none are named.
DEFAULT_MODELS = ("repurchase_90d", "high_value_90d", "spend_90d", "personas")
# Reasons computed (when the scores store none) for a list's first rows only, by `portrait list`
# and the refresh's lists: TreeSHAP explains a few hundred rows a second here (174-732 measured).
REASONS_FIRST = 10_000
# The furthest a page of the API may start (offset=): past any list; a 500-digit offset was taken.
MAX_OFFSET = 10_000_000


class ServeSettings(BaseModel):
    """Where the API reads from. With ``runs`` (a ``portrait refresh`` output root) the scores,
    tags and segment members come from the run ``LATEST`` names, looked up on every request,
    so a new run is served without a restart; ``scores``, ``tags`` and ``rfm`` are then not
    used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scores: Path = Field(DEFAULT_SCORES, description="Folder of portrait score outputs (LATEST, scores_<date>)")
    runs: Path | None = Field(None, description="portrait refresh output root; overrides scores and tags")
    alias: str = Field("champion", description="Registry alias for on-demand scoring and computed reasons")
    segments: Path | None = Field(None, description="Saved segments folder (default: segments/ or PORTRAIT_SEGMENTS)")
    tags: Path | None = Field(None, description="Folder of portrait tags apply outputs (/tags counts)")
    tags_library: Path | None = Field(None, description="Tag library TOML (default: the packaged retail template)")
    rfm: Path | None = Field(None, description="Folder of portrait rfm outputs (profiles' RFM; a run has its own)")
    data: Path | None = Field(None, description="Data set for consent and crowds (default: the scores' own)")
    keys: Path | None = Field(None, description="Keys file ([keys.NAME] hash and role); none: PORTRAIT_API_KEY")
    audit: Path | None = Field(None, description="Audit log (default: PORTRAIT_AUDIT_LOG, else outputs/audit.log)")
    api_key: SecretStr | None = Field(None, exclude=True, description="The single key, from PORTRAIT_API_KEY")

    def resolved(self) -> ServeSettings:
        """The same settings with every path absolute, as workers started elsewhere need them."""
        updates = {
            name: Path(value).resolve()
            for name, value in self.model_dump(exclude={"api_key"}).items()
            if isinstance(value, Path)
        }
        return self.model_copy(update=updates)

    def to_environment(self) -> dict[str, str]:
        """The variables a worker needs to build the same app (the key excluded)."""
        return {SETTINGS_ENV: self.resolved().model_dump_json(exclude={"api_key"})}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ServeSettings:
        """The settings ``portrait serve`` put in the environment, the key from PORTRAIT_API_KEY."""
        environ = os.environ if environ is None else environ
        text = environ.get(SETTINGS_ENV)
        if not text:
            raise ConfigError(f"{SETTINGS_ENV} is not set: workers are started by portrait serve")
        try:
            settings = cls.model_validate_json(text)
        except ValidationError as exc:
            raise ConfigError(f"{SETTINGS_ENV} does not hold serve settings: {exc.errors()[0]['msg']}") from None
        key = environ.get(API_KEY_ENV) or None
        return settings.model_copy(update={"api_key": SecretStr(key) if key else None})

    @property
    def key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key is not None else None


def check_serve_paths(settings: ServeSettings) -> None:
    """What the server is told to read or write is there before it starts (a server that
    starts on a data set that does not exist answers 503 to every profile instead)."""
    if settings.data is not None and not Path(settings.data).exists():
        raise PortraitError(f"--data {settings.data} does not exist")
    if settings.runs is not None:
        from serving.refresh import check_refresh_root

        check_refresh_root(settings.runs)
    for option, folder in (("--segments", settings.segments), ("--tags", settings.tags), ("--rfm", settings.rfm)):
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise PortraitError(f"{option} {folder} is a file, not a folder")
    if settings.audit is not None:
        try:
            Path(settings.audit).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PortraitError(f"--audit {settings.audit}: cannot create its folder ({exc.strerror})") from None
        try:  # opened as each pull's record is written (appending, created when missing)
            os.close(os.open(settings.audit, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        except OSError as exc:  # the server started and refused every pull with a 503
            raise PortraitError(
                f"--audit {settings.audit} cannot be written ({exc.strerror}): every list pull would be refused"
            ) from None

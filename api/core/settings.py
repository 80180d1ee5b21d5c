"""Settings, read once from the environment (and `.env`) and passed into `create_app`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]  # api/core/settings.py -> the repository
MiB = 1024 * 1024
MIN_SECRET_LENGTH = 32  # characters; `openssl rand -hex 32` gives 64


# The environment names of the secrets, for the one line that refuses a weak one.
SECRET_NAMES = {"admin_token": "ADMIN_TOKEN", "metrics_token": "WMA_METRICS_TOKEN"}


class Settings(BaseSettings):
    """Every setting has a safe default; env names are `WMA_<NAME>` except the two well-known ones."""

    # hide_input_in_errors: a refused setting (a short token, a URL with its password) is never echoed.
    model_config = SettingsConfigDict(env_prefix="WMA_", env_file=".env", extra="ignore", hide_input_in_errors=True)

    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
        description="Postgres URL; unset: an embedded Postgres in <data_dir>/pgdata.",
    )
    admin_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("ADMIN_TOKEN", "admin_token"),
        description="Bearer token for the admin routes; unset: they answer 403.",
    )
    max_upload_bytes: int = Field(10 * MiB, ge=1, description="Largest accepted photo file.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest accepted photo area (width x height).")
    max_faces: int = Field(20, ge=1, description="Faces reported per photo, largest first.")
    age_weights: Path | None = Field(
        None, description="Age model, an exported .onnx file (`python -m ml export`); unset: the shipped one "
        "(ml/weights/, see ml/MODEL_CARD.md)."
    )
    concurrency_slots: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="Photos processed at once."
    )
    slot_wait_seconds: float = Field(2.0, gt=0, description="Longest wait for a slot before answering 503.")
    request_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest time the work on one photo may take before answering 503.")
    live_connections: int = Field(
        4, ge=0, description="Live streams (the `/live` WebSocket) one worker serves at once, a slot each; "
        "0: live mode off.")
    live_max_frame_bytes: int = Field(
        1 * MiB, ge=1, le=16 * MiB, description="Largest frame a live stream may send; larger: the stream is closed.")
    live_frames_per_second: float = Field(
        20.0, gt=0, description="Frames a second one live stream may send (a second's worth at once); faster: "
        "the stream is closed.")
    live_idle_seconds: float = Field(
        30.0, gt=0, description="A live stream that sends no frame for this long is closed.")
    rate_limit_per_minute: float = Field(
        60.0, ge=0, description="POST requests per minute per client address (token bucket); 0: no limit.")
    rate_limit_burst: int = Field(20, ge=1, description="POST requests a client address may send at once.")
    auth_failures_per_minute: int = Field(
        10, ge=0, description="Wrong tokens a client address may send in a minute before 429; 0: no throttle.")
    data_dir: Path = Field(Path("data"), description="Local data (the embedded Postgres, trained models).")
    models_dir: Path | None = Field(
        None, description="Where retrained models are written (never overwritten); unset: <data_dir>/models.")
    model_poll_seconds: float = Field(
        2.0, gt=0, le=3600, description="How often each worker asks the registry which model is active.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS, comma-separated; none by default."
    )
    frontend_dir: Path = Field(REPO_ROOT / "frontend", description="Static UI served at /, if it exists.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="Worker processes of `python -m api serve`.")
    metrics_token: SecretStr | None = Field(None, description="Bearer token for /metrics; unset: /metrics is open.")
    retention_days: int | None = Field(
        None, ge=1, le=36500, description="Submissions older than this many days are removed; unset: kept.")
    # `python -m api retrain` (api/learning/retrain.py); its command-line options override these.
    retrain_data: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [REPO_ROOT.parent / "shared" / "data" / "utkface" / "images"],
        description="Shared UTKFace-style folders a retrain fine-tunes on besides the submissions, comma-separated.")
    retrain_epochs: int = Field(1, ge=1, le=100, description="Epochs of a retrain's fine-tuning.")
    retrain_submission_weight: float = Field(
        5.0, gt=0, le=1000, description="Loss weight of a submission in a retrain, against 1 for a shared image.")
    retrain_held_out_share: float = Field(
        0.2, ge=0, lt=1, description="Share of submissions kept out of retraining to evaluate on (by id hash).")
    retrain_min_held_out: int = Field(
        5, ge=1, description="Held-out submissions a retrain needs before it may promote a model.")

    @field_validator("admin_token", "metrics_token", mode="after")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """A secret, when set, is at least 32 characters without spaces: a short one is refused at start-up."""
        secret = value.get_secret_value() if value is not None else ""
        if not secret:
            return value  # unset or blank: admin routes 403, /metrics open
        name = SECRET_NAMES[info.field_name or ""]
        if len(secret) < MIN_SECRET_LENGTH or any(c.isspace() or not c.isprintable() for c in secret):
            raise ValueError(f"{name} must be at least {MIN_SECRET_LENGTH} printable characters without spaces; "
                             "make one with `openssl rand -hex 32`")
        return value

    @field_validator("retention_days", mode="before")
    @classmethod
    def _blank_days_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("retrain_data", mode="before")
    @classmethod
    def _split_folders(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(f.strip()) for f in value.split(",") if f.strip()]
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def admin_token_value(self) -> str | None:
        """The admin token, or None when unset or blank."""
        token = self.admin_token.get_secret_value() if self.admin_token else ""
        return token or None

    @property
    def metrics_token_value(self) -> str | None:
        """The /metrics token, or None when unset or blank (then /metrics is open)."""
        token = self.metrics_token.get_secret_value() if self.metrics_token else ""
        return token or None

"""Configuration from environment variables prefixed ``LABSHARE_``.

The defaults run the demo with nothing set: an embedded SQLite file under ``./var``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABSHARE_", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_DATA_DIR / 'labshare.db'}",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db.",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = Field(
        default="FULL",
        description="FULL: a committed write survives power loss, not only a killed process.",
    )
    sqlite_busy_timeout_ms: int = 10_000
    db_pool_size: int = 10
    db_echo: bool = False

    secret_key: str | None = Field(
        default=None,
        description="Signs anonymous CSRF tokens; unset: the one made at migration time.",
    )
    base_url: str = "http://127.0.0.1:8000"
    timezone: str = "Asia/Shanghai"
    default_locale: Literal["zh-CN", "en"] = "zh-CN"

    access_token_ttl_s: int = 3600
    session_idle_timeout_s: int = 2 * 3600
    session_absolute_timeout_s: int = 12 * 3600
    cookie_secure: bool = True
    login_failures_per_account: int = 5
    login_failures_per_address: int = 20
    login_throttle_window_s: int = 15 * 60
    max_body_bytes: int = 1024 * 1024
    max_upload_bytes: int = Field(
        default=20 * 1024 * 1024, description="Service-request attachments and reports."
    )

    pending_request_ttl_hours: int = Field(
        default=48, description="A pending request expires unanswered after this (or at its start)."
    )
    check_in_grace_minutes: int = Field(
        default=15, description="Check in this early; nobody by start plus this is a no-show."
    )
    no_show_suspension_threshold: int = Field(
        default=3, ge=0, description="This many no-shows within the window suspend booking rights."
    )
    no_show_window_days: int = 90
    suspension_days: int = 30
    booking_creations_per_minute: int = Field(default=30, ge=0)
    outage_bookings_action: Literal["flag", "cancel"] = Field(
        default="flag",
        description="What a new outage does to bookings it falls on: flag them or cancel them.",
    )
    catalogue_public: bool = Field(
        default=True, description="Anyone may read the catalogue without logging in."
    )

    smtp_host: str = Field(
        default="", description="Empty: e-mail is off (in-app notices still work)."
    )
    smtp_port: int = 25
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = "labshare <noreply@labshare.local>"
    smtp_timeout_s: float = 10.0
    delivery_max_attempts: int = Field(
        default=8, description="Then a delivery is parked as failed."
    )
    delivery_lease_s: int = Field(default=120, description="A claimed delivery's lease.")
    reminder_offsets_minutes: list[int] = Field(default_factory=lambda: [24 * 60, 60])
    webhook_timeout_s: float = 5.0

    log_level: str = "INFO"
    log_json: bool = True


@lru_cache
def get_settings() -> Settings:
    return Settings()

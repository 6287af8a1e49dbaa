"""Platform-wide key/value settings kept in the database: the generated secret, the demo mark."""

from __future__ import annotations

import secrets

from sqlmodel import Field, Session, SQLModel, select

DEMO_MARK = "demo_database"
SECRET_KEY = "secret_key"


class PlatformSetting(SQLModel, table=True):
    __tablename__ = "platform_setting"

    key: str = Field(primary_key=True, max_length=100)
    value: str = Field(max_length=2000)


def get_value(session: Session, key: str) -> str | None:
    row = session.exec(select(PlatformSetting).where(PlatformSetting.key == key)).first()
    return row.value if row else None


def set_value(session: Session, key: str, value: str) -> None:
    row = session.get(PlatformSetting, key)
    if row is None:
        session.add(PlatformSetting(key=key, value=value))
    else:
        row.value = value
        session.add(row)
    session.flush()


def secret_key(session: Session) -> str:
    """The platform's signing secret, generated on first use and shared by every process."""
    value = get_value(session, SECRET_KEY)
    if value is None:
        value = secrets.token_urlsafe(48)
        set_value(session, SECRET_KEY, value)
    return value


def is_demo(session: Session) -> bool:
    return get_value(session, DEMO_MARK) == "true"


def mark_demo(session: Session) -> None:
    set_value(session, DEMO_MARK, "true")

"""Demo bookings: upcoming confirmed bookings of the demo researcher and requests waiting in
the demo lab manager's approval queue, placed in free time found the way users find it."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, select

from booking import queries, service
from booking.rules import OperatedBy
from booking.schemas import BookingCreate
from booking.service import BookingPolicy
from core.accounts.models import User
from core.auth.principal import load_principal
from core.clock import now
from core.settings import Settings
from instruments.models import Instrument

# (asset code, demo user, operated by, hours, purpose)
DEMO_BOOKINGS = [
    ("CQU-EM-001", "researcher", OperatedBy.SELF, 2, "锂电正极材料形貌观察"),
    ("CQU-ATC-006", "researcher", OperatedBy.SELF, 2, "催化剂物相分析"),
    ("CQU-ATC-002", "researcher", OperatedBy.SELF, 1, "有机合成产物氢谱表征"),
    ("CQU-EM-002", "firm", OperatedBy.STAFF, 2, "纳米颗粒透射电镜表征（企业委托）"),
    ("CQU-ATC-005", "firm", OperatedBy.STAFF, 2, "涂层表面元素价态分析"),
    ("CQU-EM-001", "zhang.wei", OperatedBy.STAFF, 2, "土壤矿物颗粒观察"),
]


def seed_bookings(session: Session, *, domain: str) -> None:
    policy = BookingPolicy.from_settings(Settings())
    start = now() + timedelta(days=1)
    for code, local, operated_by, hours, purpose in DEMO_BOOKINGS:
        instrument = session.exec(select(Instrument).where(Instrument.asset_code == code)).one()
        user = session.exec(select(User).where(User.email == f"{local}@{domain}")).one()
        free = queries.availability(
            session,
            instrument_id=instrument.id or 0,
            start=start,
            end=start + timedelta(days=14),
            min_minutes=hours * 60,
        )
        if not free:
            continue
        begin = free[0][0]
        service.create_booking(
            session,
            actor=load_principal(session, user),
            policy=policy,
            data=BookingCreate(
                instrument_id=instrument.id or 0,
                start=begin,
                end=begin + timedelta(hours=hours),
                purpose=purpose,
                operated_by=operated_by,
                charge_account="课题组经费卡 2026-017",
            ),
        )

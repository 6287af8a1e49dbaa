"""The demo database: realistic Chongqing organisations and a login for every role.

A demo database carries a mark; ``--reset`` wipes only a marked database, so pointing the demo
at production data by accident destroys nothing. Each later capability adds its demo data here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlmodel import Session, func, select

from core import platform
from core.accounts import service as accounts
from core.accounts.models import Organisation, User
from core.accounts.rules import (
    CREDIT_CODE_ALPHABET,
    OrganisationType,
    Role,
    credit_code_check_char,
)
from core.accounts.schemas import OrganisationCreate, RoleGrant, UserCreate
from core.db import Database
from web import dbschema
from web.demo_bookings import seed_bookings
from web.demo_catalogue import seed_catalogue
from web.demo_history import seed_history

DEMO_PASSWORD = "labshare-demo"
DEMO_DOMAIN = "demo.labshare.cn"


class NotADemoDatabase(Exception):
    """The database holds someone's data: the demo will not touch it."""


def _organisation_code_check(first8: str) -> str:
    """GB 11714 check character of the 9-character organisation code inside a credit code."""
    weights = (3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(ch, 36) * w for ch, w in zip(first8, weights, strict=True))
    value = 11 - total % 11
    return {10: "X", 11: "0"}.get(value, str(value))


def make_credit_code(division: str, organisation_code8: str) -> str:
    """A well-formed enterprise credit code (91 = enterprise registered with market regulation)."""
    body = f"91{division}{organisation_code8}{_organisation_code_check(organisation_code8)}"
    assert all(ch in CREDIT_CODE_ALPHABET for ch in body), body
    return body + credit_code_check_char(body)


ORGANISATIONS: list[dict[str, object]] = [
    {"name": "重庆大学", "name_en": "Chongqing University", "type": OrganisationType.UNIVERSITY,
     "district": "沙坪坝区"},
    {"name": "重庆师范大学", "name_en": "Chongqing Normal University",
     "type": OrganisationType.UNIVERSITY, "district": "沙坪坝区"},
    {"name": "西南大学", "name_en": "Southwest University", "type": OrganisationType.UNIVERSITY,
     "district": "北碚区"},
    {"name": "重庆交通大学", "name_en": "Chongqing Jiaotong University",
     "type": OrganisationType.UNIVERSITY, "district": "南岸区"},
    {"name": "重庆邮电大学", "name_en": "Chongqing University of Posts and Telecommunications",
     "type": OrganisationType.UNIVERSITY, "district": "南岸区"},
    {"name": "中国科学院重庆绿色智能技术研究院",
     "name_en": "Chongqing Institute of Green and Intelligent Technology, CAS",
     "type": OrganisationType.INSTITUTE, "district": "北碚区", "cluster": "liangjiang"},
    {"name": "重庆两江分析测试中心", "name_en": "Liangjiang Analysis and Testing Centre",
     "type": OrganisationType.INSTITUTE, "district": "两江新区"},
    {"name": "重庆市科学技术局", "name_en": "Chongqing Science and Technology Bureau",
     "type": OrganisationType.GOVERNMENT, "district": "渝北区", "cluster": "other"},
    {"name": "重庆明月湖智能装备有限公司",
     "name_en": "Mingyue Lake Intelligent Equipment Co., Ltd.",
     "type": OrganisationType.ENTERPRISE, "district": "两江新区", "is_sme": True,
     "is_tech_sme": True, "credit_code": make_credit_code("500112", "MA5U7K3D")},
    {"name": "重庆金凤生物医药科技有限公司", "name_en": "Jinfeng Biomedical Technology Co., Ltd.",
     "type": OrganisationType.ENTERPRISE, "district": "重庆高新区", "is_sme": True,
     "is_tech_sme": True, "credit_code": make_credit_code("500107", "MA61B2QX")},
    {"name": "重庆迎龙新材料股份有限公司", "name_en": "Yinglong New Materials Co., Ltd.",
     "type": OrganisationType.ENTERPRISE, "district": "南岸区", "is_sme": True,
     "credit_code": make_credit_code("500108", "78120453")},
    {"name": "重庆渝新汽车零部件有限公司", "name_en": "Yuxin Auto Parts Co., Ltd.",
     "type": OrganisationType.ENTERPRISE, "district": "重庆经开区",
     "controlling_group": "渝新控股集团", "credit_code": make_credit_code("500108", "20318876")},
    {"name": "重庆渝新检测技术有限公司", "name_en": "Yuxin Testing Technology Co., Ltd.",
     "type": OrganisationType.ENTERPRISE, "district": "两江新区", "is_sme": True,
     "controlling_group": "渝新控股集团", "credit_code": make_credit_code("500112", "MA60C9LN")},
]  # fmt: skip

# (local part, name, organisation, roles, locale) — the first six are the documented logins.
USERS: list[tuple[str, str, str, list[Role], str]] = [
    ("admin", "平台管理员", "重庆市科学技术局", [Role.ADMIN], "zh-CN"),
    ("manager", "李建国", "重庆大学", [], "zh-CN"),
    ("researcher", "王晓雨", "重庆大学", [Role.RESEARCHER], "zh-CN"),
    ("firm", "陈思远", "重庆明月湖智能装备有限公司", [Role.RESEARCHER], "zh-CN"),
    ("finance", "赵敏", "重庆市科学技术局", [Role.FINANCE], "zh-CN"),
    ("planner", "刘洋", "重庆市科学技术局", [Role.PLANNER], "zh-CN"),
    ("zhang.wei", "张伟", "西南大学", [Role.RESEARCHER], "zh-CN"),
    ("li.na", "李娜", "重庆邮电大学", [Role.RESEARCHER], "zh-CN"),
    ("sun.hao", "孙浩", "重庆金凤生物医药科技有限公司", [Role.RESEARCHER], "zh-CN"),
    ("emma.chen", "Emma Chen", "中国科学院重庆绿色智能技术研究院", [Role.RESEARCHER], "en"),
]

LOGINS = [
    ("admin", "admin"),
    ("manager", "lab manager"),
    ("researcher", "researcher (university)"),
    ("firm", "researcher (SME)"),
    ("finance", "finance (platform-wide)"),
    ("planner", "planner"),
]


def demo_email(local: str) -> str:
    return f"{local}@{DEMO_DOMAIN}"


def seed(session: Session) -> None:
    """Insert the demo organisations and users into an empty, migrated database."""
    org_ids: dict[str, int] = {}
    user_ids: dict[str, int] = {}
    for values in ORGANISATIONS:
        organisation = accounts.create_organisation(
            session, actor_id=None, data=OrganisationCreate.model_validate(values)
        )
        org_ids[organisation.name] = organisation.id or 0
    for local, name, org, roles, locale in USERS:
        user_ids[local] = _create_demo_user(session, local, name, org_ids[org], roles, locale)
    seed_catalogue(session, org_ids=org_ids, user_ids=user_ids)
    seed_bookings(session, domain=DEMO_DOMAIN)
    seed_history(session, domain=DEMO_DOMAIN, demo_logins=[local for local, *_rest in USERS])


def _create_demo_user(
    session: Session, local: str, name: str, organisation_id: int, roles: list[Role], locale: str
) -> int:
    return (
        accounts.create_user(
            session,
            actor_id=None,
            data=UserCreate(
                email=demo_email(local),
                name=name,
                organisation_id=organisation_id,
                locale=locale,
                password=DEMO_PASSWORD,
                roles=[RoleGrant(role=role) for role in roles],
            ),
        ).id
        or 0
    )


def _wipe(database: Database) -> None:
    database.dispose()
    if database.dialect == "sqlite":
        path = make_url(database.url).database
        if path and path != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                Path(path + suffix).unlink(missing_ok=True)
        return
    with database.write_engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE")
        connection.exec_driver_sql("CREATE SCHEMA public")


def _has_data(database: Database) -> bool:
    """Whether anyone has put organisations or users in (a migration alone puts neither)."""
    with database.transaction(write=False) as session:
        users = session.exec(select(func.count()).select_from(User)).one()
        organisations = session.exec(select(func.count()).select_from(Organisation)).one()
        return bool(users or organisations)


def prepare(database: Database, *, reset: bool, say: Callable[[str], object] = print) -> None:
    """Make ``database`` a current demo database, building it if needed."""
    state = dbschema.schema_state(database)
    if state.error:
        raise NotADemoDatabase(state.describe())
    if state.current is not None:
        with database.transaction(write=False) as session:
            marked = platform.is_demo(session)
        if not marked and _has_data(database):
            raise NotADemoDatabase(
                f"{database.url} holds data and is not a demo database; the demo will not touch "
                "it. Point LABSHARE_DATABASE_URL at another database."
            )
        if marked and not reset:
            dbschema.upgrade(database)
            say("Using the existing demo database (--reset rebuilds it).")
            return
        if marked:
            say("Wiping the demo database.")
            _wipe(database)
    else:
        tables = sa.inspect(database.read_engine).get_table_names()
        if tables:
            raise NotADemoDatabase(
                f"{database.url} has tables but no labshare schema; the demo will not touch it."
            )
    say("Creating the schema.")
    dbschema.upgrade(database)
    say("Adding the demo data.")
    with database.transaction() as session:
        seed(session)
        platform.mark_demo(session)


def logins_text(*, host: str, port: int) -> str:
    rows = "\n".join(f"  {demo_email(local):32} {what}" for local, what in LOGINS)
    return f"\nlabshare demo: http://{host}:{port}/\nLogins (password: {DEMO_PASSWORD}):\n{rows}\n"

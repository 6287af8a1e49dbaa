"""The demo catalogue: facilities of Chongqing's universities, institutes and testing centres,
sixty instruments with realistic specifications and prices (demo_data/instruments.csv, in the
documented import format, loaded through the same import facilities use), testing services and
qualifications for the demo researcher."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlmodel import Session, select

from core.clock import now
from instruments import service, transfer
from instruments.models import Instrument
from instruments.schemas import (
    FacilityCreate,
    OpeningSpanIn,
    QualificationGrant,
    TestingServiceCreate,
)

INSTRUMENTS_CSV = Path(__file__).parent / "demo_data" / "instruments.csv"

OFFICE = [
    OpeningSpanIn(weekday=d, start=s, end=e)
    for d in range(5)
    for s, e in (("08:30", "12:00"), ("14:00", "17:30"))
]
LONG_DAYS = [OpeningSpanIn(weekday=d, start="08:00", end="22:00") for d in range(6)]
ROUND_THE_CLOCK = [OpeningSpanIn(weekday=d, start="00:00", end="24:00") for d in range(7)]


@dataclass(frozen=True)
class DemoFacility:
    key: str
    organisation: str
    name: str
    name_en: str
    district: str
    address: str
    contact: str
    phone: str
    hours: list[OpeningSpanIn]
    managed_by_demo_manager: bool = False


FACILITIES = [
    DemoFacility(
        "cqu-atc",
        "重庆大学",
        "重庆大学分析测试中心",
        "CQU Analysis and Testing Centre",
        "沙坪坝区",
        "重庆市沙坪坝区沙正街174号 A区理科楼",
        "周老师",
        "023-65102345",
        OFFICE,
        True,
    ),
    DemoFacility(
        "cqu-em",
        "重庆大学",
        "重庆大学电子显微镜中心",
        "CQU Electron Microscopy Centre",
        "沙坪坝区",
        "重庆市沙坪坝区大学城南路55号 虎溪校区材料楼",
        "黄老师",
        "023-65678123",
        LONG_DAYS,
        True,
    ),
    DemoFacility(
        "cqu-hpc",
        "重庆大学",
        "重庆大学高性能计算中心",
        "CQU High-Performance Computing Centre",
        "沙坪坝区",
        "重庆市沙坪坝区大学城南路55号 信息中心",
        "邓工",
        "023-65678900",
        ROUND_THE_CLOCK,
        True,
    ),
    DemoFacility(
        "swu-bio",
        "西南大学",
        "西南大学生命科学公共实验平台",
        "SWU Life Sciences Core Facility",
        "北碚区",
        "重庆市北碚区天生路2号 生命科学学院",
        "杨老师",
        "023-68250011",
        OFFICE,
    ),
    DemoFacility(
        "cigit-nano",
        "中国科学院重庆绿色智能技术研究院",
        "绿色智能院微纳制造与表征平台",
        "CIGIT Micro-Nano Fabrication and Characterisation Platform",
        "北碚区",
        "重庆市北碚区水土高新园方正大道266号",
        "罗工",
        "023-65935000",
        LONG_DAYS,
    ),
    DemoFacility(
        "lj-testing",
        "重庆两江分析测试中心",
        "两江分析测试中心检测实验室",
        "Liangjiang Testing Laboratory",
        "两江新区",
        "重庆市两江新区金渝大道99号",
        "何工",
        "023-67880012",
        OFFICE,
    ),
    DemoFacility(
        "cqjtu-civil",
        "重庆交通大学",
        "重庆交通大学土木工程材料测试平台",
        "CQJTU Civil Engineering Materials Testing Platform",
        "南岸区",
        "重庆市南岸区学府大道66号",
        "唐老师",
        "023-62652211",
        OFFICE,
    ),
    DemoFacility(
        "cqupt-emc",
        "重庆邮电大学",
        "重庆邮电大学电磁兼容与射频测试平台",
        "CQUPT EMC and RF Testing Platform",
        "南岸区",
        "重庆市南岸区崇文路2号",
        "马工",
        "023-62461234",
        OFFICE,
    ),
    DemoFacility(
        "cqnu-chem",
        "重庆师范大学",
        "重庆师范大学化学与材料表征平台",
        "CQNU Chemistry and Materials Characterisation Platform",
        "沙坪坝区",
        "重庆市沙坪坝区大学城中路37号",
        "冯老师",
        "023-65362345",
        OFFICE,
    ),
]


# (facility, name, English name, standard, internal, external, enterprise yuan per sample,
#  turnaround days, daily sample capacity, instruments, CMA-accredited)
# fmt: off
TESTING_SERVICES = [
    ("cqu-atc", "核磁共振氢谱测试", "1H NMR", "JY/T 0578-2020", 80, 150, 220, 3, 40, ["CQU-ATC-002"], False),
    ("cqu-atc", "X射线衍射物相分析", "XRD phase analysis", "JY/T 0587-2020", 100, 180, 260, 5, 30, ["CQU-ATC-006"], False),
    ("cqu-atc", "痕量元素 ICP-MS 测定", "Trace elements by ICP-MS", "GB/T 34826-2017", 150, 300, 450, 7, 40, ["CQU-ATC-004"], True),
    ("cqu-em", "扫描电镜形貌观察与能谱分析", "SEM imaging and EDS", "GB/T 17359-2012", 200, 350, 500, 3, 20, ["CQU-EM-001"], False),
    ("cqu-em", "透射电镜样品观察", "TEM imaging", "JY/T 0581-2020", 600, 1000, 1500, 10, 6, ["CQU-EM-002"], False),
    ("swu-bio", "流式细胞检测", "Flow cytometry", "", 150, 260, 380, 5, 30, ["SWU-BIO-002"], False),
    ("swu-bio", "二代测序建库与测序", "NGS library prep and sequencing", "", 900, 1300, 1800, 20, 24, ["SWU-BIO-004"], False),
    ("lj-testing", "金属材料化学成分分析", "Chemical composition of metals", "GB/T 4336-2016", 150, 200, 260, 3, 60, ["LJ-T-003"], True),
    ("lj-testing", "金属材料室温拉伸试验", "Tensile test at room temperature", "GB/T 228.1-2021", 120, 160, 200, 3, 50, ["LJ-T-005"], True),
    ("lj-testing", "中性盐雾试验", "Neutral salt spray test", "GB/T 10125-2021", 20, 30, 40, 10, 200, ["LJ-T-006"], True),
    ("lj-testing", "零部件尺寸精密测量", "Precision dimensional measurement", "GB/T 16857.2-2017", 200, 280, 380, 5, 20, ["LJ-T-007"], True),
    ("cqjtu-civil", "混凝土抗压强度检测", "Concrete compressive strength", "GB/T 50081-2019", 60, 90, 130, 3, 120, ["CQJTU-001"], True),
    ("cqupt-emc", "车载电子零部件辐射发射测试", "Radiated emission of vehicle components", "GB/T 18655-2018", 1500, 2200, 3200, 10, 4, ["CQUPT-001"], True),
    ("cqnu-chem", "单晶结构解析", "Single-crystal structure determination", "", 300, 500, 700, 10, 8, ["CQNU-001"], False),
]
# fmt: on

# Instruments the demo researcher is trained on.
RESEARCHER_QUALIFIED = [
    "CQU-ATC-002", "CQU-ATC-006", "CQU-ATC-007", "CQU-ATC-010", "CQU-EM-001", "CQU-EM-005",
    "CQU-HPC-001",
]  # fmt: skip


def seed_catalogue(session: Session, *, org_ids: dict[str, int], user_ids: dict[str, int]) -> None:
    """Facilities, instruments, testing services and qualifications for the demo."""
    facility_ids: dict[str, int] = {}
    for demo_facility in FACILITIES:
        facility = service.create_facility(
            session,
            actor=None,
            data=FacilityCreate(
                organisation_id=org_ids[demo_facility.organisation],
                name=demo_facility.name,
                name_en=demo_facility.name_en,
                district=demo_facility.district,
                address=demo_facility.address,
                contact_name=demo_facility.contact,
                contact_phone=demo_facility.phone,
                opening_hours=demo_facility.hours,
                opens_on_holidays=demo_facility.key == "cqu-hpc",
            ),
        )
        facility_ids[demo_facility.key] = facility.id or 0
        if demo_facility.managed_by_demo_manager:
            service.add_manager(
                session, actor=None, facility_id=facility.id or 0, user_id=user_ids["manager"]
            )

    transfer.import_instruments(session, transfer.read_rows(INSTRUMENTS_CSV))
    instrument_ids = dict(session.exec(select(Instrument.asset_code, Instrument.id)).all())

    for (
        key,
        name,
        name_en,
        standard,
        internal,
        external,
        enterprise,
        days,
        capacity,
        codes,
        cma,
    ) in TESTING_SERVICES:
        service.create_testing_service(
            session,
            actor=None,
            data=TestingServiceCreate(
                facility_id=facility_ids[key],
                name=name,
                name_en=name_en,
                method_standard=standard,
                price_internal_fen=internal * 100,
                price_external_academic_fen=external * 100,
                price_enterprise_fen=enterprise * 100,
                turnaround_days=days,
                daily_sample_capacity=capacity,
                cma_accredited=cma,
                cnas_accredited=cma and key == "lj-testing",
                instrument_ids=[instrument_ids[c] for c in codes],
            ),
        )

    expiry = now() + timedelta(days=365)
    for code in RESEARCHER_QUALIFIED:
        service.grant_qualification(
            session,
            actor=None,
            data=QualificationGrant(
                user_id=user_ids["researcher"],
                instrument_id=instrument_ids[code],
                expires_at=expiry,
                note="上机培训考核合格",
            ),
        )

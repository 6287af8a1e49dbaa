"""Chongqing's districts and the three science-and-technology clusters of the action plan."""

from __future__ import annotations

from enum import StrEnum


class Cluster(StrEnum):
    WESTERN_SCIENCE_CITY = "western_science_city"
    LIANGJIANG = "liangjiang"
    GUANGYANG_BAY = "guangyang_bay"
    OTHER = "other"


CLUSTER_NAMES: dict[Cluster, tuple[str, str]] = {
    Cluster.WESTERN_SCIENCE_CITY: ("西部（重庆）科学城", "Western (Chongqing) Science City"),
    Cluster.LIANGJIANG: ("两江协同创新区", "Liangjiang Collaborative Innovation Zone"),
    Cluster.GUANGYANG_BAY: ("广阳湾智创生态城", "Guangyang Bay Smart Innovation Eco-City"),
    Cluster.OTHER: ("其他", "Other"),
}

# The park at the heart of each cluster, shown next to its name.
CLUSTER_PARKS: dict[Cluster, str] = {
    Cluster.WESTERN_SCIENCE_CITY: "金凤科创园",
    Cluster.LIANGJIANG: "明月湖科创园",
    Cluster.GUANGYANG_BAY: "迎龙科创园",
}

# Chongqing's 38 districts and counties (区县), then the three management areas.
DISTRICTS: tuple[str, ...] = (
    "万州区", "黔江区", "涪陵区", "渝中区", "大渡口区", "江北区", "沙坪坝区", "九龙坡区",
    "南岸区", "北碚区", "綦江区", "大足区", "渝北区", "巴南区", "长寿区", "江津区",
    "合川区", "永川区", "南川区", "璧山区", "铜梁区", "潼南区", "荣昌区", "开州区",
    "梁平区", "武隆区",
    "城口县", "丰都县", "垫江县", "忠县", "云阳县", "奉节县", "巫山县", "巫溪县",
    "石柱土家族自治县", "秀山土家族苗族自治县", "酉阳土家族苗族自治县", "彭水苗族土家族自治县",
    "两江新区", "重庆高新区", "重庆经开区",
)  # fmt: skip

# The cluster a district mainly belongs to, used as the suggestion when none is given.
# 北碚区 lies in two clusters; the action plan lists it first under 西部（重庆）科学城.
DISTRICT_CLUSTER: dict[str, Cluster] = {
    **dict.fromkeys(
        ("重庆高新区", "沙坪坝区", "九龙坡区", "北碚区", "江津区", "璧山区"),
        Cluster.WESTERN_SCIENCE_CITY,
    ),
    **dict.fromkeys(("两江新区", "渝北区"), Cluster.LIANGJIANG),
    **dict.fromkeys(("南岸区", "重庆经开区"), Cluster.GUANGYANG_BAY),
}


def cluster_for_district(district: str) -> Cluster:
    return DISTRICT_CLUSTER.get(district, Cluster.OTHER)

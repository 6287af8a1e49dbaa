"""The streamed files: lazy, valid, and in constant memory."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator
from typing import Any

from openpyxl import load_workbook

from reports import export
from reports.export import Column, Sheet

COLUMNS = [
    Column("name", "名称", "Name"),
    Column("hours", "机时", "Hours", "h", "hours"),
    Column("share", "共享率", "Sharing", "%", "ratio"),
]


def rows(count: int, seen: list[int] | None = None) -> Iterator[dict[str, Any]]:
    for n in range(count):
        if seen is not None:
            seen.append(n)
        # Varied text, as real names are (a repeated one would compress to nothing).
        name = f"仪器 <{n}> & {n * 7919 % 100_003}\x01"
        yield {"name": name, "hours": n / 4, "share": None if n % 2 else 0.5}


def test_an_xlsx_is_written_while_its_rows_are_still_being_read() -> None:
    seen: list[int] = []
    chunks, read_when_sent = [], []
    totals = {"name": "合计", "hours": 1.0}
    for chunk in export.xlsx_stream([Sheet("表", COLUMNS, rows(20_000, seen), totals)]):
        chunks.append(chunk)
        read_when_sent.append(len(seen))
    assert chunks[0].startswith(b"PK")
    assert len(chunks) > 3
    # Bytes went out while most rows were still unread.
    assert min(n for n in read_when_sent if n) < 10_000
    sheet = load_workbook(io.BytesIO(b"".join(chunks))).active
    values = list(sheet.iter_rows(values_only=True))
    assert values[0] == ("名称 Name", "机时 Hours", "共享率 Sharing")
    assert values[1] == (None, "h", "%")
    assert values[2] == ("仪器 <0> & 0", 0, 0.5)  # escaped, control characters dropped
    assert values[3][2] is None
    assert values[-1] == ("合计", 1, None)
    assert len(values) == 2 + 20_000 + 1


def peak_while_writing(count: int) -> int:
    tracemalloc.start()
    written = sum(len(chunk) for chunk in export.xlsx_stream([Sheet("表", COLUMNS, rows(count))]))
    assert written > 0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_the_rows() -> None:
    small, large = peak_while_writing(2_000), peak_while_writing(20_000)
    assert large < small * 1.5 + 200_000


def test_csv_starts_with_a_byte_order_mark_and_stable_keys() -> None:
    data = b"".join(export.csv_stream(COLUMNS, rows(3)))
    text = data.decode("utf-8")
    assert text.startswith("\ufeffname,hours,share\r\n")
    assert text.splitlines()[2].endswith(",0.25,")

"""Utilization reports: the metrics of DESIGN.md by SQL aggregation, low-use lists, exports.

Reads only: reports never write. Depends on billing, booking, instruments and core, never web.
"""

# The indexes the reports read through are declared with the package (reports/models.py).
from reports import models as _models  # noqa: F401

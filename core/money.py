"""Money is integer fen (分), CNY. Rates are Decimal; rounding happens once per line."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

FEN_PER_YUAN = 100


class MoneyError(ValueError):
    """Not an amount of money in yuan that fen can hold exactly."""


def yuan_to_fen(value: str | int | Decimal) -> int:
    """Parse an amount in yuan ("1234.5", 1234) into fen; more than two decimals is an error."""
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation as exc:
        raise MoneyError(f"Not an amount: {value!r}.") from exc
    if not amount.is_finite():
        raise MoneyError(f"Not an amount: {value!r}.")
    fen = amount * FEN_PER_YUAN
    if fen != fen.to_integral_value():
        raise MoneyError(f"{value} has fractions of a fen (at most two decimals).")
    return int(fen)


def fen_to_yuan(fen: int) -> Decimal:
    return (Decimal(fen) / FEN_PER_YUAN).quantize(Decimal("0.01"))


def format_yuan(fen: int) -> str:
    """¥1,234.50"""
    return f"¥{fen_to_yuan(fen):,.2f}"


def round_fen(amount: Decimal) -> int:
    """Round one line's amount to whole fen, half up (never round a sum of rounded lines)."""
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))

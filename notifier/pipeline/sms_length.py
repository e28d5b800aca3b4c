"""How long a text message is, the way Twilio counts it, and cutting one to fit.

A message that fits the GSM-7 alphabet is sent in 7-bit septets (the extension characters
`^{}\\[~]|€` take two); anything else makes the whole message UCS-2, counted in UTF-16 code
units (an emoji is two). One segment holds 160 septets or 70 units; a longer message is split
into segments of 153 septets or 67 units. notifier measures the 1,600 limit in those units, so
a cut message is never rejected, and cuts on a character boundary (never inside an emoji, a
flag or an accented letter built from two code points), with a visible ellipsis: `...` for a
GSM-7 text (the `…` character would turn the whole message into UCS-2) and `…` otherwise.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = "^{}\\[~]|€\f"
_GSM7 = frozenset(GSM7_BASIC) | frozenset(GSM7_EXTENSION)
_ZWJ = "\u200d"


@dataclass(frozen=True)
class SmsLength:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def is_gsm7(text: str) -> bool:
    return all(ch in _GSM7 for ch in text)


def sms_length(text: str) -> SmsLength:
    """Encoding, units and segments of `text`, as Twilio would send it."""
    if is_gsm7(text):
        units = len(text) + sum(ch in GSM7_EXTENSION for ch in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    segments = 0 if units == 0 else 1 if units <= single else -(-units // multi)
    return SmsLength(encoding, units, segments)


def sms_units(text: str) -> int:
    return sms_length(text).units


def fit_sms(text: str, limit: int) -> str:
    """`text` if it fits `limit` units; else its longest prefix that, cut on a character (at a
    word if one is near) and ended with an ellipsis, does. Never empty for a non-empty text."""
    if sms_units(text) <= limit:
        return text
    low, high = 0, len(text)  # the longest prefix length that fits lies in [low, high)
    while low < high - 1:
        middle = (low + high) // 2
        if sms_units(_cut(text, middle)) <= limit:
            low = middle
        else:
            high = middle
    cut = _cut(text, low)
    return cut if sms_units(cut) <= limit else "…"[: max(limit, 1)]


def _cut(text: str, length: int) -> str:
    """The first `length` code points, backed off to a character boundary and, when a word
    boundary is within 30 characters, to it; then the ellipsis."""
    end = _boundary(text, length)
    prefix = text[:end]
    space = max(prefix.rfind(" "), prefix.rfind("\n"))
    if space > 0 and space >= len(prefix) - 30:
        prefix = prefix[:space]
    prefix = prefix.rstrip()
    if not prefix:  # one character longer than the budget: keep what fits of it
        prefix = text[:end].rstrip()
    return prefix + ("..." if is_gsm7(prefix) else "…")


def _boundary(text: str, end: int) -> int:
    """The largest index <= `end` that does not split a user-perceived character."""
    while 0 < end < len(text) and _joins_previous(text, end):
        end -= 1
    if 0 < end < len(text) and _is_regional(text[end]) and _is_regional(text[end - 1]):
        run = 0  # a flag is two regional indicators: keep pairs whole
        while end - run - 1 >= 0 and _is_regional(text[end - run - 1]):
            run += 1
        end -= run % 2
    return end


def _joins_previous(text: str, index: int) -> bool:
    """Whether `text[index]` belongs to the character before it."""
    ch, previous = text[index], text[index - 1]
    return (
        previous == _ZWJ
        or ch == _ZWJ
        or unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or 0xFE00 <= ord(ch) <= 0xFE0F  # variation selectors
        or 0x1F3FB <= ord(ch) <= 0x1F3FF  # skin tones
        or 0xE0020 <= ord(ch) <= 0xE007F  # tag characters (subdivision flags)
    )


def _is_regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF

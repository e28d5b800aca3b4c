"""SMS length the way Twilio counts it, and cuts that keep characters whole and never empty."""

from __future__ import annotations

import pytest

from notifier.pipeline.render import SMS_MAX_CHARS, Renderer, default_template_dir
from notifier.pipeline.sms_length import fit_sms, sms_length


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 0),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # an extension character takes two septets
        ("é" * 160, "GSM-7", 160, 1),  # in the GSM-7 basic alphabet
        ("ç" * 70, "UCS-2", 70, 1),  # lower-case ç is not (only Ç is)
        ("a" * 69 + "…", "UCS-2", 70, 1),
        ("🎉" * 35, "UCS-2", 70, 1),  # an emoji is two UTF-16 units
        ("🎉" * 36, "UCS-2", 72, 2),
    ],
)
def test_segments_are_counted_like_twilio(
    text: str, encoding: str, units: int, segments: int
) -> None:
    length = sms_length(text)
    assert (length.encoding, length.units, length.segments) == (encoding, units, segments)


def test_an_emoji_heavy_text_is_cut_not_emptied() -> None:
    """The old cut subtracted UTF-16 units from a character count and returned ''."""
    cut = fit_sms("🎉" * 1600, SMS_MAX_CHARS)
    assert cut.endswith("…") and cut.startswith("🎉")
    assert sms_length(cut).units <= SMS_MAX_CHARS
    assert sms_length(cut).units > SMS_MAX_CHARS - 4


def test_a_gsm_text_ends_in_three_dots_so_it_stays_gsm() -> None:
    cut = fit_sms("word " * 400, 160)
    assert cut.endswith("...") and sms_length(cut).encoding == "GSM-7"
    assert sms_length(cut).segments == 1


@pytest.mark.parametrize(
    "unit",
    [
        "👍🏽",  # skin tone modifier
        "👨‍👩‍👧",  # ZWJ family
        "🇫🇷",  # a flag: two regional indicators
        "e\u0301",  # e + combining acute
        "❤️",  # heart + variation selector
    ],
)
def test_cuts_never_split_a_character(unit: str) -> None:
    text = unit * 200
    for limit in range(20, 60):
        cut = fit_sms(text, limit)
        body = cut.removesuffix("…").removesuffix("...")
        assert body == unit * (len(body) // len(unit)), (limit, cut)
        assert sms_length(cut).units <= limit
        assert cut  # never empty


def test_an_emoji_body_keeps_its_message_frame() -> None:
    context = {
        "content": {"body": "🎉" * 1600, "subject": "Party"},
        "recipient": {"name": "Ada", "timezone": "UTC"},
        "group": {"name": "Climbing club"},
        "preferences_url": None,
        "unsubscribe_url": None,
    }
    message = Renderer(default_template_dir()).text("immediate", context)
    assert sms_length(message).units <= SMS_MAX_CHARS
    assert "🎉" in message and "…" in message
    assert message.startswith("[Climbing club] Party")

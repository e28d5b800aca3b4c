"""The one E.164 rule: ITU's at most 15 digits, at least the 7 of the shortest real numbers."""

from __future__ import annotations

import pytest

from notifier.providers.addresses import is_e164, is_email_address, normalize_phone


@pytest.mark.parametrize(
    "number",
    ["+15551234567", "+6831234", "+442071838750", "+" + "9" * 15],
)
def test_e164_numbers_are_accepted(number: str) -> None:
    assert is_e164(number)


@pytest.mark.parametrize(
    "number",
    [
        "",
        "15551234567",  # no +
        "+05551234567",  # a country code never starts with 0
        "+123456",  # 6 digits: truncated
        "+" + "9" * 16,  # over ITU's 15
        "+1 555 123 4567",  # spaces are normalized away first, not accepted here
        "+15551234567\n",  # nothing may follow the digits
        "whatsapp:+15551234567",  # the channel prefix is the provider's business
    ],
)
def test_anything_else_is_not_e164(number: str) -> None:
    assert not is_e164(number)


def test_normalize_phone_removes_whitespace_only() -> None:
    assert normalize_phone(" +1 555\t123 4567\n") == "+15551234567"
    assert normalize_phone(None) == ""


def test_email_address_needs_an_at_sign() -> None:
    assert is_email_address("ada@example.com")
    assert not is_email_address("ada") and not is_email_address(None) and not is_email_address("")


@pytest.mark.parametrize(
    "address",
    [
        "a@b.com, victim@evil.com",  # a list: the provider would send to both
        "Ada <ada@example.com>",  # a display name
        "ada@example.com\r\nBcc: x@evil.com",
        "ada@@example.com",
        "ada@",
    ],
)
def test_anything_but_one_address_is_refused(address: str) -> None:
    assert not is_email_address(address)


def test_unicode_addresses_are_fine() -> None:
    assert is_email_address("zoë@exämple.de")


def test_the_console_providers_simulation_domains_pass() -> None:
    assert is_email_address("cy@fail.invalid") and is_email_address("flaky@retry.invalid")
    assert not is_email_address("a@b.com, victim@fail.invalid")

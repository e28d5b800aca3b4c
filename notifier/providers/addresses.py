"""The one rule for what counts as a phone number (E.164) or an email address.

Delivery checks a recipient's contact with these before rendering, and Twilio checks again
before its request; both must agree, or a number one accepts the other rejects.

Email addresses are checked by `email-validator` (syntax only, no DNS): one address, no display
name, no comma-separated list (`a@b.com, victim@evil.com` would otherwise be passed on to the
provider as given).

E.164 (ITU-T): `+`, a country code that never starts with 0, at most 15 digits in all. We ask
for at least 7 digits: the shortest numbers in service (Niue, Saint Helena: a 3-digit country
code and 4 digits) have 7, and anything shorter is a truncated number, not a phone.
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

E164 = re.compile(r"\+[1-9]\d{6,14}")
_WHITESPACE = re.compile(r"\s+")


def normalize_phone(raw: str | None) -> str:
    """A stored phone number without the spaces people type (`+1 555 123 4567`)."""
    return _WHITESPACE.sub("", raw or "")


def is_e164(number: str) -> bool:
    """True for `+15551234567`; no spaces, no `whatsapp:` prefix, nothing after the digits."""
    return E164.fullmatch(number) is not None


def email_address_problem(address: object) -> str | None:
    """Why `address` is not one deliverable email address, or None when it is."""
    if not isinstance(address, str) or not address.strip():
        return "no email address"
    local, _, domain = address.rpartition("@")
    if local and domain.lower().endswith(".invalid"):
        # RFC 2606's `.invalid` never resolves, so email-validator refuses it; the console
        # provider simulates failures with it (`@fail.invalid`) and a real provider bounces it.
        # Everything but that domain is still checked.
        address = f"{local}@example.com"
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as error:
        return f"not a valid email address: {error}"
    return None


def is_email_address(address: object) -> bool:
    """One syntactically valid address (the provider and bounces judge deliverability)."""
    return email_address_problem(address) is None

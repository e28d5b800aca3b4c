"""The unsubscribe pages notifier serves at `/unsubscribe/<preference_token>`.

Self-contained HTML (inline style, no scripts, no external assets, every value escaped). The
GET page only asks: mail scanners follow links, so nothing changes until the button POSTs. The
button posts the same body as an RFC 8058 one-click request (`List-Unsubscribe=One-Click`), so
the two are one code path.
"""

from __future__ import annotations

from html import escape

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;"
    "color:#222}button{font-size:1rem;padding:.6rem 1.2rem;cursor:pointer}"
)


def mask_email(address: str | None) -> str:
    """`a***@example.com`: enough for the person to recognise, little for anyone else."""
    if not address or "@" not in address:
        return "your address"
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def confirm_page(email: str | None, already: bool) -> str:
    """The page a link opens: a question and a button, or a note that it is already done."""
    who = escape(mask_email(email))
    if already:
        return _page("Unsubscribed", f"<p>{who} no longer receives these emails.</p>")
    body = (
        f"<p>Stop sending these emails to {who}?</p>"
        '<form method="post">'
        f'<input type="hidden" name="{ONE_CLICK_FIELD}" value="{ONE_CLICK_VALUE}">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", body)


def done_page(email: str | None) -> str:
    who = escape(mask_email(email))
    return _page("Unsubscribed", f"<p>Done: {who} will receive no more of these emails.</p>")


def not_found_page() -> str:
    return _page("Link not found", "<p>This unsubscribe link is not valid (any more).</p>")


def bad_request_page() -> str:
    return _page("Unsubscribe", "<p>Use the button on the unsubscribe page.</p>")


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )

"""Rendering: escaping, strictness, subjects, SMS length, digest times, footers, headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from notifier.errors import PermanentDeliveryError, TemplateRenderError
from notifier.pipeline.render import (
    SMS_MAX_CHARS,
    Renderer,
    default_template_dir,
    list_unsubscribe_headers,
)

SCRIPT = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(default_template_dir())


def job(**content: Any) -> dict[str, Any]:
    """The context delivery passes, with no links unless a test adds them."""
    return {
        "recipient": {
            "name": "Ana",
            "email": "ana@example.com",
            "phone": "+15551230000",
            "timezone": "Europe/Berlin",
        },
        "group": {"name": "Climbing club"},
        "content": content or {"subject": "Hello", "body": "Body text"},
        "preferences_url": None,
        "unsubscribe_url": None,
        "job_id": "00000000-0000-0000-0000-000000000001",
    }


def digest(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return job(items=list(items), **extra)


# --- escaping ---------------------------------------------------------------------------------


def test_html_escapes_script_in_body_and_subject(renderer: Renderer) -> None:
    email = renderer.email("immediate", job(subject=f"Hi {SCRIPT}", body=f"Look {SCRIPT}"))
    assert "<script>" not in email.html
    assert email.html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # title, h1, body


def test_html_escapes_group_and_recipient_names(renderer: Renderer) -> None:
    ctx = job()
    ctx["group"] = {"name": f"G {SCRIPT}"}
    ctx["recipient"] = {**ctx["recipient"], "name": f"R {SCRIPT}"}
    html = renderer.email("immediate", ctx).html
    assert "<script>" not in html
    assert f"G {SCRIPT}".replace("<", "&lt;").replace(">", "&gt;") in html
    assert f"R {SCRIPT}".replace("<", "&lt;").replace(">", "&gt;") in html


def test_text_version_shows_user_content_unescaped(renderer: Renderer) -> None:
    ctx = job(subject="Tom & Jerry", body=f"Look {SCRIPT}")
    ctx["group"] = {"name": "A & B"}
    text = renderer.email("immediate", ctx).text
    assert f"Look {SCRIPT}" in text
    assert "A & B" in text
    assert "&lt;" not in text and "&amp;" not in text


def test_body_line_breaks_become_br_after_escaping(renderer: Renderer) -> None:
    html = renderer.email("immediate", job(body="one <b>\r\ntwo\nthree")).html
    assert "one &lt;b&gt;<br>\ntwo<br>\nthree" in html


def test_javascript_url_in_content_is_never_linked(renderer: Renderer) -> None:
    email = renderer.email("immediate", job(body="x", url="javascript:alert(1)"))
    assert "javascript:" not in email.html
    assert "javascript:" not in email.text


def test_https_url_in_content_becomes_a_link(renderer: Renderer) -> None:
    email = renderer.email("milestone", job(body="x", url="https://app.example.com/m/1"))
    assert 'href="https://app.example.com/m/1"' in email.html


# --- strictness -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["immediate", "milestone"])
def test_missing_body_raises_naming_content_body(renderer: Renderer, kind: str) -> None:
    with pytest.raises(TemplateRenderError, match=r"email/.*needs 'content\.body'"):
        renderer.email(kind, job(subject="only a subject"))
    with pytest.raises(TemplateRenderError, match=r"sms/.*needs 'content\.body'"):
        renderer.text(kind, job(subject="only a subject"))


def test_null_body_counts_as_missing(renderer: Renderer) -> None:
    with pytest.raises(TemplateRenderError, match=r"'content\.body'"):
        renderer.email("immediate", job(body=None))


def test_template_render_error_is_permanent(renderer: Renderer) -> None:
    with pytest.raises(PermanentDeliveryError):
        renderer.email("immediate", job(subject="no body"))


def test_digest_item_without_time_names_its_path(renderer: Renderer) -> None:
    ctx = digest({"subject": "a", "occurred_at": "2026-03-29T06:00:00Z"}, {"subject": "b"})
    with pytest.raises(TemplateRenderError, match=r"needs 'content\.items\[1\]\.occurred_at'"):
        renderer.email("digest", ctx)


def test_custom_template_missing_variable_is_named(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email/immediate.html").write_text("{{ content.body }} {{ content.cta.label }}")
    with pytest.raises(
        TemplateRenderError,
        match=r"template email/immediate\.html needs 'content\.cta', which the job does not have",
    ):
        Renderer(tmp_path).email("immediate", job(body="x"))


def test_custom_template_missing_top_level_variable_is_named(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms/immediate.txt").write_text("{{ content.body }} {{ signature }}")
    with pytest.raises(TemplateRenderError, match=r"needs 'signature'"):
        Renderer(tmp_path).text("immediate", job(body="x"))


def test_unknown_notification_type_raises(renderer: Renderer) -> None:
    with pytest.raises(TemplateRenderError, match=r"unknown notification type 'weekly'"):
        renderer.email("weekly", job())
    with pytest.raises(TemplateRenderError, match=r"unknown notification type '\.\./x'"):
        renderer.text("../x", job())


def test_missing_template_file_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TemplateRenderError, match=r"template email/immediate\.html does not exist"):
        Renderer(tmp_path).email("immediate", job())


def test_template_syntax_error_raises_with_line(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms/immediate.txt").write_text("ok\n{% if %}")
    with pytest.raises(
        TemplateRenderError, match=r"sms/immediate\.txt has a syntax error on line 2"
    ):
        Renderer(tmp_path).text("immediate", job())


def test_unparseable_digest_time_raises(renderer: Renderer) -> None:
    with pytest.raises(TemplateRenderError, match=r"'yesterday' is not an ISO 8601 timestamp"):
        renderer.email("digest", digest({"subject": "a", "occurred_at": "yesterday"}))


# --- subjects ---------------------------------------------------------------------------------


def test_subject_crlf_and_control_characters_become_single_spaces(renderer: Renderer) -> None:
    email = renderer.email(
        "immediate", job(subject="  Hi\r\nBcc: evil@x\t\x00\x1b there  ", body="b")
    )
    assert email.subject == "Hi Bcc: evil@x there"


def test_subject_is_capped_at_200_characters(renderer: Renderer) -> None:
    email = renderer.email("immediate", job(subject="word " * 100, body="b"))
    assert len(email.subject) <= 200
    assert email.subject.endswith("word…")


@pytest.mark.parametrize(
    ("kind", "content", "expected"),
    [
        ("immediate", {"body": "b"}, "New update"),
        ("milestone", {"body": "b", "subject": " \r\n "}, "Milestone reached"),
        ("digest", {"items": [{"occurred_at": "2026-01-01T00:00:00Z"}]}, "Your digest: 1 update"),
        ("digest", {"items": [], "item_count": 12}, "Your digest: 12 updates"),
    ],
)
def test_subject_defaults_per_type(
    renderer: Renderer, kind: str, content: dict[str, Any], expected: str
) -> None:
    assert renderer.email(kind, job(**content)).subject == expected


# --- SMS --------------------------------------------------------------------------------------


def test_long_sms_is_cut_to_1600_with_ellipsis_keeping_its_frame(renderer: Renderer) -> None:
    ctx = job(subject="Big news", body="lorem ipsum " * 400, url="https://app.example.com/n/1")
    message = renderer.text("immediate", ctx)
    assert len(message) <= SMS_MAX_CHARS
    assert len(message) > SMS_MAX_CHARS - 40  # cut cleanly, not drastically
    assert message.startswith("[Climbing club] Big news\n")
    assert "...\nhttps://app.example.com/n/1" in message  # `…` would make it UCS-2


def test_sms_length_counts_emoji_as_two_units(renderer: Renderer) -> None:
    message = renderer.text("milestone", job(body="🎉" * 1000))
    assert len(message.encode("utf-16-le")) // 2 <= SMS_MAX_CHARS
    assert message.endswith("…")


def test_short_sms_is_left_whole(renderer: Renderer) -> None:
    message = renderer.text("immediate", job(body="See you at 6"))
    assert message == "[Climbing club] See you at 6"


def test_sms_template_too_long_by_itself_is_cut_at_its_end(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms/immediate.txt").write_text("{{ content.body }}\n" + "fine print " * 200)
    message = Renderer(tmp_path).text("immediate", job(body="hello"))
    assert len(message) <= SMS_MAX_CHARS
    assert message.startswith("hello\nfine print")
    assert message.endswith(("fine...", "print..."))


def test_digest_sms_lists_subjects_and_count(renderer: Renderer) -> None:
    items = [{"subject": f"s{i}", "occurred_at": "2026-01-01T00:00:00Z"} for i in range(7)]
    message = renderer.text("digest", digest(*items))
    assert message.startswith("[Climbing club] 7 new updates:\n- s0\n")
    assert "- s4\n" in message and "s5" not in message
    assert "and 2 more" in message


# --- digests ----------------------------------------------------------------------------------


def test_digest_lists_every_item_in_the_recipients_time_zone(renderer: Renderer) -> None:
    ctx = digest(
        {"subject": "Before DST", "body": "snippet one", "occurred_at": "2026-03-28T06:00:00Z"},
        {"subject": "After DST", "body": "snippet two", "occurred_at": "2026-03-29T06:00:00Z"},
    )
    email = renderer.email("digest", ctx)
    for part in (email.html, email.text):
        assert "Before DST" in part and "snippet one" in part
        assert "After DST" in part and "snippet two" in part
        assert "28 Mar 2026, 07:00 CET" in part
        assert "29 Mar 2026, 08:00 CEST" in part


@pytest.mark.parametrize("zone", [None, "", "Mars/Olympus_Mons", "../../etc/passwd"])
def test_digest_times_fall_back_to_utc_for_a_missing_or_invalid_zone(
    renderer: Renderer, zone: str | None
) -> None:
    ctx = digest({"subject": "a", "occurred_at": "2026-03-29T06:00:00Z"})
    ctx["recipient"] = {**ctx["recipient"], "timezone": zone}
    assert "29 Mar 2026, 06:00 UTC" in renderer.email("digest", ctx).text


def test_digest_mentions_items_beyond_those_listed(renderer: Renderer) -> None:
    ctx = digest({"subject": "a", "occurred_at": "2026-03-29T06:00:00Z"}, item_count=4)
    assert "and 3 more" in renderer.email("digest", ctx).html


# --- footers and headers ----------------------------------------------------------------------


def test_footer_links_present_when_urls_given(renderer: Renderer) -> None:
    ctx = job()
    ctx["preferences_url"] = "https://app.example.com/prefs/tok"
    ctx["unsubscribe_url"] = "https://app.example.com/unsub/tok"
    for kind, c in [("immediate", job()["content"]), ("digest", {"items": []})]:
        email = renderer.email(kind, {**ctx, "content": c})
        assert 'href="https://app.example.com/prefs/tok"' in email.html
        assert 'href="https://app.example.com/unsub/tok"' in email.html
        assert "https://app.example.com/prefs/tok" in email.text
        assert "Unsubscribe: https://app.example.com/unsub/tok" in email.text


def test_footer_absent_without_urls(renderer: Renderer) -> None:
    email = renderer.email("milestone", job(body="b"))
    assert "Unsubscribe" not in email.html and "preferences" not in email.html
    assert "Unsubscribe" not in email.text and "preferences" not in email.text


def test_group_and_optional_links_may_be_left_out_of_the_context(renderer: Renderer) -> None:
    email = renderer.email("immediate", {"recipient": {"name": None}, "content": {"body": "b"}})
    assert "Hi," in email.text and "None" not in email.text


def test_list_unsubscribe_headers_offer_one_click_for_https() -> None:
    assert list_unsubscribe_headers("https://x.example/u/tok") == {
        "List-Unsubscribe": "<https://x.example/u/tok>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def test_list_unsubscribe_headers_empty_without_url() -> None:
    assert list_unsubscribe_headers(None) == {}
    assert list_unsubscribe_headers("") == {}


def test_list_unsubscribe_headers_skip_one_click_for_plain_http() -> None:
    assert list_unsubscribe_headers("http://127.0.0.1:8000/u/tok") == {
        "List-Unsubscribe": "<http://127.0.0.1:8000/u/tok>"
    }


@pytest.mark.parametrize("url", ["https://x/u\r\nBcc: y", "https://x/u>", "mailto:a@b", "tok"])
def test_list_unsubscribe_headers_refuse_urls_that_would_break_the_header(url: str) -> None:
    with pytest.raises(PermanentDeliveryError, match="cannot go in a mail header"):
        list_unsubscribe_headers(url)


def test_an_occurred_at_out_of_range_is_a_template_error(renderer: Renderer) -> None:
    """Once an OverflowError: retried four times as an internal error."""
    context = job(items=[{"subject": "x", "occurred_at": "9999-12-31T23:59:59+00:00"}])
    context["recipient"]["timezone"] = "Pacific/Kiritimati"  # UTC+14: past year 9999
    with pytest.raises(TemplateRenderError, match="out of range"):
        renderer.email("digest", context)


@pytest.mark.parametrize("subject", [{"a": "<b>"}, ["x"], 42])
def test_a_non_string_subject_is_a_template_error_not_a_repr(
    renderer: Renderer, subject: object
) -> None:
    with pytest.raises(TemplateRenderError, match=r"content\.subject must be a string"):
        renderer.email("immediate", job(body="b", subject=subject))


def test_template_syntax_in_content_is_never_evaluated(renderer: Renderer) -> None:
    payload = "{{ 7*7 }} {% for x in range(3) %}loop{% endfor %} {{ config }}"
    email = renderer.email("immediate", job(subject=payload, body=payload))
    for text in (email.subject, email.text, renderer.text("immediate", job(body=payload))):
        assert "{{ 7*7 }}" in text and "49" not in text and "looploop" not in text

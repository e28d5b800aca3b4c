"""ConsoleProvider: readable output, a usable outbox, and the demo's simulated failures."""

from __future__ import annotations

import io
from email import message_from_bytes, policy
from email.message import EmailMessage as MimeMessage
from pathlib import Path

import pytest

from notifier.errors import PermanentDeliveryError, TransientDeliveryError
from notifier.providers.base import EmailMessage, TextMessage
from notifier.providers.console import ConsoleProvider

UNSUBSCRIBE = "<https://example.com/unsubscribe/u1>"


def email(job_id: str = "42", to: str = "ada@example.com") -> EmailMessage:
    return EmailMessage(
        job_id=job_id,
        to=to,
        to_name="Ada Lovelace",
        subject="Welcome aboard",
        html="<p>Hello <b>Ada</b></p>",
        text="Hello Ada",
        headers={"List-Unsubscribe": UNSUBSCRIBE},
    )


def test_email_is_printed_and_receipt_names_the_job() -> None:
    stream = io.StringIO()

    receipt = ConsoleProvider(stream=stream).send(email())

    assert receipt.provider == "console"
    assert receipt.message_id == "console-42"
    assert receipt.response == {}
    output = stream.getvalue()
    assert "job 42" in output
    assert "To:      Ada Lovelace <ada@example.com>" in output
    assert "Subject: Welcome aboard" in output
    assert f"List-Unsubscribe: {UNSUBSCRIBE}" in output
    assert "Hello Ada" in output


def test_default_stream_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleProvider().send(TextMessage(job_id="s1", to="+15551234567", body="Code 1234"))

    assert "Code 1234" in capsys.readouterr().out


def test_email_lands_in_the_outbox_as_multipart_eml(tmp_path: Path) -> None:
    receipt = ConsoleProvider(tmp_path, stream=io.StringIO()).send(email())

    path = tmp_path / "42.eml"
    assert receipt.response == {"path": str(path)}
    parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(parsed, MimeMessage)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["To"] == "Ada Lovelace <ada@example.com>"
    assert parsed["Subject"] == "Welcome aboard"
    assert parsed["X-Notifier-Job-Id"] == "42"
    assert parsed["List-Unsubscribe"] == UNSUBSCRIBE
    text_part = parsed.get_body(("plain",))
    html_part = parsed.get_body(("html",))
    assert text_part is not None and html_part is not None
    assert text_part.get_content().strip() == "Hello Ada"
    assert html_part.get_content().strip() == "<p>Hello <b>Ada</b></p>"


def test_text_messages_land_in_the_outbox_as_txt(tmp_path: Path) -> None:
    provider = ConsoleProvider(tmp_path, stream=io.StringIO())

    provider.send(TextMessage(job_id="7", to="+15551234567", body="Hi there", channel="whatsapp"))

    content = (tmp_path / "7.txt").read_text(encoding="utf-8")
    assert "To: +15551234567" in content and "Channel: whatsapp" in content
    assert content.endswith("Hi there\n")


def test_outbox_keeps_only_finished_files(tmp_path: Path) -> None:
    provider = ConsoleProvider(tmp_path / "outbox", stream=io.StringIO())

    for job_id in ("1", "2", "3"):
        provider.send(email(job_id=job_id))

    names = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert names == ["1.eml", "2.eml", "3.eml"]


def test_a_job_id_cannot_write_outside_the_outbox(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"

    ConsoleProvider(outbox, stream=io.StringIO()).send(email(job_id="../../escape"))

    assert [p.name for p in tmp_path.iterdir()] == ["outbox"]
    assert [p.name for p in outbox.iterdir()] == ["_.._escape.eml"]


@pytest.mark.parametrize(
    "message",
    [email(to="bounce@fail.invalid"), TextMessage("9", "+15550000000@FAIL.invalid", "hi")],
    ids=["email", "phone"],
)
def test_fail_invalid_addresses_are_rejected_permanently(
    tmp_path: Path, message: EmailMessage | TextMessage
) -> None:
    stream = io.StringIO()

    with pytest.raises(PermanentDeliveryError, match="rejected the address"):
        ConsoleProvider(tmp_path, stream=stream).send(message)

    assert list(tmp_path.iterdir()) == []
    assert stream.getvalue() == ""


def test_retry_invalid_addresses_fail_transiently() -> None:
    with pytest.raises(TransientDeliveryError, match="retried"):
        ConsoleProvider(stream=io.StringIO()).send(email(to="flaky@retry.invalid"))


def test_a_header_with_a_line_break_is_a_permanent_error(tmp_path: Path) -> None:
    message = EmailMessage(
        job_id="h1",
        to="ada@example.com",
        subject="s",
        html="<p>h</p>",
        text="h",
        headers={"X-Campaign": "spring\r\nBcc: victim@example.com"},
    )

    with pytest.raises(PermanentDeliveryError, match="MIME"):
        ConsoleProvider(tmp_path, stream=io.StringIO()).send(message)

"""Alerts to a tenant's admins (usage threshold, failure digests): the failure topic, and an email to the
recipients when SES is set up (SES_FROM_ADDRESS)."""

from __future__ import annotations

from billflow.aws import client
from billflow.settings import get_settings


def send_alert(tenant: str, subject: str, message: str, attributes: dict[str, str], recipients: list[str]) -> None:
    """The failure topic (for whoever subscribes), and an email to the recipients when SES is set up."""
    settings = get_settings()
    if settings.failure_topic_arn:
        client("sns").publish(
            TopicArn=settings.failure_topic_arn, Subject=_ascii(subject)[:100], Message=message,
            MessageAttributes={name: {"DataType": "String", "StringValue": value}
                               for name, value in {"tenant": tenant, **attributes}.items() if value},
        )
    if recipients and settings.ses_from_address:
        client("sesv2").send_email(
            FromEmailAddress=settings.ses_from_address,
            Destination={"ToAddresses": recipients},
            Content={"Simple": {"Subject": {"Data": subject, "Charset": "UTF-8"},
                                "Body": {"Text": {"Data": message, "Charset": "UTF-8"}}}},
        )


def _ascii(text: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)

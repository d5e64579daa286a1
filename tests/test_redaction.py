"""PII and secrets never reach the judge: each kind is masked and counted; look-alikes are kept."""
import json

import pytest

from tests.helpers import REPO, one_trace, spy_on
from worker.judging.pipeline import judge_one
from worker.judging.redaction import luhn_valid, redact
from worker.judging.variables import map_variables
from worker.langfuse_io.traces import Trace
from worker.rubrics.rubric import load_rubrics

RUBRICS = load_rubrics(REPO / "rubrics")
TRACE_ID = "0123456789abcdef0123456789abcdef"


CASES = [
    ("write to {} today", "john.doe+billing@example.co.uk", "email"),
    ("CONTACT: {}.", "JANE_D@corp-mail.io", "email"),
    ("call {}", "+44 20 7946 0958", "phone"),
    ("call {}", "+1 (415) 555-2671", "phone"),
    ("call {}", "+4915112345678", "phone"),
    ("call {}", "(555) 123-4567", "phone"),
    ("call {}.", "555.123.4567", "phone"),
    ("ruf {} an", "030/1234567", "phone"),
    ("appelez {}", "01 23 45 67 89", "phone"),
    ("card {}", "4111 1111 1111 1111", "card"),
    ("card {}", "4111-1111-1111-1111", "card"),
    ("card {}", "5555555555554444", "card"),
    ("amex {}", "3782 822463 10005", "card"),
    ("key {}", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "api_key"),
    ("key {}", "sk-proj-AbCdEfGhIjKlMnOpQrStUv0123", "api_key"),
    ("key {}", "sk-lf-1b2c3d4e-1234-5678-9abc-def012345678", "api_key"),
    ("key {}", "pk-lf-1b2c3d4e-1234-5678-9abc-def012345678", "api_key"),
    ("aws {}", "AKIAIOSFODNN7EXAMPLE", "api_key"),
    ("gh {}", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "api_key"),
    ("gh {}", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "api_key"),
    ("slack {}", "xoxb-1234567890-abcdefghijkl", "api_key"),
    ("Authorization: Bearer {}", "abcdef1234567890abcdef", "api_key"),
    ("jwt {}", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "api_key"),
    ("config api_key={}", "0123456789abcdef0123456789abcdef", "api_key"),
    ('{{"token": "{}"}}', "dGhpcyBpcyBhIHNlY3JldCB0b2tlbjEyMw==", "api_key"),
]
PLACEHOLDER = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "api_key": "[API_KEY]", "ssn": "[SSN]",
               "iban": "[IBAN]"}


@pytest.mark.parametrize("template,secret,kind", CASES)
def test_each_kind_is_masked_with_its_placeholder_and_counted(template, secret, kind):
    out, counts = redact(template.format(secret))
    assert out == template.format(PLACEHOLDER[kind])
    assert dict(counts) == {kind: 1}


def test_the_label_before_a_credential_stays_readable():
    out, _ = redact("Authorization: Bearer abcdef1234567890abcdef; password=Sup3rS3cretPassw0rd!")
    assert out.startswith("Authorization: Bearer [API_KEY]")
    assert "password=[API_KEY]" in out and "Sup3r" not in out


@pytest.mark.parametrize("text", [
    "Created 2024-01-15T10:30:00Z, updated 2024-01-15 10:30:00+02:00, due 15/01/2024",
    "request 550e8400-e29b-41d4-a716-446655440000 and 123e4567-e89b-12d3-a456-426614174000",
    "Your order number is 1234567890 (ref ORD-2024-000123, ticket 20240115-0042)",
    "order 4111111111111112 fails the Luhn check",
    "it costs $1,299.00 or €12.345,67 or 1 299 000 yen",
    "server 192.168.100.200 port 8080, version 1.2.3, build 20240115.1",
    "epoch 1732435200000 ms, invoice 0000000000000000",
    "the token is expired; the api_key field is required; secret=notasecretatalljustwords",
    "email me at the office, or write @support on the forum",
])
def test_look_alikes_are_left_alone(text):
    out, counts = redact(text)
    assert (out, dict(counts)) == (text, {})


def test_luhn():
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")


def trace(output):
    return Trace("t", "support-chat", "production", None,
                 [{"role": "user", "content": "My email is ann@example.com, why was I charged twice?"}],
                 output, {}, [], [])


def test_map_variables_redacts_before_truncating_and_counts_per_kind():
    secret = "sk-ant-api03-" + "x1" * 20
    answer = {"role": "assistant", "content": "Refunded card 4111 1111 1111 1111. " + "pad " * 40 + secret}
    rubric = RUBRICS["helpfulness@v1"]
    # A budget that cuts through the key: redaction must have run on the whole text first.
    variables, hygiene = map_variables(trace(answer), rubric, 120)
    assert "4111" not in variables["answer"] and "x1x1" not in variables["answer"]
    assert "ann@example.com" not in variables["conversation"]
    meta = hygiene.as_metadata()
    assert meta["pii_redacted"] == {"api_key": 1, "card": 1, "email": 1} and meta["pii_redacted_total"] == 3
    assert meta["output_chars"] == len(answer["content"])  # the answer's own length, before any masking


def test_redaction_can_be_switched_off():
    answer = {"role": "assistant", "content": "Mail bob@example.com"}
    variables, hygiene = map_variables(trace(answer), RUBRICS["helpfulness@v1"], 12000, redact=False)
    assert "bob@example.com" in variables["answer"]
    assert hygiene.as_metadata()["pii_redacted"] == {} and hygiene.as_metadata()["pii_redaction"] is False


def test_the_judge_never_receives_raw_pii_and_the_score_carries_the_counts(runtime, langfuse_emu, judge_emu):
    raw = ["carol.smith@example.org", "4111 1111 1111 1111", "sk-proj-AbCdEfGhIjKlMnOpQrStUv0123",
           "+44 20 7946 0958"]
    answer = f"Sent the receipt to {raw[0]}; card {raw[1]} refunded; your key {raw[2]}; call {raw[3]}. [[quality:0.8]]"
    langfuse_emu.load_observations(one_trace(TRACE_ID, answer))
    bodies = spy_on(judge_emu)
    outcome = judge_one(runtime, TRACE_ID, "helpfulness@v1")
    assert outcome.status == "scored"
    sent = json.dumps(bodies)
    assert bodies and all(value not in sent for value in raw)
    assert "[EMAIL]" in sent and "[CARD]" in sent and "[API_KEY]" in sent and "[PHONE]" in sent
    [score] = langfuse_emu.scores()
    assert score["metadata"]["pii_redacted"] == {"api_key": 1, "card": 1, "email": 1, "phone": 1}
    assert score["metadata"]["pii_redacted_total"] == 4
    assert not any(value in json.dumps(score) for value in raw)


@pytest.mark.parametrize("text, masked, kept", [
    ("the range 100 200 3000 is fine", None, "100 200 3000"),
    ("IBAN DE89 3704 0044 0532 0130 00", "IBAN [IBAN]", "0044 0532 0130"),  # an IBAN, not a phone number
    ("api_key: AbcdEfghIjklMnop", "api_key: [API_KEY]", None),
    ("Authorization: Basic dXNlcjpwYXNzd29yZDEyMzQ1", "Basic [API_KEY]", "dXNlcjpw"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key=[API_KEY]", "wJalr"),
    ("postgres://admin:hunter2pw@db.internal:5432/app", "postgres://admin:[API_KEY]@db.internal", "hunter2pw"),
])
def test_redaction_takes_labelled_and_url_credentials_and_leaves_digit_groups(text, masked, kept):
    out, _ = redact(text)
    if masked:
        assert masked in out
    if kept and masked is None:
        assert kept in out  # not a phone number
    elif kept:
        assert kept not in out


# One case per pattern added for issue 11 (SSNs, IBANs, space-separated phone numbers, short
# passwords), each beside the near-miss that must stay as it is.
@pytest.mark.parametrize("template,secret,kind", [
    ("SSN {} on file", "123-45-6789", "ssn"),
    ("IBAN {} please", "DE89 3704 0044 0532 0130 00", "iban"),
    ("IBAN {} please", "GB82WEST12345698765432", "iban"),
    ("call {} tomorrow", "415 555 2671", "phone"),
    ("password={}", "hunter2", "api_key"),
    ("the wifi password: {}", "Tr0ub4dor", "api_key"),
])
def test_issue_11_kinds_are_masked_and_counted(template, secret, kind):
    out, counts = redact(template.format(secret))
    assert out == template.format(PLACEHOLDER[kind])
    assert dict(counts) == {kind: 1}


@pytest.mark.parametrize("text", [
    "area 000-12-3456 and 666-12-3456 and 912-34-5678 are never issued as SSNs",
    "part 123-45-67890 and date 2024-01-15",
    "IBAN DE89 3704 0044 0532 0130 02 fails its check digits",
    "SKU XY45 ABCD 1234 EFGH",
    "the range 200 300 4000 is fine",
    "reset your password: click the link below",
])
def test_issue_11_near_misses_are_left_alone(text):
    out, counts = redact(text)
    assert (out, dict(counts)) == (text, {})

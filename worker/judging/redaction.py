"""PII and secret redaction: trace text is masked with typed placeholders before a judge sees it.

The judge is a third party; production traces carry customers' emails, phone numbers, card
numbers, US social security numbers, IBANs, passwords and, now and then, a pasted API key. Each
is replaced by a placeholder naming its kind (``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[SSN]``,
``[IBAN]``, ``[API_KEY]`` for any credential) so the judge can still tell that the answer
*contained* one, and the count per kind goes into the score's metadata.

Rules run in order, most specific first: secrets (a key may contain digit runs or an ``@``),
labelled passwords, emails, IBANs (mod-97 checked) and SSNs, card numbers (digits that pass the
Luhn check), phone numbers last, because a phone pattern is the loosest. Each pattern has guards against what production text is full of:
ISO dates and times, UUIDs, order numbers, prices, version numbers, IP addresses.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable

PLACEHOLDERS = {"api_key": "[API_KEY]", "email": "[EMAIL]", "card": "[CARD]", "phone": "[PHONE]",
                "ssn": "[SSN]", "iban": "[IBAN]"}

# Not preceded or followed by a token character: a key inside a longer identifier is no key.
_B = r"(?<![A-Za-z0-9_\-])"
_E = r"(?![A-Za-z0-9_\-])"
# One lookbehind outside the alternation: in long text the scan then fails fast at each position.
_SECRETS = re.compile(_B + "(?:" + "|".join([
    r"sk-ant-[A-Za-z0-9_\-]{16,}",                     # Anthropic
    r"(?:sk|pk)-lf-[A-Za-z0-9\-]{8,}",                  # Langfuse secret/public keys
    r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",  # OpenAI and look-alikes
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",                       # AWS access key id
    r"gh[pousr]_[A-Za-z0-9]{30,}",                      # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{22,}",                    # GitHub fine-grained PAT
    r"xox[abprs]-[A-Za-z0-9\-]{10,}",                   # Slack
    r"AIza[0-9A-Za-z_\-]{35}",                          # Google API key
    r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWT
]) + ")" + _E)
# The credential after "Bearer" or after key=/token=/secret: goes; the label stays readable.
_BEARER = re.compile(r"(?i)(\b(?:Bearer|Basic)\s+)([A-Za-z0-9._~+/\-]{16,}=*)")
# Any label ending in key/secret/token/password (api_key, aws_secret_access_key, X-Auth-Token).
_ASSIGNED = re.compile(
    r"(?i)(\b[A-Za-z0-9_\-]*(?:key|secret|token|password|passwd)[\"']?\s*[=:]\s*[\"']?)"
    r"([A-Za-z0-9+/_.\-]{16,}={0,2})")
# The password in a connection URL: postgres://user:PASSWORD@host (before the email rule sees "@").
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^\s:/@]+:)([^\s@/]+)(?=@)")

# A password of any length after its label (the rule above takes only 16+ characters).
_PASSWORD = re.compile(r"(?i)(\b[A-Za-z0-9_\-]*(?:password|passwd|passwort|pwd|passcode)[\"']?\s*[=:]\s*[\"']?)"
                       r"([^\s\"',;]{4,64})")

_ASSIGNED_HINT = re.compile(r"(?i)key|secret|token|passw|pwd")

# US social security number, dashed (the way it is written): area 001-899 except 666, group
# 01-99, serial 0001-9999; a longer digit-dash run (a date, a part number) is not one.
_SSN = re.compile(r"(?<![\w\-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w\-]|[.,]\d)")
# IBAN: country, check digits, 11-30 letters/digits, written solid or in groups of four.
_IBAN = re.compile(r"(?<![\w\-])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![\w\-])")
# A space-separated North American number (415 555 2671) is three digit groups like any other:
# taken only after a word that says it is a phone number.
_PHONE_SPACED = re.compile(r"(?i)(\b(?:call|phone|tel|telephone|mobile|cell|text|fax|whatsapp|number|"
                           r"reach (?:me|us) at)\b[^\d\n]{0,12})([2-9]\d{2} [2-9]\d{2} \d{4})(?![\w\-]| \d)")

_EMAIL = re.compile(r"(?<![\w.%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w\-])")

# 13-19 digits, optionally grouped by single spaces or dashes (4111 1111 1111 1111).
_CARD = re.compile(r"(?<![\w\-.,+])\d(?:[ \-]?\d){12,18}(?![\w\-]|[.,]\d)")

# International: + country code then groups; national: the common grouped layouts. A bare digit
# run (an order number, a timestamp) is never a phone number: national forms need separators.
_PHONE = re.compile(
    r"(?<![\w+\-.:/])(?<!\d )(?:"
    r"\+\d{1,3}(?:[ .\-]?\(\d{1,4}\))?(?:[ .\-]?\d{1,5}){1,5}"             # +44 20 7946 0958, +4915112345678
    r"|\(\d{3}\)[ .\-]?\d{3}[ .\-]\d{4}"                                   # (555) 123-4567
    r"|\d{3}([.\-])\d{3}\1\d{4}"                                              # 555-123-4567 (not 100 200 3000)
    r"|0\d{1,4}[ \-/]\d{3,4}[ \-]?\d{3,4}"                                 # 020 7946 0958, 030/1234567
    r"|0[1-9](?:[ .]\d{2}){4}"                                             # 01 23 45 67 89
    r")(?![\w\-]|[.:/]\d| \d)")  # never the middle of a longer digit-group run (an IBAN)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    # Issuers' numbers start with 2-6 (Mastercard 2/5, Amex 3, Visa 4, Discover 6); this keeps
    # epoch-millisecond timestamps (17...) and most internal ids out.
    if not 13 <= len(digits) <= 19 or digits[0] not in "23456" or len(set(digits)) == 1:
        return False
    groups = re.split(r"[ \-]", text)
    # Grouped digits must be grouped like a card (4-4-4-4, 4-6-5, ...), not like a phone number.
    if len(groups) > 1 and any(not 3 <= len(g) <= 6 for g in groups[:-1]):
        return False
    return luhn_valid(digits)


def _is_iban(text: str) -> bool:
    """ISO 13616: 15-34 characters whose mod-97 (letters as 10..35, first four moved last) is 1."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _is_password(value: str) -> bool:
    """A plain word after "password:" is prose ("password: click the link"), not a password."""
    return not value.startswith("[") and not re.fullmatch(r"[A-Za-z][a-z]*", value)


def _is_phone(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    if text.startswith("+"):
        return 8 <= len(digits) <= 15  # E.164 allows at most 15 digits
    return 9 <= len(digits) <= 12


class Redactor:
    """Masks one text at a time; ``counts`` accumulates how many of each kind it replaced."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def redact(self, text: str) -> str:
        text = self._sub(_SECRETS, text, "api_key")
        text = self._sub(_BEARER, text, "api_key", group=2)
        if "://" in text:
            text = self._sub(_URL_PASSWORD, text, "api_key", group=2)
        if _ASSIGNED_HINT.search(text):  # cheap test first: most text names no credential
            text = self._sub(_ASSIGNED, text, "api_key", group=2, check=_looks_secret)
            text = self._sub(_PASSWORD, text, "api_key", group=2, check=_is_password)
        if "@" in text:
            text = self._sub(_EMAIL, text, "email")
        text = self._sub(_IBAN, text, "iban", check=_is_iban)
        text = self._sub(_SSN, text, "ssn")
        text = self._sub(_CARD, text, "card", check=_is_card)
        text = self._sub(_PHONE_SPACED, text, "phone", group=2)
        return self._sub(_PHONE, text, "phone", check=_is_phone)

    def _sub(self, pattern: re.Pattern[str], text: str, kind: str, *, group: int = 0,
             check: Callable[[str], bool] | None = None) -> str:
        def replace(match: re.Match[str]) -> str:
            value = match.group(group)
            if check is not None and not check(value):
                return match.group(0)
            self.counts[kind] += 1
            if group == 0:
                return PLACEHOLDERS[kind]
            return match.group(0)[: match.start(group) - match.start(0)] + PLACEHOLDERS[kind]
        return pattern.sub(replace, text)


def _looks_secret(value: str) -> bool:
    """After ``token=``: a credential mixes letters with digits or with both cases; a plain word
    (or a run of lower-case words) or a number is not taken for one."""
    if value.startswith("[") or not re.search(r"[A-Za-z]", value):
        return False
    return bool(re.search(r"\d", value)) or (bool(re.search(r"[a-z]", value)) and bool(re.search(r"[A-Z]", value)))


def redact(text: str) -> tuple[str, Counter[str]]:
    redactor = Redactor()
    return redactor.redact(text), redactor.counts

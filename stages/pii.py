"""PII redaction: e-mail addresses, IP addresses (v4 and v6), phone numbers and payment-card numbers.

Each kind is found by a candidate pattern and then confirmed: IPs by the standard library's
`ipaddress` (and not when the words before it say it is a version: "version 1.2.3.4"), card
numbers by length, issuer prefix and the Luhn checksum, phone numbers by libphonenumber's matcher
(`phonenumbers`, which knows the numbering plans and skips dates and timestamps). Overlapping finds
keep the first kind in `KINDS` order. `redact` replaces each find by its kind's token (Dolma's by
default, `|||EMAIL_ADDRESS|||`); `annotate` only counts. Either way the document gains `pii_count`,
and the manifest counts each kind (`pii_email`, …). No document is dropped.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

import pyarrow as pa
from pydantic import Field

from winnow.schemas.config import StageConfig
from winnow.stages.base import DocumentStage, Plot, StageResult

Kind = Literal["email", "credit_card", "ip", "phone"]
KINDS: tuple[str, ...] = ("email", "credit_card", "ip", "phone")  # priority where finds overlap
TOKENS = {"email": "|||EMAIL_ADDRESS|||", "credit_card": "|||CREDIT_CARD_NUMBER|||", "ip": "|||IP_ADDRESS|||",
          "phone": "|||PHONE_NUMBER|||"}

EMAIL = re.compile(r"(?<![\w.%+'-])[A-Za-z0-9][A-Za-z0-9._%+'-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
                   r"([A-Za-z]{2,24})(?![\w-])")
# "name@2x.png" is an image file, not an address: no top-level domain is a file extension like these
FILE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "pdf", "js", "css", "txt"})
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{1,4}(?![\w:])")
VERSION_BEFORE = re.compile(r"(?:\bv|\bversion|\bver\.?|\brelease|\bbuild|\bfirmware|\brev\.?|\bupdate)\s*$",
                            re.IGNORECASE)
# every phone number the matcher accepts has 7+ digits with at most a few separators between them:
# text without such a run cannot hold one, and skips the (slow, pure-Python) matcher
PHONE_HINT = re.compile(r"\d(?:[\s().+/-]{0,3}\d){6}")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# issuer prefixes (IIN ranges) and lengths of the major card networks
CARD_ISSUERS = [(re.compile(r"4"), (13, 16, 19)), (re.compile(r"5[1-5]|2(?:2[2-9][1-9]|[3-6]\d\d|7[01]\d|720)"), (16,)),
                (re.compile(r"3[47]"), (15,)), (re.compile(r"6(?:011|4[4-9]|5)"), (16, 19)),
                (re.compile(r"35(?:2[89]|[3-8]\d)"), (16, 19)), (re.compile(r"3(?:0[0-5]|[68])"), (14,))]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def is_card(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    return luhn_ok(digits) and any(p.match(digits) and len(digits) in lengths for p, lengths in CARD_ISSUERS)


def is_ip(text: str, match: re.Match) -> bool:
    try:
        ipaddress.ip_address(match.group())
    except ValueError:
        return False
    return not VERSION_BEFORE.search(text[max(0, match.start() - 12):match.start()])


def find_pii(text: str, kinds=KINDS, region: str = "US") -> list[tuple[int, int, str]]:
    """(start, end, kind) of every find, in text order, none overlapping."""
    found: list[tuple[int, int, str]] = []
    if "email" in kinds and "@" in text:
        found += [(m.start(), m.end(), "email") for m in EMAIL.finditer(text)
                  if m.group(1).lower() not in FILE_EXTENSIONS]
    if "credit_card" in kinds:
        found += [(m.start(), m.end(), "credit_card") for m in CARD.finditer(text) if is_card(m.group())]
    if "ip" in kinds:
        found += [(m.start(), m.end(), "ip") for m in IPV4.finditer(text) if is_ip(text, m)]
        if "::" in text or text.count(":") >= 7:
            found += [(m.start(), m.end(), "ip") for m in IPV6.finditer(text) if is_ip(text, m)]
    if "phone" in kinds and PHONE_HINT.search(text):
        import phonenumbers

        matcher = phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID)
        found += [(m.start, m.end, "phone") for m in matcher]
    rank = {kind: i for i, kind in enumerate(KINDS)}
    kept: list[tuple[int, int, str]] = []
    for start, end, kind in sorted(found, key=lambda f: (rank[f[2]], f[0])):
        if all(end <= s or start >= e for s, e, _ in kept):
            kept.append((start, end, kind))
    return sorted(kept)


def redact(text: str, finds: list[tuple[int, int, str]], tokens: dict[str, str]) -> str:
    parts, last = [], 0
    for start, end, kind in finds:
        parts += [text[last:start], tokens[kind]]
        last = end
    return "".join(parts) + text[last:]


class PiiConfig(StageConfig):
    """Redact (or count) e-mail addresses, IP addresses, phone numbers and payment-card numbers."""

    name: Literal["pii"] = "pii"
    kinds: list[Kind] = Field(list(KINDS), description="what to look for")
    tokens: dict[Kind, str] = Field(default_factory=lambda: dict(TOKENS), description="replacement per kind")
    phone_region: str = Field("US", description="region for numbers written without a country code (ISO 3166)")
    mode: Literal["redact", "annotate"] = Field("redact", description="annotate: count, leave the text as it is")


class Pii(DocumentStage):
    Config = PiiConfig
    plots = (Plot("pii_count", "PII finds per document (documents with any)", above=0, integer=True),)

    def apply(self, table: pa.Table) -> StageResult:
        cfg = self.config
        tokens = {**TOKENS, **cfg.tokens}
        texts, counts, per_kind = [], [], dict.fromkeys(cfg.kinds, 0)
        for text in table.column("text").to_pylist():
            finds = find_pii(text, cfg.kinds, cfg.phone_region)
            for _, _, kind in finds:
                per_kind[kind] += 1
            counts.append(len(finds))
            texts.append(redact(text, finds, tokens) if finds and cfg.mode == "redact" else text)
        out = table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts, pa.string()))
        out = out.append_column("pii_count", pa.array(counts, pa.int32()))
        return StageResult.of(self.name, table.num_rows, out, table.slice(0, 0), [],
                              counters={f"pii_{kind}": n for kind, n in per_kind.items()})

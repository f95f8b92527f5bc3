"""pii: precision and recall per kind on hand-written snippets with hard cases, redaction, annotate
mode, and the stage on Ray with its counts in the manifest."""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest

from conftest import documents
from support import run_stage
from winnow.runtime import RuntimeOptions, Shard
from winnow.stages.pii import Pii, PiiConfig, find_pii, luhn_ok
from winnow.storage.fs import resolve

# Each snippet marks its PII as [[kind:value]]; everything unmarked must not be found.
SNIPPETS = """\
Write to [[email:jane.doe@example.com]] for the minutes of the meeting.
Questions? Contact [[email:support+billing@mail.example.co.uk]] or visit the help centre.
The form was sent by [[email:o'brien@example.ie]] last week.
Reply-To: <[[email:team.lead@sub.example.org]]>
My address is [[email:a_b-c@example-domain.io]], please do not share it.
Emails like [[email:FIRST.LAST@EXAMPLE.COM]] are case-insensitive.
She wrote "contact me at [[email:x@y.travel]]" in the comments.
Please cc [[email:editor@example.com]], [[email:owner@example.com]] and the board.
The handle @example_user is a social media account, not an e-mail.
Use the pattern user@domain in the config file.
File names like report@2x.png are images.
An email address needs a domain: admin@localhost is a local account.
The server at [[ip:192.168.1.20]] stopped answering at noon.
Blocked attempts from [[ip:203.0.113.45]] and [[ip:198.51.100.7]] were logged.
Ping [[ip:8.8.8.8]] to check the connection.
The gateway ([[ip:10.0.0.1]]) hands out addresses.
Connect to [[ip:2001:db8:85a3::8a2e:370:7334]] over IPv6.
The loopback address is [[ip:::1]] on most systems.
Our router's link-local address is [[ip:fe80::1ff:fe23:4567:890a]] today.
Upgrade to version 1.2.3.4 before Friday.
The firmware 10.0.0.12 fixes the bug.
Release v2.10.3.1 is out, with build 4.1.2.3 for testing.
The numbers 300.1.2.3 and 1.2.3.256 are not addresses.
Section 1.2.3.4.5 of the manual explains it.
The score was 3.14 and the ratio 1.2.3 in that table.
The time was 12:30:45 on the log line.
Set the ratio to 16:9:4 for the display.
Call us on [[phone:(415) 555-2671]] during office hours.
For bookings ring [[phone:415-555-0132]] or e-mail the office.
International callers dial [[phone:+44 20 7946 0958]].
Our Paris office: [[phone:+33 1 42 68 53 00]].
Text [[phone:+1 212 555 0188]] to confirm.
The hotline [[phone:(800) 555-0199]] is free.
Reach the clinic at [[phone:312.555.0145]] after 9am.
Fax: [[phone:+49 30 901820]]
The meeting was on 2023-10-12 at the town hall.
It happened on 12/10/2023 and again on 10/12/2023.
The event ran 1990-2020, thirty years in all.
The ISBN is 978-3-16-148410-0 for the second edition.
Order number 20231012-0042 shipped today.
The population grew to 1,234,567 people.
The price was $1,299.99 including tax.
Zip code 94103 covers the area.
Room 101, floor 3, building 12.
The serial 12345 and the part 67890 arrived.
Pay with [[credit_card:4111 1111 1111 1111]] at checkout.
The test Visa number [[credit_card:4012888888881881]] was declined.
Mastercard [[credit_card:5555-5555-5555-4444]] expired in May.
Amex [[credit_card:3782 822463 10005]] was charged twice.
Discover [[credit_card:6011 1111 1111 1117]] is accepted.
The number 4111 1111 1111 1112 fails the checksum.
Account 1234567890123456 is an internal id.
Tracking code 9400 1000 0000 0000 0000 00 is for the parcel.
The IBAN GB82 WEST 1234 5698 7654 32 is not a card.
Contact [[email:sales@example.com]] or call [[phone:(212) 555-0147]].
Server [[ip:172.16.254.1]] is owned by [[email:ops@example.net]].
Card [[credit_card:4111-1111-1111-1111]] and phone [[phone:+1 (646) 555-0102]] were on the form.
Version 4.0.0.1 of the app calls [[ip:93.184.216.34]] for updates.
We met at 10:30 and called [[phone:617-555-0110]] afterwards.
The patch for build 3.2.1.0 went live on 2024-03-01.
Nothing personal here, just a paragraph about gardening and tomatoes.
The recipe needs 2 cups of flour, 3 eggs and 250 grams of sugar.
Chapter 11, verse 12, page 345.
The temperature was 23.5 degrees at 14:00.
Coordinates 40.7128, -74.0060 mark the city.
Send the draft to [[email:m.garcia@universidad.example.es]] by Monday.
The list address [[email:announce-subscribe@lists.example.org]] adds you to the newsletter.
Old logs show [[email:root@server1.example.com]] as the sender.
Logos come as logo@3x.jpg and icon@2x.svg in the assets folder.
The decorator @property is Python syntax.
Prices at example.com start at 5 dollars.
Twitter mentions like @winnow_dev and @data are not addresses.
The wiki page is at example.org/wiki/Email_address for reference.
His old address [[email:j.smith1987@example.net]] bounces now.
Write to [[email:privacy@example.com]]; we answer within a week.
The printer answers at [[ip:192.0.2.33]] on the office network.
DNS servers [[ip:1.1.1.1]] and [[ip:9.9.9.9]] are public.
Traffic from [[ip:100.64.0.10]] comes through the carrier.
The VPN assigns [[ip:172.31.0.5]] to your laptop.
Documentation uses [[ip:2001:db8::1]] as an example address.
The host [[ip:2001:0db8:0000:0000:0000:ff00:0042:8329]] is written in full.
The app is at version 2.0.0.1 and the API at v3.1.4.1.
Firmware 1.0.0.255 and build 7.7.7.7 are both stable.
The version string reads ver. 5.4.3.2 in the footer.
Dotted numbers like 1.2.3 and 10.20.30 are versions, not addresses.
The game ended 3:2:1 after extra time.
Timestamps like 2024-01-15T10:30:00Z appear in the log.
Our toll-free line is [[phone:1-800-555-0175]].
Ring the front desk on [[phone:(202) 555-0163]] for a room.
In London call [[phone:+44 161 496 0753]] for the Manchester team.
The Berlin team is at [[phone:+49 30 12345678]].
The Sydney office picks up at [[phone:+61 2 9876 5432]].
Call [[phone:212-555-0123]] for the New York desk.
The dates 03/04/2021 and 2021/03/04 are the same day.
The range 555-0100 to 555-0199 is reserved for fiction.
Flight BA 2490 leaves at 07:45 from gate 23.
The case number 2019-CV-04567 was closed.
The product code 123-456-7890-12 is on the box.
The charge was on [[credit_card:5105 1051 0510 5100]] last month.
JCB card [[credit_card:3530111333300000]] works abroad.
Diners Club [[credit_card:3056 9309 0259 04]] is rarely used now.
The number 1234 5678 9012 3456 is a placeholder in the form.
The checksum of 4000 0000 0000 0001 is wrong, so it is not a card.
A UUID like 123e4567-e89b-12d3-a456-426614174000 is not personal data.
The hash 3f786850e387550fdab836ed7e6dc881de23001b identifies the commit.
Billing: [[email:accounts@example.com]], [[phone:(312) 555-0190]], card ending 4242, from [[ip:198.51.100.23]].
"""


def labelled():
    """(text, [(kind, value)]) per snippet line."""
    cases = []
    for line in SNIPPETS.splitlines():
        marks = re.findall(r"\[\[(\w+):(.+?)\]\]", line)
        cases.append((re.sub(r"\[\[\w+:(.+?)\]\]", r"\1", line), marks))
    return cases


def test_precision_and_recall_per_kind_on_hand_written_snippets():
    cases = labelled()
    assert len(cases) >= 100 and sum(len(m) for _, m in cases) >= 60
    tp, fp, fn = {}, {}, {}
    for text, marks in cases:
        want = {(kind, value) for kind, value in marks}
        got = {(kind, text[s:e]) for s, e, kind in find_pii(text)}
        for kind, _ in got - want:
            fp[kind] = fp.get(kind, 0) + 1
        for kind, _ in want - got:
            fn[kind] = fn.get(kind, 0) + 1
        for kind, _ in want & got:
            tp[kind] = tp.get(kind, 0) + 1
    lines = []
    for kind in ("email", "ip", "phone", "credit_card"):
        p = tp.get(kind, 0) / max(tp.get(kind, 0) + fp.get(kind, 0), 1)
        r = tp.get(kind, 0) / max(tp.get(kind, 0) + fn.get(kind, 0), 1)
        lines.append(f"{kind}: precision {p:.3f}, recall {r:.3f} ({tp.get(kind, 0)} found)")
        assert p >= 0.9 and r >= 0.9, lines[-1]
    print("\n" + "\n".join(lines))


def test_luhn():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112") and luhn_ok("79927398713")


def test_redact_and_annotate():
    text = "Mail jane@example.com or call (415) 555-2671 from 10.0.0.1."
    kept = Pii(PiiConfig(name="pii")).apply(documents([text])).kept
    assert kept.column("text")[0].as_py() == \
        "Mail |||EMAIL_ADDRESS||| or call |||PHONE_NUMBER||| from |||IP_ADDRESS|||."
    assert kept.column("pii_count").to_pylist() == [3]
    custom = Pii(PiiConfig(name="pii", tokens={"email": "<EMAIL>"}, kinds=["email"])).apply(documents([text]))
    assert custom.kept.column("text")[0].as_py() == "Mail <EMAIL> or call (415) 555-2671 from 10.0.0.1."
    counted = Pii(PiiConfig(name="pii", mode="annotate")).apply(documents([text]))
    assert counted.kept.column("text")[0].as_py() == text and counted.counters == {
        "pii_email": 1, "pii_credit_card": 0, "pii_ip": 1, "pii_phone": 1}


@pytest.mark.usefixtures("ray_local")
def test_on_ray_counts_per_kind_in_the_manifest(tmp_path):
    texts = [text for text, _ in labelled()]
    path = tmp_path / "in" / "part-0.parquet"
    path.parent.mkdir()
    pq.write_table(documents(texts), path)
    manifest, _ = run_stage(Pii(PiiConfig(name="pii")), [Shard("part-0", resolve(str(path)))],
                            resolve(str(tmp_path / "out")), "h", RuntimeOptions(run_id="t", progress=False))
    assert manifest.rows_in == manifest.rows_out == len(texts) and manifest.rows_rejected == 0
    expected = {}
    for _, marks in labelled():
        for kind, _ in marks:
            expected[f"pii_{kind}"] = expected.get(f"pii_{kind}", 0) + 1
    out = pq.read_table(tmp_path / "out" / "part-0.parquet")
    assert sum(out.column("pii_count").to_pylist()) == sum(manifest.counters.values())
    assert all(abs(manifest.counters[k] - n) <= 1 for k, n in expected.items()), (manifest.counters, expected)

"""Issue 10 item 6: a secret is masked in hex, base64-of-base64, embedded-base64, JSON-escaped,
multi-line and wrapped/split forms too -- in the Masker, and end to end through a real run's
logs, outputs and stored log chunks."""

from __future__ import annotations

import base64
import json
import math
import uuid
from urllib.parse import quote, quote_plus

import pytest
from sqlalchemy import select

from db.models import StepLogChunk
from domain.masking import MASK, MIN_PART_LENGTH, Masker
from tests.harness import wait_run

# 52 bytes: its base64 (72 chars) stays on one line, its hex (104 chars) wraps at xxd's 60
SECRET = "s3cr3t-" + "9f2c" * 10 + "-tail"
# 90 bytes: its base64 (120 chars) wraps at 76
LONG = "long-" + "Zq8" * 28 + "-end-of-it"
PEM = ("-----BEGIN TEST PRIVATE KEY-----\n"
       "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
       "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
       "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ\n"
       "-----END TEST PRIVATE KEY-----")


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def wrapped(text: str, width: int) -> list[str]:
    """The lines a tool wrapping at ``width`` columns prints (``base64``, ``xxd -p``, ``fold``)."""
    return [text[i:i + width] for i in range(0, len(text), width)]


def survivors(masked: str, form: str, size: int = MIN_PART_LENGTH) -> list[str]:
    """Every ``size``-character piece of ``form`` still readable in ``masked``."""
    return sorted({form[i:i + size] for i in range(len(form) - size + 1)} & {
        masked[i:i + size] for i in range(len(masked) - size + 1)})


def masked_line_by_line(masker: Masker, lines: list[str]) -> str:
    """What the step log stores: each line masked on its own, as ``StepLogWriter.line`` does."""
    return "\n".join(masker.mask(line) for line in lines)


# ---- whole forms ----------------------------------------------------------------------------

@pytest.mark.parametrize("form", [
    SECRET.encode().hex(),  # `xxd -p -c0`, `od -An -tx1 | tr -d ' \n'`
    SECRET.encode().hex().upper(),  # `hexdump -e '/1 "%02X"'`
    SECRET.encode().hex(" "),  # `od -An -tx1` before it wraps
    b64(b64(SECRET)),  # base64 -w0 | base64 -w0
    b64(b64(SECRET)).rstrip("="),
    base64.urlsafe_b64encode(LONG.encode()).decode(),
    base64.urlsafe_b64encode(LONG.encode()).decode().rstrip("="),
    quote(SECRET, safe=""),
    quote_plus(LONG),
], ids=["hex", "HEX", "hex-spaced", "double-base64", "double-base64-unpadded", "urlsafe-base64",
        "urlsafe-base64-unpadded", "url-encoded", "url-encoded-plus"])
def test_whole_forms_are_masked_anywhere_in_a_line(form):
    masked = Masker([SECRET, LONG]).mask(f"value: {form} (end)")
    assert masked == "value: *** (end)"


@pytest.mark.parametrize("secret", [SECRET, "pa\"ss\\wörd\twith\nnewline and 'quotes'"])
def test_json_escaped_form_is_masked(secret):
    for document in (json.dumps({"password": secret}), json.dumps({"password": secret}, ensure_ascii=False)):
        masked = Masker([secret]).mask(document)
        assert masked == '{"password": "***"}'


# ---- base64 of base64, as the shell prints it -------------------------------------------------

@pytest.mark.parametrize("secret", [SECRET, LONG])
@pytest.mark.parametrize("printed_with_newline", [False, True], ids=["printf", "echo"])
def test_base64_of_base64_as_coreutils_prints_it(secret, printed_with_newline):
    # `printf %s "$T" | base64 | base64`: the inner base64 is wrapped and ends in a newline,
    # and the outer one is wrapped at 76 columns again
    raw = secret + ("\n" if printed_with_newline else "")
    inner = "\n".join(wrapped(b64(raw), 76)) + "\n"
    lines = wrapped(b64(inner), 76)
    # with echo's newline the inner base64's last characters mix the secret's bits with it: the
    # part of the output carrying only the secret's bits is the encoding of the inner one's start
    known = len(inner)
    if printed_with_newline:
        stable = 8 * len(secret.encode()) // 6
        known = stable + (stable - 1) // 76  # with the wrap's newlines
    secret_part = b64(inner)[:8 * known // 6]
    masker = Masker([secret])
    printed = masked_line_by_line(masker, lines)
    assert MASK in printed
    assert not survivors(printed, secret_part), printed
    assert not survivors(masker.mask("\n".join(lines)), secret_part)


# ---- hex and base64 wrapped over lines -------------------------------------------------------

def test_hex_wrapped_at_60_columns_like_xxd_p_is_masked_line_by_line():
    hex_form = SECRET.encode().hex()
    lines = wrapped(hex_form, 60)  # `printf %s "$T" | xxd -p`
    assert len(lines) == 2 and len(lines[1]) == 44
    masker = Masker([SECRET])
    assert masked_line_by_line(masker, lines) == "***\n***"
    assert masker.mask("\n".join(lines) + "\n") == "***\n***\n"
    upper = wrapped(hex_form.upper(), 60)
    assert masked_line_by_line(masker, upper) == "***\n***"


def test_od_output_one_byte_at_a_time_is_masked_line_by_line():
    # `od -An -tx1`: 16 bytes a line, each byte as " xx"
    raw = SECRET.encode()
    lines = ["".join(f" {byte:02x}" for byte in raw[i:i + 16]) for i in range(0, len(raw), 16)]
    assert masked_line_by_line(Masker([SECRET]), lines) == "\n".join(" ***" for _ in lines)


def test_base64_wrapped_at_76_columns_is_masked_line_by_line():
    lines = wrapped(b64(LONG), 76)  # `printf %s "$T" | base64`
    assert len(lines) == 2
    masker = Masker([LONG])
    assert masked_line_by_line(masker, lines) == "***\n***"
    assert masker.mask("\n".join(lines)) == "***\n***"


@pytest.mark.parametrize("width", [20, 33, 64])
def test_fold_at_any_width_is_masked_piece_by_piece(width):
    lines = wrapped(LONG, width)  # `printf %s "$T" | fold -w 20`
    masker = Masker([LONG])
    printed = masked_line_by_line(masker, lines)
    # every piece goes; only a last piece shorter than MIN_PART_LENGTH could stay
    assert all(line == MASK or len(original) < MIN_PART_LENGTH
               for line, original in zip(printed.split("\n"), lines, strict=True)), printed
    assert not survivors(printed, LONG)


def test_a_wrapped_secret_after_other_text_is_masked_at_both_line_edges():
    # `echo "TOKEN=$T (set)" | fold -w 40`: the first piece ends a line after "TOKEN=", the
    # last one starts a line before " (set)"
    lines = wrapped(f"TOKEN={LONG} (set)", 40)
    printed = masked_line_by_line(Masker([LONG]), lines)
    assert printed.startswith("TOKEN=***\n***\n")
    assert printed.endswith("*** (set)")
    assert not survivors(printed, LONG)


# ---- a secret embedded in a longer base64 blob -----------------------------------------------

@pytest.mark.parametrize("prefix", ["", "a", "ab", '{"auth":"', '{"auths":{"r":{"pw":"'])
@pytest.mark.parametrize("secret", [SECRET, LONG])
def test_a_secret_inside_a_longer_base64_blob_is_masked_in_each_alignment(prefix, secret):
    suffix = '"}} and more'
    blob = b64(prefix + secret + suffix)
    masked = Masker([secret]).mask(f"config: {blob}")
    assert MASK in masked
    before, after = masked.removeprefix("config: ").split(MASK)
    # what stays readable is only the characters holding some of the prefix's or suffix's bits
    # (and the padding): every character made of the secret's bits alone is gone
    assert blob.startswith(before) and len(before) <= math.ceil(8 * len(prefix) / 6)
    assert blob.endswith(after) and len(after) <= len(blob) - 8 * len(prefix + secret) // 6


@pytest.mark.parametrize("offset", [0, 1, 2])
def test_a_secret_inside_a_wrapped_base64_blob_is_masked_across_the_wrap(offset):
    # a kubeconfig as `base64` prints it: the secret's part of the blob spans several lines
    prefix = "apiVersion: v1\nusers:\n- name: ci\n  user:\n    token: " + "x" * offset
    blob = b64(prefix + LONG + "\ncurrent-context: ci\n")
    start = len(prefix.encode())
    # the characters only the secret's bits make up, found by position (not by the Masker)
    inner = blob[math.ceil(8 * start / 6):8 * (start + len(LONG.encode())) // 6]
    lines = wrapped(blob, 76)
    printed = masked_line_by_line(Masker([LONG]), lines)
    assert MASK in printed
    assert not survivors(printed, inner), printed


# ---- multi-line secrets ----------------------------------------------------------------------

def test_each_line_of_a_pem_key_is_masked_line_by_line_and_in_separate_chunks():
    masker = Masker([PEM])
    lines = PEM.splitlines()
    assert masked_line_by_line(masker, lines) == "\n".join(MASK for _ in lines)
    # a log chunk boundary between the lines changes nothing: each chunk is masked alone
    first, second = "\n".join(lines[:2]), "\n".join(lines[2:])
    assert masker.mask(first) == "***\n***" and masker.mask(second) == "***\n***\n***"
    # indented inside YAML, with CRLF line ends, or inside JSON
    assert masker.mask("key: |\n" + "\n".join(f"  {line}\r" for line in lines)) == \
        "key: |\n" + "\n".join("  ***\r" for _ in lines)
    assert masker.mask(json.dumps({"key": PEM})) == '{"key": "***"}'


def test_a_pem_key_base64_encoded_and_wrapped_is_masked():
    lines = wrapped(b64(PEM), 76)
    printed = masked_line_by_line(Masker([PEM]), lines)
    assert set(printed.split("\n")) == {MASK}


def test_short_lines_of_a_multi_line_secret_are_not_masked_on_their_own():
    # lines under MIN_PART_LENGTH characters would mask ordinary text everywhere
    secret = "user: deploy-bot\nend\n42\npassword: Zk3-qq91-lmP"
    masker = Masker([secret])
    assert masker.mask("the end of step 42") == "the end of step 42"
    assert masker.mask("password: Zk3-qq91-lmP") == MASK
    assert masker.mask(secret) == MASK


def test_ordinary_text_and_short_tails_are_left_alone():
    masker = Masker([SECRET, LONG, PEM])
    text = "build ok\n2 passed, 0 failed\n-----\ndeadbeef 0123456789abcdef\nBEGIN\n"
    assert masker.mask(text) == text


# ---- end to end: a real run on both databases -------------------------------------------------

def test_hex_base64_twice_wrapped_and_multi_line_secrets_never_reach_logs_outputs_or_database(stack):
    client = stack.account().client
    token = f"s3cr3t-{uuid.uuid4().hex}-{uuid.uuid4().hex}"  # 71 chars: base64 and xxd -p both wrap
    key = PEM.replace("C7VJTUt9Us8cKj", uuid.uuid4().hex[:14])
    assert client.put("/secrets", json={"name": "T", "value": token}).status_code == 200
    assert client.put("/secrets", json={"name": "KEY", "value": key}).status_code == 200
    command = "\n".join([
        """printf %s "$T" | od -An -tx1 | tr -d ' \\n'; echo""",
        """printf %s "$T" | od -An -tx1 | tr -d ' \\n' | tr a-f A-F; echo""",
        # xxd -p's layout (60 columns); with xxd itself too where it is installed
        """printf %s "$T" | od -An -tx1 | tr -d ' \\n' | fold -w 60; echo""",
        """if command -v xxd >/dev/null; then printf %s "$T" | xxd -p; fi""",
        """printf %s "$T" | od -An -tx1""",
        """printf %s "$T" | base64 | base64""",
        """printf %s "$T" | base64""",
        """echo "$T" | base64 -w0 | base64 -w0; echo""",
        """printf %s "$T" | fold -w 20; echo""",
        """printf '%s\\n' "$KEY" """,
        """printf %s "$KEY" | base64""",
        """echo "hex=$(printf %s "$T" | od -An -tx1 | tr -d ' \\n')" >> "$DEVOPS_OUTPUT" """,
        """echo "double=$(printf %s "$T" | base64 | base64 -w0)" >> "$DEVOPS_OUTPUT" """,
        """{ echo 'wrapped<<EOF'; printf %s "$T" | base64; echo EOF; } >> "$DEVOPS_OUTPUT" """,
        """{ echo 'key<<EOF'; printf '%s\\n' "$KEY"; echo EOF; } >> "$DEVOPS_OUTPUT" """,
        """echo "lengths=${#T}/${#KEY}" >> "$DEVOPS_OUTPUT" """,
    ])
    pipeline = client.post("/pipelines", json={"name": "leaky-forms", "steps": [
        {"id": "leak", "type": "run_tests",
         "with": {"command": command, "executor": "shell",
                  "env": {"T": "${{ secrets.T }}", "KEY": "${{ secrets.KEY }}"}}},
    ]})
    assert pipeline.status_code == 201, pipeline.text
    run = client.post(f"/pipelines/{pipeline.json()['id']}/trigger", json={}).json()
    done = wait_run(client, run["id"])
    assert done["status"] == "success", done

    outputs = done["steps"][0]["outputs"]
    # the step really saw both secrets: only their lengths leak, by design of this test
    assert outputs["lengths"] == f"{len(token)}/{len(key)}"
    assert outputs["hex"] == MASK and outputs["double"] == MASK
    assert set(outputs["wrapped"].split("\n")) == {MASK} and set(outputs["key"].split("\n")) == {MASK}

    text = client.get(f"/pipeline_runs/{run['id']}/logs", params={"format": "text"}).text
    with stack.sessions() as session:
        stored = "\n".join(session.scalars(
            select(StepLogChunk.content).where(StepLogChunk.run_id == run["id"]).order_by(StepLogChunk.seq)))
    assert stored.count(MASK) >= 20, stored  # every printed form became a mask

    raw = token.encode()
    forms = {
        "plain": token, "hex": raw.hex(), "HEX": raw.hex().upper(), "hex-spaced": raw.hex(" "),
        "base64": b64(token), "base64-twice": b64("\n".join(wrapped(b64(token), 76)) + "\n"),
        "base64-twice-echo": b64(b64(token + "\n")), "key": key, "key-base64": b64(key),
    }
    for body in (text, stored, json.dumps(outputs)):
        for name, form in forms.items():
            # no 10-character run of any form is left, in one piece or across a wrap
            assert not survivors(body, form, size=10), (name, body)
        for line in key.splitlines():
            assert line not in body

"""Schemathesis hooks for the command API's contract test
(`command-api/tests/api/contract.rs`).

The OpenAPI document says what a well-formed request is; it cannot say
which customers, rate cards or roles exist, that an `Idempotency-Key` was
already used with another body, that a password needs 4 different
characters or that a date must not have passed. So before each request
these hooks put in the references the test created first (named by
environment variables), a fresh value for every well-formed
`Idempotency-Key`, a password the policy takes for a well-formed one it
does not, and a future date for a past one. A value is replaced only
when it is well-formed for its place, so a request Schemathesis made
malformed on purpose (a negative case) stays malformed in the same way:
what it breaks is never what the hooks change. A refusal of a
well-formed request is then the document's fault or the API's, never the
fixture's, and a malformed request is never let through by a key or a
reference that happened to collide.
"""

import datetime
import os
import re
import uuid

import schemathesis

UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,255}$")
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_-]{0,49}$")

# Body properties naming something that must exist, and what does.
REFERENCES = {
    "customerId": os.environ["PIVOTAL_CONTRACT_CUSTOMER"],
    "rateCardId": os.environ["PIVOTAL_CONTRACT_RATE_CARD"],
    "defaultRateCardId": os.environ["PIVOTAL_CONTRACT_RATE_CARD"],
    "rateEntryId": os.environ["PIVOTAL_CONTRACT_RATE_ENTRY"],
    "userId": os.environ["PIVOTAL_CONTRACT_USER"],
}
ROLE = "member"
# A password the policy takes, for generated ones it does not: JSON Schema
# cannot say "at least 4 different characters".
PASSWORD = "contract test password 1"
PASSWORDS = {"password", "newPassword"}
# The organization's policy stays off: once on, every sensitive operation
# (roles, password, email, MFA) answers 403 `mfa_required` to the test's
# token, which has no second factor, for the rest of the run.
KEEP_POLICY = "requireMfaForSensitiveOperations"
# Dates that must not be in the past, how they are read, and a day that
# is not past.
FUTURE = {
    "validUntil": (datetime.date.fromisoformat, "2099-12-31"),
    "until": (datetime.datetime.fromisoformat, "2099-12-31T00:00:00Z"),
}


def _past(key, text):
    """Whether `text` is a well-formed date of its kind, and past."""
    parse, _ = FUTURE[key]
    try:
        value = parse(text)
    except ValueError:
        return False
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            return False
        return value < datetime.datetime.now(datetime.timezone.utc)
    return value < datetime.date.today()


def _refer(value):
    """Replaces references in a generated body, at any depth."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in REFERENCES and isinstance(item, str) and UUID.match(item):
                out[key] = REFERENCES[key]
            elif key == "roles" and isinstance(item, list):
                out[key] = [
                    ROLE if isinstance(r, str) and IDENTIFIER.match(r) else r for r in item
                ]
            elif key == "role" and isinstance(item, str) and IDENTIFIER.match(item):
                out[key] = ROLE
            elif (
                key in PASSWORDS
                and isinstance(item, str)
                and 12 <= len(item) <= 64
                and len(set(item)) < 4
            ):
                out[key] = PASSWORD
            elif key in FUTURE and isinstance(item, str) and _past(key, item):
                out[key] = FUTURE[key][1]
            elif key == KEEP_POLICY and isinstance(item, bool):
                out[key] = False
            else:
                out[key] = _refer(item)
        return out
    if isinstance(value, list):
        return [_refer(item) for item in value]
    return value


def _breaks_headers(case):
    """Whether the case is malformed in its headers (one removed, say): a
    change to its headers would make Schemathesis take it as well-formed
    and send it with the headers it had removed."""
    if case.meta is None or not case.meta.generation.mode.is_negative:
        return False
    location = getattr(case.meta.phase.data, "parameter_location", None)
    return location is not None and getattr(location, "value", location) == "header"


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    key = case.headers.get("Idempotency-Key") if case.headers else None
    if isinstance(key, str) and IDEMPOTENCY_KEY.match(key) and not _breaks_headers(case):
        case.headers["Idempotency-Key"] = str(uuid.uuid4())
    if isinstance(case.body, (dict, list)):
        case.body = _refer(case.body)


# Refusals that depend on what the system holds, or on a rule across
# several items or fields that JSON Schema cannot state, so a well-formed
# request may meet one and the API is right to answer it with 422.
# Anything else refused as invalid is the document or the API at fault.
CONTEXT_CODES = {
    # What the system holds.
    "idempotency_key_reused",
    "invalid_current_password",
    "invalid_mfa_code",
    "no_rate_card",
    "rate_card_currency_mismatch",
    "unknown_customer",
    "unknown_rate_card",
    "unknown_rate_entry",
    "unknown_role",
    "unknown_template",
    # Rules across items or fields.
    "discount_exceeds_amount",
    "duplicate",
    "password_is_email",
}

FILTERED = os.environ.get("PIVOTAL_CONTRACT_FILTERED")


@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    if failure.code != "ST202" or response.status_code != 422:
        return True
    try:
        problem = response.json()
    except ValueError:
        return True
    codes = {error.get("code") for error in problem.get("errors") or []} or {problem.get("code")}
    if not codes <= CONTEXT_CODES:
        return True
    if FILTERED:
        with open(FILTERED, "a", encoding="utf-8") as out:
            out.write(f"{case.operation.label} {' '.join(sorted(codes))}\n")
    return False

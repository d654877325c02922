"""Schemathesis hooks for the query API's contract test
(`query-api/tests/graphql/contract.rs`).

GraphQL's types say what an argument is, not which records exist, how
large a page may be or which cursor the API handed out. So these hooks
give the custom scalars values of their form, put the records the test
created into the arguments that name one and cursors the lists handed
out into the arguments that take one (in well-formed queries only:
a malformed query stays malformed in the way it was made), and let
through the refusals of a well-formed query by a rule the schema's types
cannot state, each named here, so that any other refusal of a well-formed
query fails the test.
"""

import datetime
import json
import os
import re

import graphql
import schemathesis
from hypothesis import strategies as st
from schemathesis.graphql import nodes

# The custom scalars, in the forms the API reads: a consistency token the
# test's last command answered with, ISO 8601 dates, RFC 3339 instants.
schemathesis.graphql.scalar(
    "ConsistencyToken",
    st.just(os.environ["PIVOTAL_CONTRACT_CONSISTENCY_TOKEN"]).map(nodes.String),
)
schemathesis.graphql.scalar("NaiveDate", st.dates().map(lambda d: nodes.String(d.isoformat())))
schemathesis.graphql.scalar(
    "DateTime",
    st.datetimes(timezones=st.just(datetime.timezone.utc)).map(
        lambda d: nodes.String(d.isoformat())
    ),
)

CUSTOMER = os.environ["PIVOTAL_CONTRACT_CUSTOMER"]
# Root fields reading one record by `id`, and the record the test made.
RECORDS = {
    "customer": CUSTOMER,
    "quote": os.environ["PIVOTAL_CONTRACT_QUOTE"],
    "user": os.environ["PIVOTAL_CONTRACT_USER"],
}
# Filter fields naming a record, by root field.
FILTER_REFERENCES = {("quotes", "customerId"): CUSTOMER}
# A cursor each list handed out, by root field.
CURSORS = json.loads(os.environ["PIVOTAL_CONTRACT_CURSORS"])
# An `ID` is written as a string or an integer.
ID_VALUES = (graphql.StringValueNode, graphql.IntValueNode)


class _Refer(graphql.Visitor):
    """Puts the test's records into the arguments that name one."""

    def __init__(self):
        super().__init__()
        self.fields = []

    def enter_field(self, node, *_):
        self.fields.append(node.name.value)

    def leave_field(self, *_):
        self.fields.pop()

    def enter_argument(self, node, *_):
        if (
            len(self.fields) == 1
            and node.name.value == "id"
            and self.fields[0] in RECORDS
            and isinstance(node.value, ID_VALUES)
        ):
            value = graphql.StringValueNode(value=RECORDS[self.fields[0]])
            return graphql.ArgumentNode(name=node.name, value=value)
        if (
            len(self.fields) == 1
            and node.name.value in ("after", "before")
            and self.fields[0] in CURSORS
            and isinstance(node.value, graphql.StringValueNode)
        ):
            value = graphql.StringValueNode(value=CURSORS[self.fields[0]])
            return graphql.ArgumentNode(name=node.name, value=value)
        return None

    def enter_object_field(self, node, *_):
        if len(self.fields) != 1 or not isinstance(node.value, ID_VALUES):
            return None
        record = FILTER_REFERENCES.get((self.fields[0], node.name.value))
        if record is None:
            return None
        return graphql.ObjectFieldNode(name=node.name, value=graphql.StringValueNode(value=record))


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if isinstance(case.body, str):
        case.body = graphql.print_ast(graphql.visit(graphql.parse(case.body), _Refer()))


# Refusals of a well-formed query by a rule GraphQL's types cannot state:
# a page size or count out of its range (each argument's description says
# it), a cursor the API did not hand out, a combination of filter fields
# that contradicts itself, a search with nothing to search for. Each
# answers `BAD_USER_INPUT` with one of these messages.
RULES = [
    re.compile(pattern)
    for pattern in (
        r"^(first|last|recent) must be at (least|most) \d+$",
        r"^the cursor is not one this API returned: ",
        r"^the cursor belongs to another ordering$",
        r"^give status or statuses, not both$",
        r"^statuses must name at least one status$",
        r"^\w+ \(.+\) must be (on or )?before \w+ \(.+\)$",
        r"^types must name at least one type$",
        r"^query must be at most \d+ characters$",
        r"^query must contain at least one letter or digit$",
    )
]

FILTERED = os.environ.get("PIVOTAL_CONTRACT_FILTERED")


@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    if failure.code != "ST206":
        return True
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        return True
    if not errors or not all(
        (error.get("extensions") or {}).get("code") == "BAD_USER_INPUT"
        and any(rule.search(error.get("message", "")) for rule in RULES)
        for error in errors
    ):
        return True
    if FILTERED:
        with open(FILTERED, "a", encoding="utf-8") as out:
            for error in errors:
                out.write(f"{case.operation.label} {error['message'][:60]}\n")
    return False


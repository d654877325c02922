//! The GraphQL schema against a real read model: connections, filters,
//! ordering, tenant scoping and error codes, both through `execute` and HTTP.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use async_graphql::Request;
use pivotal_auth::Principal;
use pivotal_domain::customer::{Customer, CustomerCommand};
use pivotal_domain::envelope::Actor;
use pivotal_domain::user::{Profile, User, UserCommand};
use pivotal_domain::values::{Email, Name, Preferences, TimeZone};
use pivotal_event_store::commands::AggregateStore;
use pivotal_query_api::schema;
use pivotal_test_support::commands::{context, create_customer};
use pivotal_test_support::{TestEnv, http};
use serde_json::{Value, json};
use uuid::Uuid;

struct Fixture {
    env: TestEnv,
    org: Uuid,
    schema: schema::PivotalSchema,
}

/// Rebuilds every projection (or only the one named) from the event store,
/// once the log horizon has passed every committed event.
async fn project(env: &TestEnv, only: Option<&str>) {
    pivotal_test_support::wait_for_horizon(&env.pool).await;
    for projection in pivotal_projectors::all_projections() {
        if only.is_none_or(|name| projection.name() == name) {
            pivotal_projectors::framework::rebuild(&env.pool, projection.as_ref(), None)
                .await
                .unwrap();
        }
    }
}

/// Twelve customers in one organization (every third archived, tags by
/// parity) and one in another organization, projected by a rebuild.
async fn fixture() -> Fixture {
    let env = TestEnv::new().await;
    let store = AggregateStore::<Customer>::new(env.pool.clone());
    let org = Uuid::now_v7();
    let actor = Actor {
        organization_id: org,
        user_id: Uuid::now_v7(),
    };
    let names = [
        "Alpha", "bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India",
        "Juliet", "Kilo", "Lima",
    ];
    for (i, name) in names.iter().enumerate() {
        let tag = if i % 2 == 0 { "even" } else { "odd" };
        let id = create_customer(&store, actor, &format!("{name} Limited"), name, &[tag]).await;
        if i % 3 == 2 {
            store
                .execute(
                    &id.to_string(),
                    None,
                    CustomerCommand::Archive {
                        actor,
                        reason: None,
                    },
                    &context(actor),
                )
                .await
                .unwrap();
        }
    }
    let other = Actor {
        organization_id: Uuid::now_v7(),
        user_id: Uuid::now_v7(),
    };
    create_customer(&store, other, "Alpha Intruder", "Alpha Intruder", &[]).await;
    pivotal_test_support::wait_for_horizon(&env.pool).await;
    pivotal_projectors::framework::rebuild(
        &env.pool,
        &pivotal_projectors::customers::CustomersProjection,
        None,
    )
    .await
    .unwrap();
    let schema = schema::build(env.pool.clone());
    Fixture { env, org, schema }
}

/// A pool of one connection, so that what the schema ran on it can be
/// read back from its session (`pg_prepared_statements`).
async fn one_connection(database_url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .unwrap()
}

impl Fixture {
    fn principal(&self, roles: &[&str]) -> Principal {
        let request = pivotal_auth::TokenRequest::for_roles(Uuid::now_v7(), self.org, roles);
        Principal {
            claims: self.env.issuer.claims(&request),
        }
    }

    async fn run(&self, query: &str) -> Value {
        self.run_with(query, json!({}), &["member"]).await
    }

    /// Runs `query` with `variables` (a JSON object) for a caller holding
    /// `roles`.
    async fn run_with(&self, query: &str, variables: Value, roles: &[&str]) -> Value {
        let response = self
            .schema
            .execute(
                Request::new(query)
                    .variables(async_graphql::Variables::from_json(variables))
                    .data(self.principal(roles)),
            )
            .await;
        serde_json::to_value(&response).unwrap()
    }
}

fn names(page: &Value) -> Vec<String> {
    page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["displayName"].as_str().unwrap().to_owned())
        .collect()
}

/// `answer` is a 503 that says when to retry: `Retry-After: 1`, and every
/// error coded `expected` with `retryAfterSeconds` 1. Returns its body.
async fn is_retryable_503(
    answer: pivotal_test_support::reqwest::Response,
    expected: &str,
) -> Value {
    assert_eq!(answer.status(), 503);
    assert_eq!(
        answer
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = answer.json().await.unwrap();
    let errors = body["errors"].as_array().unwrap();
    assert!(!errors.is_empty(), "{body}");
    for error in errors {
        assert_eq!(error["extensions"]["code"], expected, "{body}");
        assert_eq!(error["extensions"]["retryAfterSeconds"], 1, "{body}");
    }
    body
}

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("none")
}

#[tokio::test]
async fn pages_forward_and_backward_with_opaque_cursors() {
    let f = fixture().await;
    let first = f
        .run("{ customers(first: 5) { totalCount pageInfo { hasNextPage hasPreviousPage endCursor } edges { cursor node { displayName } } } }")
        .await;
    let page = &first["data"]["customers"];
    assert_eq!(page["totalCount"], 12, "{first}");
    assert_eq!(names(page), ["Alpha", "bravo", "Charlie", "Delta", "Echo"]);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    assert_eq!(page["pageInfo"]["hasPreviousPage"], false);
    let end = page["pageInfo"]["endCursor"].as_str().unwrap();

    let second = f
        .run(&format!("{{ customers(first: 5, after: \"{end}\") {{ pageInfo {{ hasNextPage startCursor }} edges {{ node {{ displayName }} }} }} }}"))
        .await;
    let page = &second["data"]["customers"];
    assert_eq!(names(page), ["Foxtrot", "Golf", "Hotel", "India", "Juliet"]);
    let start = page["pageInfo"]["startCursor"].as_str().unwrap();

    let back = f
        .run(&format!("{{ customers(last: 3, before: \"{start}\") {{ pageInfo {{ hasPreviousPage }} edges {{ node {{ displayName }} }} }} }}"))
        .await;
    assert_eq!(
        names(&back["data"]["customers"]),
        ["Charlie", "Delta", "Echo"]
    );
    assert_eq!(
        back["data"]["customers"]["pageInfo"]["hasPreviousPage"],
        true
    );

    let last = f
        .run("{ customers(last: 2) { edges { node { displayName } } } }")
        .await;
    assert_eq!(names(&last["data"]["customers"]), ["Kilo", "Lima"]);
}

#[tokio::test]
async fn filters_and_ordering() {
    let f = fixture().await;
    let archived = f
        .run("{ customers(first: 20, filter: {status: ARCHIVED}) { totalCount edges { node { displayName status } } } }")
        .await;
    assert_eq!(
        names(&archived["data"]["customers"]),
        ["Charlie", "Foxtrot", "India", "Lima"]
    );
    assert_eq!(archived["data"]["customers"]["totalCount"], 4);

    let tagged = f
        .run("{ customers(first: 20, filter: {tag: \"ODD\", status: ACTIVE}) { totalCount edges { node { displayName } } } }")
        .await;
    assert_eq!(
        names(&tagged["data"]["customers"]),
        ["bravo", "Delta", "Hotel", "Juliet"]
    );

    let searched = f
        .run("{ customers(first: 20, filter: {search: \"LIM\"}) { totalCount edges { node { displayName } } } }")
        .await;
    assert_eq!(
        searched["data"]["customers"]["totalCount"], 12,
        "legal names all end in Limited"
    );
    let searched = f.run("{ customers(first: 20, filter: {search: \"alpha\"}) { edges { node { displayName } } } }").await;
    assert_eq!(
        names(&searched["data"]["customers"]),
        ["Alpha"],
        "the other organization's Alpha is invisible"
    );
    let wildcard = f
        .run("{ customers(first: 20, filter: {search: \"%\"}) { totalCount } }")
        .await;
    assert_eq!(
        wildcard["data"]["customers"]["totalCount"], 0,
        "LIKE wildcards are matched literally"
    );

    let newest = f
        .run("{ customers(first: 3, orderBy: {field: CREATED_AT, direction: DESC}) { pageInfo { endCursor } edges { node { displayName } } } }")
        .await;
    assert_eq!(
        names(&newest["data"]["customers"]),
        ["Lima", "Kilo", "Juliet"]
    );
    let end = newest["data"]["customers"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap();
    let next = f
        .run(&format!("{{ customers(first: 2, after: \"{end}\", orderBy: {{field: CREATED_AT, direction: DESC}}) {{ edges {{ node {{ displayName }} }} }} }}"))
        .await;
    assert_eq!(names(&next["data"]["customers"]), ["India", "Hotel"]);

    // A cursor from one ordering is refused in another.
    let mixed = f
        .run(&format!(
            "{{ customers(first: 2, after: \"{end}\") {{ totalCount }} }}"
        ))
        .await;
    assert_eq!(code(&mixed), "BAD_USER_INPUT", "{mixed}");
    // A time key that is no time is a cursor this API did not hand out
    // (ADR 0060), not a page from 1970.
    let forged = {
        use async_graphql::connection::CursorType;
        async_graphql::connection::OpaqueCursor(
            json!({"o": "CreatedAt:Desc", "k": "yesterday", "id": Uuid::now_v7()}),
        )
        .encode_cursor()
    };
    let refused = f
        .run(&format!("{{ customers(first: 2, after: \"{forged}\", orderBy: {{field: CREATED_AT, direction: DESC}}) {{ edges {{ cursor }} }} }}"))
        .await;
    assert_eq!(code(&refused), "BAD_USER_INPUT", "{refused}");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("the cursor is not one this API returned"),
        "{refused}"
    );
}

/// Every node of the list `list` as `(name field, id)`, one page of one
/// node at a time: forward from the first page, or backward from the
/// last (returned in the list's order). Fails when paging never ends.
async fn one_at_a_time(
    run: impl AsyncFn(String) -> Value,
    list: &str,
    arguments: &str,
    name: &str,
    forward: bool,
) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..40 {
        let page_arguments = match (&cursor, forward) {
            (None, true) => "first: 1".to_owned(),
            (Some(c), true) => format!("first: 1, after: \"{c}\""),
            (None, false) => "last: 1".to_owned(),
            (Some(c), false) => format!("last: 1, before: \"{c}\""),
        };
        let answer = run(format!(
            "{{ {list}({page_arguments}{arguments}) {{ pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} edges {{ node {{ id {name} }} }} }} }}"
        ))
        .await;
        let page = &answer["data"][list];
        for edge in page["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
        {
            seen.push((
                edge["node"][name].as_str().unwrap().to_owned(),
                edge["node"]["id"].as_str().unwrap().to_owned(),
            ));
        }
        let (more, next) = if forward {
            ("hasNextPage", "endCursor")
        } else {
            ("hasPreviousPage", "startCursor")
        };
        if page["pageInfo"][more] != true {
            if !forward {
                seen.reverse();
            }
            return seen;
        }
        cursor = Some(page["pageInfo"][next].as_str().unwrap().to_owned());
    }
    panic!("still paging after 40 pages: {seen:?}");
}

/// A name's cursor holds the name as PostgreSQL lower-cases it, which is
/// what the next page is compared with (ADR 0060): names whose Rust lower
/// case differs (a final capital sigma, a dotted capital I) are each
/// listed once, in order, paging either way.
#[tokio::test]
async fn name_cursors_hold_the_lower_case_the_database_compares() {
    let f = fixture().await;
    let store = AggregateStore::<Customer>::new(f.env.pool.clone());
    let actor = Actor {
        organization_id: f.org,
        user_id: Uuid::now_v7(),
    };
    let mut created = Vec::new();
    for name in ["ΟΔΟΣ", "İzmir", "Izmir B", "ΟΔΟΣ"] {
        created.push(
            create_customer(&store, actor, name, name, &[])
                .await
                .to_string(),
        );
    }
    project(&f.env, Some("customers")).await;
    let run = async |query: String| f.run(&query).await;
    let expected_names = [
        "Alpha", "bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India", "İzmir",
        "Izmir B", "Juliet", "Kilo", "Lima", "ΟΔΟΣ", "ΟΔΟΣ",
    ];
    for forward in [true, false] {
        let seen = one_at_a_time(&run, "customers", "", "displayName", forward).await;
        let names: Vec<&str> = seen.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, expected_names, "forward: {forward}");
        let ties: Vec<&str> = seen[14..].iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(
            ties,
            [created[0].as_str(), created[3].as_str()],
            "ties by id"
        );
    }
}

/// Creates an invited member of `actor`'s organization named `first`
/// `last`.
async fn create_user(
    store: &AggregateStore<User>,
    actor: Actor,
    first: &str,
    last: &str,
) -> String {
    let id = Uuid::now_v7();
    store
        .execute(
            &id.to_string(),
            Some(0),
            UserCommand::Create {
                actor,
                user_id: id,
                email: Email::parse("", &format!("{}@example.com", id.simple())).unwrap(),
                profile: Profile {
                    first_name: Name::parse("", first).unwrap(),
                    last_name: Name::parse("", last).unwrap(),
                    phone: None,
                    time_zone: TimeZone::parse("", "Pacific/Auckland").unwrap(),
                    preferences: Preferences::default(),
                },
                roles: ["member".to_owned()].into_iter().collect(),
                with_password: false,
            },
            &context(actor),
        )
        .await
        .unwrap();
    id.to_string()
}

/// Users page forward and backward by name (last name, then first name,
/// ignoring case, with PostgreSQL's lower case in the cursor), by
/// creation and by last change, in both directions (ADR 0060); a cursor
/// is refused in another ordering, or with keys that are not its
/// ordering's; a name is found by searching its own capitals.
#[tokio::test]
async fn users_page_both_ways_in_every_ordering() {
    let f = fixture().await;
    let store = AggregateStore::<User>::new(f.env.pool.clone());
    let actor = Actor {
        organization_id: f.org,
        user_id: Uuid::now_v7(),
    };
    let people = [
        ("Νίκος", "ΟΔΟΣ"),
        ("Zeynep", "Ince"),
        ("bob", "adams"),
        ("Ayşe", "İNCE"),
        ("Άννα", "ΟΔΟΣ"),
        ("Alice", "Adams"),
    ];
    let mut created = Vec::new();
    for (first, last) in people {
        created.push((
            format!("{first} {last}"),
            create_user(&store, actor, first, last).await,
        ));
    }
    let other = Actor {
        organization_id: Uuid::now_v7(),
        user_id: Uuid::now_v7(),
    };
    create_user(&store, other, "Aaron", "Aardvark").await;
    // The first user created is the last changed.
    store
        .execute(
            &created[0].1,
            None,
            UserCommand::UpdateProfile {
                actor,
                profile: Profile {
                    first_name: Name::parse("", people[0].0).unwrap(),
                    last_name: Name::parse("", people[0].1).unwrap(),
                    phone: None,
                    time_zone: TimeZone::parse("", "Europe/Athens").unwrap(),
                    preferences: Preferences::default(),
                },
            },
            &context(actor),
        )
        .await
        .unwrap();
    project(&f.env, Some("users")).await;
    let run = async |query: String| f.run(&query).await;
    let by_name: Vec<String> = [
        "Alice Adams",
        "bob adams",
        "Ayşe İNCE",
        "Zeynep Ince",
        "Άννα ΟΔΟΣ",
        "Νίκος ΟΔΟΣ",
    ]
    .map(str::to_owned)
    .to_vec();
    let by_creation: Vec<String> = created.iter().map(|(name, _)| name.clone()).collect();
    let mut by_change = by_creation.clone();
    by_change.rotate_left(1);
    let reversed = |names: &[String]| names.iter().rev().cloned().collect::<Vec<_>>();
    for (order, expected) in [
        ("", by_name.clone()),
        (", orderBy: {field: NAME}", by_name.clone()),
        (
            ", orderBy: {field: NAME, direction: DESC}",
            reversed(&by_name),
        ),
        (", orderBy: {field: CREATED_AT}", by_creation.clone()),
        (
            ", orderBy: {field: CREATED_AT, direction: DESC}",
            reversed(&by_creation),
        ),
        (", orderBy: {field: UPDATED_AT}", by_change.clone()),
        (
            ", orderBy: {field: UPDATED_AT, direction: DESC}",
            reversed(&by_change),
        ),
    ] {
        for forward in [true, false] {
            let seen = one_at_a_time(&run, "users", order, "displayName", forward).await;
            let names: Vec<String> = seen.iter().map(|(name, _)| name.clone()).collect();
            assert_eq!(names, expected, "{order}, forward: {forward}");
        }
    }

    // Refused: a name cursor in the creation ordering; keys that are not
    // the ordering's; a page over the maximum.
    let page = run("{ users(first: 2) { pageInfo { endCursor } } }".to_owned()).await;
    let by_name_cursor = page["data"]["users"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let forged = |o: &str, k: Value| {
        use async_graphql::connection::CursorType;
        async_graphql::connection::OpaqueCursor(json!({"o": o, "k": k, "id": Uuid::now_v7()}))
            .encode_cursor()
    };
    for (arguments, message) in [
        (
            format!("first: 2, after: \"{by_name_cursor}\", orderBy: {{field: CREATED_AT}}"),
            "the cursor belongs to another ordering",
        ),
        (
            format!(
                "first: 2, after: \"{}\"",
                forged("Name:Asc", json!(["adams"]))
            ),
            "the cursor is not one this API returned",
        ),
        (
            format!(
                "last: 2, before: \"{}\", orderBy: {{field: CREATED_AT}}",
                forged("CreatedAt:Asc", json!(["yesterday"]))
            ),
            "the cursor is not one this API returned",
        ),
        ("last: 500".to_owned(), "last must be at most 100"),
    ] {
        let refused = run(format!("{{ users({arguments}) {{ edges {{ cursor }} }} }}")).await;
        assert_eq!(code(&refused), "BAD_USER_INPUT", "{arguments}: {refused}");
        let said = refused["errors"][0]["message"].as_str().unwrap();
        assert!(said.starts_with(message), "{arguments}: {said}");
        assert_eq!(refused["data"], Value::Null, "{arguments}: {refused}");
    }

    // A search matches a name by its own capitals.
    for (search, count) in [
        ("ΟΔΟΣ", 2),
        ("İNCE", 2),
        ("ince", 2),
        ("ADAMS", 2),
        ("Aardvark", 0),
    ] {
        let found = run(format!(
            "{{ users(filter: {{search: \"{search}\"}}) {{ totalCount edges {{ node {{ id }} }} }} }}"
        ))
        .await;
        assert_eq!(
            found["data"]["users"]["totalCount"], count,
            "{search}: {found}"
        );
        assert_eq!(
            found["data"]["users"]["edges"].as_array().unwrap().len(),
            count,
            "{search}: {found}"
        );
    }
}

/// `totalCount` is worked out only when a query selects it (here through a
/// fragment): from the kept counts when the list is filtered by status at
/// most (ADR 0041), by counting the matching rows when it is searched or
/// filtered by tag. Seen in PostgreSQL's prepared statements on the
/// schema's only connection.
#[tokio::test]
async fn a_page_counts_its_list_only_when_the_query_asks() {
    let f = fixture().await;
    let one = crate::one_connection(&f.env.database_url).await;
    let schema = schema::build(one.clone());
    let run = |query: &'static str| {
        let schema = schema.clone();
        let principal = f.principal(&["member"]);
        async move {
            let response = schema.execute(Request::new(query).data(principal)).await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
            response.data.into_json().unwrap()
        }
    };
    // Statements prepared so far that read the kept counts, and that count
    // the rows.
    let counts = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT count(*) FILTER (WHERE strpos(statement, 'FROM rm_customer_counts') > 0),
                    count(*) FILTER (WHERE strpos(statement, 'SELECT count(*) FROM rm_customers') > 0)
             FROM pg_prepared_statements WHERE strpos(statement, 'pg_prepared_statements') = 0",
        )
        .fetch_one(&one)
        .await
        .unwrap()
    };

    let page =
        run("{ customers(first: 3, filter: {status: ACTIVE}) { edges { node { displayName } } } }")
            .await;
    assert_eq!(names(&page["customers"]), ["Alpha", "bravo", "Delta"]);
    assert_eq!(counts().await, (0, 0), "a page without totalCount counted");

    let counted = run(
        "{ customers(first: 3, filter: {status: ACTIVE}) { ...Total edges { node { displayName } } } }
         fragment Total on CustomerConnection { totalCount }",
    )
    .await;
    assert_eq!(counted["customers"]["totalCount"], 8);
    assert_eq!(names(&counted["customers"]), ["Alpha", "bravo", "Delta"]);
    assert_eq!(counts().await, (1, 0), "a status filter counted the rows");

    let blank =
        run("{ customers(first: 1, filter: {search: \"  \", tag: \"\"}) { totalCount } }").await;
    assert_eq!(blank["customers"]["totalCount"], 12);
    // The kept counts again, without the status: a second statement.
    assert_eq!(counts().await, (2, 0), "blank filters counted the rows");

    let searched =
        run("{ customers(first: 1, filter: {search: \"a\", status: ARCHIVED}) { totalCount } }")
            .await;
    // Charlie, Foxtrot, India and Lima are archived; Foxtrot has no "a".
    assert_eq!(searched["customers"]["totalCount"], 3);
    assert_eq!(counts().await, (2, 1));
}

/// The dashboard's PostgreSQL figures (here without Redis) take the
/// customers per status from the kept counts (ADR 0061), not by counting
/// the organization's customers. Seen in PostgreSQL's prepared statements
/// on the schema's only connection.
#[tokio::test]
async fn the_dashboards_customers_come_from_the_kept_counts() {
    let f = fixture().await;
    let one = crate::one_connection(&f.env.database_url).await;
    let response = schema::build(one.clone())
        .execute(
            Request::new("{ dashboard { source customers { status count } } }")
                .data(f.principal(&["member"])),
        )
        .await;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    let data = response.data.into_json().unwrap();
    assert_eq!(
        data["dashboard"],
        json!({"source": "DATABASE", "customers": [
            {"status": "active", "count": 8}, {"status": "archived", "count": 4}]})
    );
    let (kept, counted): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE strpos(statement, 'FROM rm_customer_counts') > 0),
                count(*) FILTER (WHERE strpos(statement, 'FROM rm_customers') > 0
                                   AND strpos(statement, 'count(') > 0)
         FROM pg_prepared_statements WHERE strpos(statement, 'pg_prepared_statements') = 0",
    )
    .fetch_one(&one)
    .await
    .unwrap();
    assert_eq!((kept, counted), (1, 0));
}

#[tokio::test]
async fn bad_input_and_missing_permissions_have_codes() {
    let f = fixture().await;
    // Integer arguments out of their range are refused naming the
    // argument and the bound it passed.
    for (query, message) in [
        (
            "{ customers(first: 500) { totalCount } }",
            "first must be at most 100",
        ),
        (
            "{ customers(last: -1) { totalCount } }",
            "last must be at least 0",
        ),
        (
            "{ quotes(first: -3) { totalCount } }",
            "first must be at least 0",
        ),
        (
            "{ search(query: \"alpha\", first: -1) { totalCount } }",
            "first must be at least 0",
        ),
        (
            "{ dashboard(recent: 0) { source } }",
            "recent must be at least 1",
        ),
        (
            "{ dashboard(recent: 51) { source } }",
            "recent must be at most 50",
        ),
    ] {
        let refused = f.run(query).await;
        assert_eq!(code(&refused), "BAD_USER_INPUT", "{query}: {refused}");
        assert_eq!(
            refused["errors"][0]["message"], message,
            "{query}: {refused}"
        );
        assert_eq!(refused["data"], Value::Null, "{query}: {refused}");
    }
    let garbage = f
        .run("{ customers(first: 2, after: \"garbage\") { totalCount } }")
        .await;
    assert_eq!(code(&garbage), "BAD_USER_INPUT", "{garbage}");
    assert_eq!(
        garbage["errors"][0]["message"],
        "the cursor is not one this API returned: pass a page's endCursor as `after`, \
         or its startCursor as `before`, unchanged",
        "{garbage}"
    );
    let bad_id = f.run("{ customer(id: \"nope\") { id } }").await;
    assert_eq!(code(&bad_id), "BAD_USER_INPUT", "{bad_id}");
    let unknown = f
        .run(&format!(
            "{{ customer(id: \"{}\") {{ id }} }}",
            Uuid::now_v7()
        ))
        .await;
    assert_eq!(unknown["data"]["customer"], Value::Null);

    // A member may read customers but not the event history.
    let id = f
        .run("{ customers(first: 1) { edges { node { id } } } }")
        .await["data"]["customers"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let history = f
        .run(&format!(
            "{{ customer(id: \"{id}\") {{ history {{ type }} }} }}"
        ))
        .await;
    assert_eq!(code(&history), "FORBIDDEN", "{history}");
    let owner = f
        .schema
        .execute(Request::new(format!("{{ customer(id: \"{id}\") {{ history {{ type version metadata {{ correlationId }} }} }} }}")).data(f.principal(&["owner"])))
        .await;
    let owner = serde_json::to_value(&owner).unwrap();
    assert_eq!(
        owner["data"]["customer"]["history"][0]["type"], "customer.created",
        "{owner}"
    );
    assert_eq!(
        owner["data"]["customer"]["history"][0]["metadata"]["correlationId"],
        pivotal_test_support::commands::CORRELATION_ID
    );

    let anonymous = serde_json::to_value(
        f.schema
            .execute(Request::new("{ customers(first: 1) { totalCount } }"))
            .await,
    )
    .unwrap();
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
}

/// The value of `graphql_errors_total{code}` in this process's metrics (0
/// before any is counted).
fn errors_counted(code: &str) -> f64 {
    let series = format!(r#"graphql_errors_total{{code="{code}"}} "#);
    pivotal_telemetry::metrics::handle()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str())?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn an_operation_that_is_not_graphql_or_not_of_the_schema_has_a_code() {
    let f = fixture().await;
    let cases = [
        (
            "{ customers(first: 2 { totalCount } }",
            "GRAPHQL_PARSE_FAILED",
        ),
        ("{ nope }", "GRAPHQL_VALIDATION_FAILED"),
        (
            "{ customers(first: \"two\") { totalCount } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
        ("{ customer { id } }", "GRAPHQL_VALIDATION_FAILED"),
        (
            "query Q($n: Int!) { customers(first: $n) { totalCount } }",
            "BAD_USER_INPUT",
        ),
        ("{ customers(first: -1) { totalCount } }", "BAD_USER_INPUT"),
        (
            "query A { __typename } query B { __typename }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "subscription { changes { aggregateId } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
        // A status the enumeration does not have, in a list of them.
        (
            "{ quotes(filter: {statuses: [DRAFT, OPEN]}) { totalCount } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ];
    for (query, expected) in cases {
        let answer = f.run(query).await;
        let errors = answer["errors"].as_array().unwrap();
        assert!(!errors.is_empty(), "{query}: {answer}");
        for error in errors {
            assert_eq!(error["extensions"]["code"], expected, "{query}: {answer}");
        }
    }
    let unknown = serde_json::to_value(
        f.schema
            .execute(
                Request::new("query A { __typename }")
                    .operation_name("C")
                    .data(f.principal(&["member"])),
            )
            .await,
    )
    .unwrap();
    assert_eq!(code(&unknown), "GRAPHQL_VALIDATION_FAILED", "{unknown}");

    // Over WebSocket an operation is a stream (`execute_stream`): coded the
    // same way, and counted in `graphql_errors_total` as it is answered.
    pivotal_telemetry::metrics::handle();
    pivotal_query_api::errors::register_counts();
    let before = errors_counted("GRAPHQL_VALIDATION_FAILED");
    let streamed = [
        Request::new("query A { __typename }").operation_name("C"),
        Request::new("query A { __typename } query B { __typename }"),
    ];
    let first_streamed = async |request: Request| {
        let mut stream = f
            .schema
            .execute_stream(request.data(f.principal(&["member"])));
        serde_json::to_value(futures::StreamExt::next(&mut stream).await.unwrap()).unwrap()
    };
    for request in streamed {
        let answer = first_streamed(request).await;
        assert_eq!(code(&answer), "GRAPHQL_VALIDATION_FAILED", "{answer}");
    }
    for (query, expected) in &cases[..6] {
        let answer = first_streamed(Request::new(*query)).await;
        assert_eq!(code(&answer), *expected, "{query}: {answer}");
    }
    let counted_now = errors_counted("GRAPHQL_VALIDATION_FAILED") - before;
    // The two above and three of the six (more if another test of this
    // binary is refused at the same time).
    assert!(counted_now >= 5.0, "{counted_now} counted of 5");
}

/// A date or an instant that is none (a literal or a variable's value,
/// a string that is no date or a value of another kind) is refused in
/// validation, naming the argument's path and the type, and nothing is
/// executed.
#[tokio::test]
async fn a_date_or_an_instant_that_is_none_is_refused_naming_its_field() {
    let f = fixture().await;
    let quotes = "query Q($f: QuoteFilter) { quotes(filter: $f) { totalCount } }";
    let search = "query S($from: DateTime) \
                  { search(query: \"work\", filter: {createdFrom: $from}) { totalCount } }";
    let cases = [
        (
            r#"{ quotes(filter: {validUntilFrom: "2026-13-01"}) { totalCount } }"#,
            json!({}),
            r#""filter.validUntilFrom", expected type "NaiveDate""#,
        ),
        (
            r#"{ quotes(filter: {createdTo: 20260131}) { totalCount } }"#,
            json!({}),
            r#""filter.createdTo", expected type "NaiveDate""#,
        ),
        (
            quotes,
            json!({"f": {"createdFrom": "2026-02-30"}}),
            r#""filter.createdFrom", expected type "NaiveDate""#,
        ),
        (
            quotes,
            json!({"f": {"validUntilTo": "31/03/2026"}}),
            r#""filter.validUntilTo", expected type "NaiveDate""#,
        ),
        (
            r#"{ search(query: "work", filter: {createdTo: "yesterday"}) { totalCount } }"#,
            json!({}),
            r#""filter.createdTo", expected type "DateTime""#,
        ),
        (
            search,
            json!({"from": "2026-03-31T25:00:00Z"}),
            r#""filter.createdFrom", expected type "DateTime""#,
        ),
        (
            search,
            json!({"from": 1774949400}),
            r#""filter.createdFrom", expected type "DateTime""#,
        ),
    ];
    for (query, variables, named) in cases {
        let answer = f.run_with(query, variables.clone(), &["member"]).await;
        let errors = answer["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{query} {variables}: {answer}");
        assert_eq!(
            errors[0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
            "{query} {variables}: {answer}"
        );
        assert_eq!(
            errors[0]["message"],
            format!("Invalid value for argument {named}"),
            "{query} {variables}: {answer}"
        );
        assert_eq!(answer["data"], Value::Null, "{query} {variables}: {answer}");
    }
    // The same filters, well formed, are read: the quotes are counted, and
    // the search reaches its engine (this schema is built without one).
    for (query, variables, code) in [
        (
            quotes,
            json!({"f": {"createdFrom": "2026-02-28", "validUntilTo": "2026-03-31"}}),
            None,
        ),
        (quotes, json!({"f": {"createdFrom": null}}), None),
        (
            search,
            json!({"from": "2026-03-31T22:30:00+13:00"}),
            Some("SEARCH_UNAVAILABLE"),
        ),
    ] {
        let answer = f.run_with(query, variables.clone(), &["owner"]).await;
        match code {
            None => assert!(
                answer["data"]["quotes"]["totalCount"].is_i64(),
                "{query} {variables}: {answer}"
            ),
            Some(code) => assert_eq!(
                answer["errors"][0]["extensions"]["code"], code,
                "{query} {variables}: {answer}"
            ),
        }
    }
}

#[tokio::test]
async fn over_http_tokens_are_required_and_graphiql_is_served() {
    let f = fixture().await;
    let (url, _stop) = f.env.spawn_query_api().await;
    let client = http();
    let query = json!({"query": "{ customers(first: 1) { totalCount } }"});

    let answer: Value = client
        .post(format!("{url}/graphql"))
        .json(&query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(code(&answer), "UNAUTHENTICATED");
    assert_eq!(answer["errors"][0]["extensions"]["reason"], "token_missing");
    let answer: Value = client
        .post(format!("{url}/graphql"))
        .bearer_auth("garbage")
        .json(&query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["errors"][0]["extensions"]["reason"],
        "token_malformed"
    );

    let token = f.env.token(f.org, &["member"]);
    let answer: Value = client
        .post(format!("{url}/graphql"))
        .bearer_auth(&token)
        .json(&query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["data"]["customers"]["totalCount"], 12);

    let page = client.get(format!("{url}/graphql")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("graphiql")
    );
}

mod bodies;

mod cache;

mod contract;

mod failures;

mod get;

mod media;

mod slots;

mod sockets;

mod identity {
    //! Users, roles and the organization through GraphQL, with real tokens
    //! issued by the command API and read models built by the projections.

    use pivotal_test_support::{TestEnv, http};
    use serde_json::{Value, json};

    const PASSWORD: &str = "correct horse battery staple";

    fn email(label: &str) -> String {
        format!("{label}-{}@example.com", uuid::Uuid::new_v4().simple())
    }

    async fn post(url: &str, path: &str, token: Option<&str>, body: Value) -> Value {
        pivotal_test_support::post_command(url, path, token, body)
            .await
            .0
    }

    async fn sign_up(url: &str, org: &str) -> Value {
        post(
            url,
            "/v1/auth/signup",
            None,
            json!({"organization": {"name": org, "defaultCurrency": "NZD"},
                   "user": {"email": email("owner"), "password": PASSWORD,
                            "firstName": "Owner", "lastName": org}}),
        )
        .await
    }

    async fn graphql(url: &str, token: &str, query: &str) -> Value {
        http()
            .post(format!("{url}/graphql"))
            .bearer_auth(token)
            .json(&json!({"query": query}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn me_users_roles_and_organization_stay_inside_the_tenant() {
        let env = TestEnv::new().await;
        let (command, _c) = env.spawn_command_api().await;
        let (query, _q) = env.spawn_query_api().await;
        let a = sign_up(&command, "Awa").await;
        let b = sign_up(&command, "Bluff").await;
        let a_owner = a["accessToken"].as_str().unwrap();
        let b_owner = b["accessToken"].as_str().unwrap();
        let member_email = email("member");
        let member = post(
            &command,
            "/v1/users",
            Some(a_owner),
            json!({"email": member_email, "firstName": "Mere", "lastName": "Aperahama",
                   "roles": ["member"], "password": PASSWORD}),
        )
        .await;
        crate::project(&env, None).await;

        let me = graphql(
            &query,
            a_owner,
            "{ me { id email firstName lastName displayName status roles mfaEnabled loginCount locked history { type } } }",
        )
        .await;
        assert!(me.get("errors").is_none(), "{me}");
        let me = &me["data"]["me"];
        assert_eq!(me["id"], a["user"]["id"]);
        assert_eq!(me["roles"], json!(["owner"]));
        assert_eq!(me["status"], "ACTIVE");
        assert_eq!(me["loginCount"], 1);
        assert_eq!(me["displayName"], "Owner Awa");
        let types: Vec<&str> = me["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["user.created", "user.authenticated"]);

        let users = graphql(
            &query,
            a_owner,
            "{ users(first: 10) { totalCount edges { node { email roles } } } }",
        )
        .await;
        assert_eq!(users["data"]["users"]["totalCount"], 2, "{users}");
        let members = graphql(
            &query,
            a_owner,
            r#"{ users(filter: {role: "member"}) { totalCount edges { node { email } } } }"#,
        )
        .await;
        assert_eq!(members["data"]["users"]["totalCount"], 1);
        assert_eq!(
            members["data"]["users"]["edges"][0]["node"]["email"],
            member_email
        );
        let searched = graphql(
            &query,
            a_owner,
            r#"{ users(filter: {search: "APERA"}) { totalCount } }"#,
        )
        .await;
        assert_eq!(searched["data"]["users"]["totalCount"], 1);
        let page = graphql(
            &query,
            a_owner,
            "{ users(first: 1) { pageInfo { hasNextPage endCursor } edges { node { lastName } } } }",
        )
        .await;
        assert_eq!(page["data"]["users"]["pageInfo"]["hasNextPage"], true);
        let cursor = page["data"]["users"]["pageInfo"]["endCursor"]
            .as_str()
            .unwrap();
        let next = graphql(
            &query,
            a_owner,
            &format!(
                r#"{{ users(first: 1, after: "{cursor}") {{ pageInfo {{ hasNextPage }} edges {{ node {{ lastName }} }} }} }}"#
            ),
        )
        .await;
        assert_eq!(next["data"]["users"]["pageInfo"]["hasNextPage"], false);
        assert_ne!(
            next["data"]["users"]["edges"][0]["node"]["lastName"],
            page["data"]["users"]["edges"][0]["node"]["lastName"]
        );

        // The other organization's ids resolve to nothing.
        let foreign = graphql(
            &query,
            b_owner,
            &format!(
                r#"{{ user(id: "{}") {{ id }} me {{ id }} users {{ totalCount }} organization {{ name }} }}"#,
                member["id"].as_str().unwrap()
            ),
        )
        .await;
        assert_eq!(foreign["data"]["user"], Value::Null, "{foreign}");
        assert_eq!(foreign["data"]["me"]["id"], b["user"]["id"]);
        assert_eq!(foreign["data"]["users"]["totalCount"], 1);
        assert_eq!(foreign["data"]["organization"]["name"], "Bluff");
        let customer = post(
            &command,
            "/v1/customers",
            Some(a_owner),
            json!({"legalName": "Awa client", "currency": "NZD"}),
        )
        .await;
        crate::project(&env, None).await;
        let foreign = graphql(
            &query,
            b_owner,
            &format!(
                r#"{{ customer(id: "{}") {{ id }} customers {{ totalCount }} }}"#,
                customer["id"].as_str().unwrap()
            ),
        )
        .await;
        assert_eq!(foreign["data"]["customer"], Value::Null, "{foreign}");
        assert_eq!(foreign["data"]["customers"]["totalCount"], 0);

        let roles = graphql(
            &query,
            a_owner,
            "{ roles { key builtIn grants { resource action conditions } } organization { name defaultCurrency fiscalYearStartMonth requireMfaForSensitiveOperations } }",
        )
        .await;
        let keys: Vec<&str> = roles["data"]["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "owner",
                "admin",
                "manager",
                "member",
                "accountant",
                "auditor"
            ]
        );
        assert_eq!(roles["data"]["organization"]["name"], "Awa");
        assert_eq!(roles["data"]["organization"]["fiscalYearStartMonth"], 1);

        // A member reads people but not the event history.
        let member_token = post(
            &command,
            "/v1/auth/login",
            None,
            json!({"email": member_email, "password": PASSWORD}),
        )
        .await["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let denied = graphql(&query, &member_token, "{ me { history { type } } }").await;
        assert_eq!(denied["errors"][0]["extensions"]["code"], "FORBIDDEN");
        assert!(
            denied["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("events:read")
        );

        let bad = graphql(&query, "not-a-token", "{ me { id } }").await;
        assert_eq!(bad["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");

        // Deactivating the member ends their access as soon as the query
        // API hears of it (a Redis announcement, ADR 0021).
        post(
            &command,
            &format!("/v1/users/{}/deactivate", member["id"].as_str().unwrap()),
            Some(a_owner),
            json!({"reason": "left"}),
        )
        .await;
        let mut revoked = graphql(&query, &member_token, "{ me { id } }").await;
        for _ in 0..100 {
            if revoked["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            revoked = graphql(&query, &member_token, "{ me { id } }").await;
        }
        assert_eq!(
            revoked["errors"][0]["extensions"]["code"],
            "UNAUTHENTICATED"
        );
        assert_eq!(
            revoked["errors"][0]["extensions"]["reason"],
            "token_revoked"
        );
    }

    #[test]
    fn no_secret_can_be_asked_for() {
        // Every type and field name, descriptions left out.
        let sdl = pivotal_query_api::schema::sdl();
        let mut in_description = false;
        let mut names = String::new();
        for line in sdl.lines().map(str::trim) {
            if line.starts_with("\"\"\"") {
                let one_line = line.len() > 3 && line.ends_with("\"\"\"");
                in_description = !(in_description || one_line);
                continue;
            }
            if in_description || line.starts_with('"') {
                continue;
            }
            names.push_str(&line.to_lowercase());
            names.push('\n');
        }
        assert!(names.contains("email"), "the filter kept field names");
        for word in ["password", "hash", "secret", "recovery", "refresh", "otp"] {
            assert!(!names.contains(word), "the schema has a field about {word}");
        }
    }
}

mod quotes {
    //! Quotes and rate cards through GraphQL: filters, ordering, paging,
    //! revisions and tenant scoping.

    use pivotal_test_support::{TestEnv, graphql_answer as answer, http};
    use serde_json::{Value, json};

    async fn post(url: &str, path: &str, token: Option<&str>, body: Value) -> Value {
        pivotal_test_support::post_command(url, path, token, body)
            .await
            .0
    }

    async fn graphql(url: &str, token: &str, query: &str) -> Value {
        let body: Value = http()
            .post(format!("{url}/graphql"))
            .bearer_auth(token)
            .json(&json!({"query": query}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(body.get("errors").is_none(), "{body}");
        body["data"].clone()
    }

    /// The access token of a new organization's owner, and the id of a
    /// customer it created.
    async fn owner_and_customer(
        command: &str,
        organization: &str,
        customer: &str,
    ) -> (String, String) {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let owner = post(
            command,
            "/v1/auth/signup",
            None,
            json!({"organization": {"name": organization, "defaultCurrency": "NZD"},
                   "user": {"email": email, "password": "quotes passphrase", "firstName": "Q", "lastName": "Owner"}}),
        )
        .await["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let customer = post(
            command,
            "/v1/customers",
            Some(&owner),
            json!({"legalName": customer, "currency": "NZD"}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        (owner, customer)
    }

    /// Quotes of one line each, created in order from (title, unit price,
    /// days from today they are valid for); their ids.
    async fn create_quotes(
        command: &str,
        owner: &str,
        customer: &str,
        quotes: &[(String, u32, u64)],
    ) -> Vec<String> {
        let today = chrono::Utc::now().date_naive();
        let mut ids = Vec::new();
        for (title, price, days) in quotes {
            let quote = post(
                command,
                "/v1/quotes",
                Some(owner),
                json!({"customerId": customer, "title": title,
                       "validUntil": (today + chrono::Days::new(*days)).to_string(),
                       "lines": [{"description": "Work", "quantity": "1", "unitPrice": price.to_string()}]}),
            )
            .await;
            ids.push(quote["id"].as_str().unwrap().to_owned());
        }
        ids
    }

    /// The titles of a page of quotes, in its order.
    fn titles(data: &Value) -> Vec<String> {
        data["quotes"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["title"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Checks the quotes `filter` matches, by validity, are `expected`
    /// (titles), and that the page's totalCount agrees.
    async fn expect_filtered(url: &str, token: &str, filter: &str, expected: &[&str]) {
        let data = graphql(
            url,
            token,
            &format!(
                "{{ quotes(filter: {{{filter}}}, orderBy: {{field: VALID_UNTIL, direction: ASC}}) {{ totalCount edges {{ node {{ title }} }} }} }}"
            ),
        )
        .await;
        assert_eq!(titles(&data), expected, "{filter}");
        assert_eq!(data["quotes"]["totalCount"], expected.len(), "{filter}");
    }

    /// Sends `operation` and checks it is refused as `BAD_USER_INPUT`
    /// with `message`; the answer.
    async fn refused_as_bad_input(url: &str, token: &str, operation: &str, message: &str) -> Value {
        let refused = answer(url, token, None, operation).await;
        let error = &refused["errors"][0];
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{refused}");
        assert_eq!(error["message"], message, "{refused}");
        refused
    }

    /// Checks a quotes `filter` is refused as `BAD_USER_INPUT` with
    /// `message`, and no page nor count answered.
    async fn filter_refused(url: &str, token: &str, filter: &str, message: &str) {
        let refused = refused_as_bad_input(
            url,
            token,
            &format!("{{ quotes(filter: {{{filter}}}) {{ totalCount edges {{ cursor }} }} }}"),
            message,
        )
        .await;
        assert_eq!(refused["data"], Value::Null, "{refused}");
    }

    /// Submits quote `id`: a change of the quote, out of `DRAFT`.
    async fn submit(command: &str, owner: &str, id: &str) {
        post(
            command,
            &format!("/v1/quotes/{id}/submit"),
            Some(owner),
            json!({}),
        )
        .await;
    }

    /// The principal of `token`, and a pool of one connection: every
    /// statement run on it is one backend's, whose own statistics (its
    /// prepared statements, the rows it read) a test can count.
    async fn principal_and_one_connection(
        env: &TestEnv,
        token: &str,
    ) -> (pivotal_auth::Principal, sqlx::PgPool) {
        let principal = pivotal_auth::TokenVerifier::from_settings(&env.settings.auth)
            .unwrap()
            .verify(token)
            .await
            .unwrap();
        let one = crate::one_connection(&env.database_url).await;
        (principal, one)
    }

    #[tokio::test]
    async fn quotes_filter_order_page_and_show_revisions() {
        let env = TestEnv::new().await;
        let (command, _c) = env.spawn_command_api().await;
        let (query, _q) = env.spawn_query_api().await;
        let (owner, customer) = owner_and_customer(&command, "Quotes Ltd", "Alpha Client").await;
        post(
            &command,
            "/v1/rate-cards",
            Some(&owner),
            json!({"name": "Zeta rates"}),
        )
        .await;
        let mut ids = Vec::new();
        for (title, price) in [
            ("Small job, ΟΔΟΣ", "100"),
            ("Big job", "5000"),
            ("Medium job", "900"),
        ] {
            let quote = post(
                &command,
                "/v1/quotes",
                Some(&owner),
                json!({"customerId": customer, "title": title,
                       "lines": [{"description": "Work", "quantity": "1", "unitPrice": price}]}),
            )
            .await;
            ids.push(quote["id"].as_str().unwrap().to_owned());
        }
        // The big one is approved (threshold 0: pending first), sent and revised.
        let big = &ids[1];
        post(
            &command,
            &format!("/v1/quotes/{big}/submit"),
            Some(&owner),
            json!({}),
        )
        .await;
        let edited = http()
            .put(format!("{command}/v1/quotes/{big}"))
            .bearer_auth(&owner)
            .json(&json!({"customerId": customer, "title": "Big job, revised",
                          "lines": [{"description": "Work", "quantity": "1", "unitPrice": "4500"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(edited.status(), 200);
        crate::project(&env, None).await;

        let data = graphql(
            &query,
            &owner,
            "{ quotes(orderBy: {field: TOTAL, direction: DESC}) { totalCount edges { node { title totals { total } } } } }",
        )
        .await;
        assert_eq!(
            titles(&data),
            ["Big job, revised", "Medium job", "Small job, ΟΔΟΣ"]
        );
        // Quotes run newest first, or largest first, unless a direction is
        // given (the same `OrderDirection` as every list's, with its own
        // default here).
        for (order, expected) in [
            ("", ["Medium job", "Big job, revised", "Small job, ΟΔΟΣ"]),
            (
                "(orderBy: {field: TOTAL})",
                ["Big job, revised", "Medium job", "Small job, ΟΔΟΣ"],
            ),
            (
                "(orderBy: {direction: ASC})",
                ["Small job, ΟΔΟΣ", "Big job, revised", "Medium job"],
            ),
        ] {
            let data = graphql(
                &query,
                &owner,
                &format!("{{ quotes{order} {{ edges {{ node {{ title }} }} }} }}"),
            )
            .await;
            assert_eq!(titles(&data), expected, "{order}");
        }
        let page = graphql(
            &query,
            &owner,
            "{ quotes(first: 2, orderBy: {field: NUMBER, direction: ASC}) { pageInfo { hasNextPage endCursor } edges { node { number } } } }",
        )
        .await;
        assert_eq!(page["quotes"]["pageInfo"]["hasNextPage"], true);
        let cursor = page["quotes"]["pageInfo"]["endCursor"].as_str().unwrap();
        let next = graphql(
            &query,
            &owner,
            &format!(r#"{{ quotes(first: 2, after: "{cursor}", orderBy: {{field: NUMBER, direction: ASC}}) {{ pageInfo {{ hasNextPage }} edges {{ node {{ number }} }} }} }}"#),
        )
        .await;
        assert_eq!(next["quotes"]["edges"].as_array().unwrap().len(), 1);
        assert_eq!(next["quotes"]["pageInfo"]["hasNextPage"], false);
        let searched = graphql(
            &query,
            &owner,
            &format!(r#"{{ quotes(filter: {{search: "medium", status: DRAFT, customerId: "{customer}"}}) {{ totalCount }} }}"#),
        )
        .await;
        assert_eq!(searched["quotes"]["totalCount"], 1);
        // A title is found by its own capitals, whatever its letters, and
        // numbers whatever the case asked (ADR 0060).
        for (search, count) in [("ΟΔΟΣ", 1), ("οδοσ", 1), ("q-", 3), ("JOB", 3)] {
            let found = graphql(
                &query,
                &owner,
                &format!(r#"{{ quotes(filter: {{search: "{search}"}}) {{ totalCount edges {{ node {{ id }} }} }} }}"#),
            )
            .await;
            assert_eq!(found["quotes"]["totalCount"], count, "{search}: {found}");
            assert_eq!(
                found["quotes"]["edges"].as_array().unwrap().len(),
                count,
                "{search}: {found}"
            );
        }
        let revised = graphql(
            &query,
            &owner,
            &format!(r#"{{ quote(id: "{big}") {{ revision status revisions {{ revision title totals {{ total }} }} statusHistory {{ from to }} }} rateCards {{ name }} }}"#),
        )
        .await;
        assert_eq!(revised["quote"]["revision"], 2);
        assert_eq!(revised["quote"]["status"], "DRAFT");
        assert_eq!(revised["quote"]["revisions"][0]["title"], "Big job");
        assert_eq!(
            revised["quote"]["revisions"][0]["totals"]["total"],
            "5000.00"
        );
        assert_eq!(revised["rateCards"][0]["name"], "Zeta rates");
        let bad: Value = http()
            .post(format!("{query}/graphql"))
            .bearer_auth(&owner)
            .json(&json!({"query": "{ quotes(first: 500) { totalCount } }"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

        // A page of quotes with their customers: one customer query in all,
        // counted by PostgreSQL on the loader's one connection (each
        // execution of a prepared statement is planned or reuses a plan).
        let (principal, one) = principal_and_one_connection(&env, &owner).await;
        let loader =
            pivotal_query_api::customers::CustomerLoader::new(one.clone(), principal.claims.org);
        let schema = pivotal_query_api::schema::build(env.pool.clone());
        let response = schema
            .execute(
                async_graphql::Request::new(
                    "{ quotes { edges { node { number customer { legalName } } } } }",
                )
                .data(principal)
                .data(async_graphql::dataloader::DataLoader::new(
                    loader,
                    tokio::spawn,
                )),
            )
            .await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        let data = response.data.into_json().unwrap();
        let names: Vec<&str> = data["quotes"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["customer"]["legalName"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Alpha Client"; 3]);
        let executions: Vec<(String, i64)> = sqlx::query_as(
            "SELECT statement, custom_plans + generic_plans FROM pg_prepared_statements
             WHERE strpos(statement, 'FROM rm_customers') > 0
               AND strpos(statement, 'pg_prepared_statements') = 0",
        )
        .fetch_all(&one)
        .await
        .unwrap();
        assert_eq!(executions.len(), 1, "{executions:?}");
        assert_eq!(executions[0].1, 1, "{executions:?}");
    }

    /// The numbers of a page of quotes, with its page info.
    async fn numbers(url: &str, token: &str, arguments: &str) -> (Vec<String>, Value) {
        let data = graphql(
            url,
            token,
            &format!(
                "{{ quotes({arguments}) {{ pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} edges {{ node {{ number }} }} }} }}"
            ),
        )
        .await;
        let numbers = data["quotes"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["number"].as_str().unwrap().to_owned())
            .collect();
        (numbers, data["quotes"]["pageInfo"].clone())
    }

    /// Every ordering pages forward and backward through the whole list,
    /// and a page read after quotes were added starts where the page
    /// before it ended (keyset cursors, ADR 0059: an offset would show the
    /// last quote of the page before again). Cursors of another ordering
    /// or with a key that is not of the ordering's type are refused.
    #[tokio::test]
    async fn quote_pages_keep_their_place_in_every_ordering_while_quotes_are_added() {
        let env = TestEnv::new().await;
        let (command, _c) = env.spawn_command_api().await;
        let (query, _q) = env.spawn_query_api().await;
        let (owner, customer) = owner_and_customer(&command, "Pages Ltd", "Paged Client").await;
        // Totals and validity in orders unlike creation's, one pair tied
        // on each so the id decides.
        let quotes = [(300, 40), (100, 10), (500, 40), (300, 20), (200, 50)]
            .map(|(price, days)| (format!("Job at {price}"), price, days));
        let ids = create_quotes(&command, &owner, &customer, &quotes).await;
        // The first quote is changed last.
        submit(&command, &owner, &ids[0]).await;
        crate::project(&env, None).await;

        for field in ["CREATED_AT", "NUMBER", "TOTAL", "VALID_UNTIL", "UPDATED_AT"] {
            for direction in ["ASC", "DESC"] {
                let order = format!("orderBy: {{field: {field}, direction: {direction}}}");
                let (all, _) = numbers(&query, &owner, &format!("first: 50, {order}")).await;
                assert_eq!(all.len(), 5, "{order}");
                let mut forward = Vec::new();
                let mut after = String::new();
                loop {
                    let (page, info) =
                        numbers(&query, &owner, &format!("first: 2, {after}{order}")).await;
                    assert_eq!(info["hasPreviousPage"], !forward.is_empty(), "{order}");
                    forward.extend(page);
                    if info["hasNextPage"] == false {
                        break;
                    }
                    after = format!("after: \"{}\", ", info["endCursor"].as_str().unwrap());
                }
                assert_eq!(forward, all, "forward, {order}");
                let mut backward = Vec::new();
                let mut before = String::new();
                loop {
                    let (mut page, info) =
                        numbers(&query, &owner, &format!("last: 2, {before}{order}")).await;
                    assert_eq!(info["hasNextPage"], !backward.is_empty(), "{order}");
                    page.append(&mut backward);
                    backward = page;
                    if info["hasPreviousPage"] == false {
                        break;
                    }
                    before = format!("before: \"{}\", ", info["startCursor"].as_str().unwrap());
                }
                assert_eq!(backward, all, "backward, {order}");
            }
        }
        // Each ordering sorts by its key and breaks ties by id (creation
        // order here: the ids are UUIDv7): totals 100, 200, 300, 300, 500;
        // validity 10, 20, 40, 40, 50 days; the first quote changed last.
        let (created, _) = numbers(
            &query,
            &owner,
            "first: 50, orderBy: {field: CREATED_AT, direction: ASC}",
        )
        .await;
        for (field, by_creation) in [
            ("TOTAL", [1, 4, 0, 3, 2]),
            ("VALID_UNTIL", [1, 3, 0, 2, 4]),
            ("UPDATED_AT", [1, 2, 3, 4, 0]),
        ] {
            let (sorted, _) = numbers(
                &query,
                &owner,
                &format!("first: 50, orderBy: {{field: {field}, direction: ASC}}"),
            )
            .await;
            assert_eq!(sorted, by_creation.map(|i| created[i].clone()), "{field}");
        }

        // Newest first, two a page; a quote is added between the pages.
        let newest = "orderBy: {field: CREATED_AT, direction: DESC}";
        let (before_adding, _) = numbers(&query, &owner, &format!("first: 50, {newest}")).await;
        let (first_page, info) = numbers(&query, &owner, &format!("first: 2, {newest}")).await;
        assert_eq!(first_page, before_adding[..2]);
        post(
            &command,
            "/v1/quotes",
            Some(&owner),
            json!({"customerId": customer, "title": "Added between pages",
                   "lines": [{"description": "Work", "quantity": "1", "unitPrice": "50"}]}),
        )
        .await;
        crate::project(&env, None).await;
        let end = info["endCursor"].as_str().unwrap();
        let (second_page, _) = numbers(
            &query,
            &owner,
            &format!("first: 2, after: \"{end}\", {newest}"),
        )
        .await;
        assert_eq!(second_page, before_adding[2..4]);

        // A cursor of another ordering, a key of the wrong type, a page
        // too long: each refused with its own message.
        let tampered = async_graphql::connection::CursorType::encode_cursor(
            &async_graphql::connection::OpaqueCursor(
                json!({"o": "Total:Asc", "k": "a lot", "id": uuid::Uuid::nil()}),
            ),
        );
        let malformed = pivotal_query_api::cursor::MalformedCursor.to_string();
        for (arguments, message) in [
            (
                format!("first: 2, after: \"{end}\", orderBy: {{field: NUMBER, direction: ASC}}"),
                "the cursor belongs to another ordering",
            ),
            (
                format!(
                    "first: 2, after: \"{tampered}\", orderBy: {{field: TOTAL, direction: ASC}}"
                ),
                malformed.as_str(),
            ),
            ("last: 500".to_owned(), "last must be at most 100"),
        ] {
            refused_as_bad_input(
                &query,
                &owner,
                &format!("{{ quotes({arguments}) {{ edges {{ cursor }} }} }}"),
                message,
            )
            .await;
        }
    }

    /// Quotes filtered by the dates they were created on and are valid
    /// until, alone and with a status: the page and its totalCount agree
    /// (a date filter is never answered from the counts kept per status).
    /// A range that ends before it starts is refused, naming both bounds.
    /// A creation date is a day of the organization's time zone.
    #[tokio::test]
    async fn quotes_filter_by_creation_and_validity_dates() {
        let env = TestEnv::new().await;
        let (command, _c) = env.spawn_command_api().await;
        let (query, _q) = env.spawn_query_api().await;
        let (owner, customer) = owner_and_customer(&command, "Dates Ltd", "Dated Client").await;
        let today = chrono::Utc::now().date_naive();
        let day = |days: i64| today + chrono::Duration::days(days);
        let quotes = [10, 20, 30, 40].map(|days| (format!("Valid {days}"), 100, days));
        let ids = create_quotes(&command, &owner, &customer, &quotes).await;
        // The one valid for 30 days is a draft no longer.
        submit(&command, &owner, &ids[2]).await;
        crate::project(&env, None).await;

        for (filter, expected) in [
            (
                format!(
                    "validUntilFrom: \"{}\", validUntilTo: \"{}\"",
                    day(20),
                    day(30)
                ),
                vec!["Valid 20", "Valid 30"],
            ),
            (
                format!(
                    "validUntilFrom: \"{}\", validUntilTo: \"{}\", status: DRAFT",
                    day(20),
                    day(30)
                ),
                vec!["Valid 20"],
            ),
            (format!("validUntilTo: \"{}\"", day(10)), vec!["Valid 10"]),
            (
                format!("validUntilFrom: \"{}\", status: DRAFT", day(25)),
                vec!["Valid 40"],
            ),
            (
                format!("createdFrom: \"{today}\", createdTo: \"{today}\""),
                vec!["Valid 10", "Valid 20", "Valid 30", "Valid 40"],
            ),
            (format!("createdFrom: \"{}\"", day(1)), vec![]),
            (format!("createdTo: \"{}\", status: DRAFT", day(-1)), vec![]),
        ] {
            expect_filtered(&query, &owner, &filter, &expected).await;
        }

        for (filter, message) in [
            (
                format!("createdFrom: \"{today}\", createdTo: \"{}\"", day(-1)),
                format!(
                    "createdFrom ({today}) must be on or before createdTo ({})",
                    day(-1)
                ),
            ),
            (
                format!(
                    "validUntilFrom: \"{}\", validUntilTo: \"{}\"",
                    day(30),
                    day(20)
                ),
                format!(
                    "validUntilFrom ({}) must be on or before validUntilTo ({})",
                    day(30),
                    day(20)
                ),
            ),
        ] {
            filter_refused(&query, &owner, &filter, &message).await;
        }
        // A date that is no date: refused before execution, naming the
        // filter's field and the type, with no data.
        let malformed = answer(
            &query,
            &owner,
            None,
            r#"{ quotes(filter: {validUntilFrom: "2026-13-01"}) { totalCount } }"#,
        )
        .await;
        let error = &malformed["errors"][0];
        assert_eq!(
            error["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
            "{malformed}"
        );
        assert_eq!(
            error["message"],
            r#"Invalid value for argument "filter.validUntilFrom", expected type "NaiveDate""#,
            "{malformed}"
        );
        assert_eq!(malformed["data"], Value::Null, "{malformed}");

        // Creation dates are the organization's days: in Auckland (UTC+13
        // in March) 11:30 UTC on 1 March is 00:30 on 2 March. The first
        // quote's row is given that creation time (a command's is now).
        let settings = http()
            .put(format!("{command}/v1/organization/settings"))
            .bearer_auth(&owner)
            .json(
                &json!({"defaultCurrency": "NZD", "timeZone": "Pacific/Auckland",
                          "fiscalYearStartMonth": 4,
                          "tax": {"defaultRateBasisPoints": 1500, "pricesIncludeTax": false}}),
            )
            .send()
            .await
            .unwrap();
        assert!(settings.status().is_success(), "{}", settings.status());
        crate::project(&env, None).await;
        sqlx::query("UPDATE rm_quotes SET created_at = '2026-03-01T11:30:00Z' WHERE id = $1")
            .bind(uuid::Uuid::parse_str(&ids[0]).unwrap())
            .execute(&env.pool)
            .await
            .unwrap();
        for (filter, expected) in [
            (
                r#"createdFrom: "2026-03-02", createdTo: "2026-03-02""#,
                vec!["Valid 10"],
            ),
            (
                r#"createdFrom: "2026-03-01", createdTo: "2026-03-01""#,
                vec![],
            ),
            (r#"createdTo: "2026-03-01""#, vec![]),
            (
                r#"createdTo: "2026-03-02", status: DRAFT"#,
                vec!["Valid 10"],
            ),
        ] {
            expect_filtered(&query, &owner, filter, &expected).await;
        }
    }

    /// `statuses` keeps quotes in any of several statuses, counted once
    /// each however often a status is named, from the kept counts alone
    /// or with other filters from the rows; with `status` too, or naming
    /// none, it is refused.
    #[tokio::test]
    async fn quotes_filter_by_any_of_several_statuses() {
        let env = TestEnv::new().await;
        let (command, _c) = env.spawn_command_api().await;
        let (query, _q) = env.spawn_query_api().await;
        let (owner, customer) = owner_and_customer(&command, "Statuses Ltd", "Status Client").await;
        let today = chrono::Utc::now().date_naive();
        let quotes = [10, 20, 30, 40].map(|days| (format!("Valid {days}"), 100, days));
        let ids = create_quotes(&command, &owner, &customer, &quotes).await;
        // Valid 10 stays a draft; 20 and 30 wait for approval (the
        // threshold is 0); 40 is cancelled.
        submit(&command, &owner, &ids[1]).await;
        submit(&command, &owner, &ids[2]).await;
        post(
            &command,
            &format!("/v1/quotes/{}/cancel", ids[3]),
            Some(&owner),
            json!({}),
        )
        .await;
        crate::project(&env, None).await;

        for (filter, expected) in [
            (
                "statuses: [DRAFT, CANCELLED]".to_owned(),
                vec!["Valid 10", "Valid 40"],
            ),
            (
                "statuses: [PENDING_APPROVAL]".to_owned(),
                vec!["Valid 20", "Valid 30"],
            ),
            ("statuses: [DRAFT, DRAFT]".to_owned(), vec!["Valid 10"]),
            ("statuses: [SENT, ACCEPTED]".to_owned(), vec![]),
            (
                "statuses: [CANCELLED, PENDING_APPROVAL, DRAFT]".to_owned(),
                vec!["Valid 10", "Valid 20", "Valid 30", "Valid 40"],
            ),
            (
                format!(
                    "statuses: [DRAFT, PENDING_APPROVAL], validUntilTo: \"{}\"",
                    today + chrono::Days::new(20)
                ),
                vec!["Valid 10", "Valid 20"],
            ),
            (
                "statuses: [CANCELLED, PENDING_APPROVAL], search: \"valid\"".to_owned(),
                vec!["Valid 20", "Valid 30", "Valid 40"],
            ),
            (
                "status: PENDING_APPROVAL".to_owned(),
                vec!["Valid 20", "Valid 30"],
            ),
        ] {
            expect_filtered(&query, &owner, &filter, &expected).await;
        }

        for (filter, message) in [
            (
                "status: DRAFT, statuses: [SENT]",
                "give status or statuses, not both",
            ),
            ("statuses: []", "statuses must name at least one status"),
        ] {
            filter_refused(&query, &owner, filter, message).await;
        }
    }

    /// Rows of `table` read (by sequential and index scans) by the one
    /// backend behind `one`, until now: its pending statistics are
    /// flushed first.
    async fn rows_read(one: &sqlx::PgPool, table: &str) -> i64 {
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(one)
            .await
            .unwrap();
        let (read,): (i64,) = sqlx::query_as(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)
             FROM pg_stat_user_tables WHERE relid = $1::regclass",
        )
        .bind(table)
        .fetch_one(one)
        .await
        .unwrap();
        read
    }

    /// Each ordering of quotes, customers and users reads a page and the
    /// page after it through an index (ADR 0059, 0060): a few rows each,
    /// however many the organization has, where a sort reads them all.
    #[tokio::test]
    async fn every_ordering_reads_its_pages_through_an_index() {
        const COPIES: i64 = 3000;
        let env = TestEnv::new().await;
        let (command, _c) = env.spawn_command_api().await;
        let (owner, customer) = owner_and_customer(&command, "Many Ltd", "Copied Client").await;
        post(
            &command,
            "/v1/quotes",
            Some(&owner),
            json!({"customerId": customer, "title": "Copied",
                   "lines": [{"description": "Work", "quantity": "1", "unitPrice": "10"}]}),
        )
        .await;
        crate::project(&env, None).await;
        // Copies of the one quote and the one customer under new ids, with
        // keys spread out.
        sqlx::query(
            "INSERT INTO rm_quotes (organization_id, id, number, customer_id, title, status,
                 currency, total, valid_until, revision, state, version, created_at, updated_at)
             SELECT organization_id, gen_random_uuid(), number || '-' || g, customer_id, title,
                 status, currency, total + (g * 7919) % 1000, valid_until + (g % 300)::int, revision,
                 state, version, created_at + g * interval '1 second',
                 updated_at + ((g * 7919) % 5000) * interval '1 second'
             FROM rm_quotes, generate_series(1, $1) g",
        )
        .bind(COPIES)
        .execute(&env.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO rm_customers (organization_id, id, legal_name, display_name, currency,
                 payment_terms_days, tags, status, version, created_at, updated_at)
             SELECT organization_id, gen_random_uuid(), legal_name || g, display_name || g,
                 currency, payment_terms_days, tags, status, version, created_at,
                 updated_at + ((g * 7919) % 5000) * interval '1 second'
             FROM rm_customers, generate_series(1, $1) g",
        )
        .bind(COPIES)
        .execute(&env.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO rm_users (organization_id, id, email, first_name, last_name, status,
                 roles, mfa_enabled, last_login_at, login_count, state, version, created_at,
                 updated_at)
             SELECT organization_id, gen_random_uuid(), g || email, first_name || (g % 7),
                 last_name || ((g * 7919) % 1000), status, roles, mfa_enabled, last_login_at,
                 login_count, state, version, created_at + g * interval '1 second',
                 updated_at + ((g * 7919) % 5000) * interval '1 second'
             FROM rm_users, generate_series(1, $1) g",
        )
        .bind(COPIES)
        .execute(&env.pool)
        .await
        .unwrap();
        sqlx::query("ANALYZE rm_quotes, rm_customers, rm_users")
            .execute(&env.pool)
            .await
            .unwrap();

        let (principal, one) = principal_and_one_connection(&env, &owner).await;
        let schema = pivotal_query_api::schema::build(one.clone());
        let run = |query: String| {
            let (schema, principal) = (schema.clone(), principal.clone());
            async move {
                let response = schema
                    .execute(async_graphql::Request::new(query).data(principal))
                    .await;
                assert!(response.errors.is_empty(), "{:?}", response.errors);
                response.data.into_json().unwrap()
            }
        };
        let mut orderings: Vec<(&str, String)> = Vec::new();
        for field in ["CREATED_AT", "NUMBER", "TOTAL", "VALID_UNTIL", "UPDATED_AT"] {
            orderings.push(("quotes", field.to_owned()));
        }
        orderings.push(("customers", "UPDATED_AT".to_owned()));
        for field in ["NAME", "CREATED_AT", "UPDATED_AT"] {
            orderings.push(("users", field.to_owned()));
        }
        for (list, field) in orderings {
            let table = format!("rm_{list}");
            for direction in ["ASC", "DESC"] {
                let order = format!("orderBy: {{field: {field}, direction: {direction}}}");
                let before = rows_read(&one, &table).await;
                let page = run(format!(
                    "{{ {list}(first: 20, {order}) {{ pageInfo {{ endCursor }} edges {{ cursor }} }} }}"
                ))
                .await;
                let end = page[list]["pageInfo"]["endCursor"].as_str().unwrap();
                let next = run(format!(
                    "{{ {list}(first: 20, after: \"{end}\", {order}) {{ edges {{ cursor }} }} }}"
                ))
                .await;
                assert_eq!(next[list]["edges"].as_array().unwrap().len(), 20);
                let read = rows_read(&one, &table).await - before;
                // Two pages of 20 rows, each read with one more, and a
                // little slack for the plan; none read at all would be
                // statistics that were never flushed.
                assert!(
                    (40..=60).contains(&read),
                    "{list} {order}: {read} rows read for two pages"
                );
            }
        }
    }

    /// A quote read under its command's token shows its customer as the
    /// writer had seen it, whatever order the projections applied the two
    /// aggregates in: the customer's projections are waited for up to the
    /// token's position (STALE_READ past the bound, never the old name),
    /// and a later change to the customer is not waited for.
    #[tokio::test]
    async fn a_quote_under_its_token_shows_its_customer_as_of_that_token() {
        let mut env = TestEnv::new().await;
        let (command, _c) = env.spawn_command_api().await;
        env.settings.query_api.consistency_wait_ms = 500;
        let (short, _s) = env.spawn_query_api().await;
        env.settings.query_api.consistency_wait_ms = 60_000;
        let (long, _l) = env.spawn_query_api().await;
        let (owner, customer) = owner_and_customer(&command, "Tokens Ltd", "Before Limited").await;
        let lines = json!([{"description": "Work", "quantity": "1", "unitPrice": "100"}]);
        let quote = post(
            &command,
            "/v1/quotes",
            Some(&owner),
            json!({"customerId": customer, "title": "First", "lines": lines}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        crate::project(&env, None).await;

        // The customer is renamed, then the quote edited; only the quote's
        // projection has applied its change.
        post(
            &command,
            &format!("/v1/customers/{customer}/rename"),
            Some(&owner),
            json!({"legalName": "After Limited"}),
        )
        .await;
        let edited = http()
            .put(format!("{command}/v1/quotes/{quote}"))
            .bearer_auth(&owner)
            .json(&json!({"customerId": customer, "title": "Revised", "lines": lines}))
            .send()
            .await
            .unwrap();
        assert_eq!(edited.status(), 200);
        let token = edited.headers()["x-consistency-token"]
            .to_str()
            .unwrap()
            .to_owned();
        crate::project(&env, Some("quotes")).await;

        let one = format!(r#"{{ quote(id: "{quote}") {{ title customer {{ legalName }} }} }}"#);
        let one_with_argument = format!(
            r#"{{ quote(id: "{quote}", consistencyToken: "{token}") {{ title customer {{ legalName }} }} }}"#
        );
        let page = format!(
            r#"{{ quotes(consistencyToken: "{token}") {{ edges {{ node {{ title customer {{ legalName }} }} }} }} }}"#
        );
        for (query, consistency, quote_path, customer_path) in [
            (
                &one,
                Some(token.as_str()),
                "/data/quote",
                json!(["quote", "customer"]),
            ),
            (
                &one_with_argument,
                None,
                "/data/quote",
                json!(["quote", "customer"]),
            ),
            (
                &page,
                None,
                "/data/quotes/edges/0/node",
                json!(["quotes", "edges", 0, "node", "customer"]),
            ),
        ] {
            let stale = answer(&short, &owner, consistency, query).await;
            assert_eq!(
                stale["errors"][0]["extensions"]["code"], "STALE_READ",
                "{query}: {stale}"
            );
            assert_eq!(stale["errors"][0]["path"], customer_path, "{stale}");
            let read = stale.pointer(quote_path).unwrap();
            assert_eq!(read["title"], "Revised", "{stale}");
            assert_eq!(read["customer"], Value::Null, "{stale}");
        }
        // Without a token, the read model as it is.
        let as_is = answer(&short, &owner, None, &one).await;
        assert_eq!(
            as_is["data"]["quote"]["customer"]["legalName"], "Before Limited",
            "{as_is}"
        );

        // Under a long bound the customer's field waits until its
        // projections have the rename.
        let pending = tokio::spawn({
            let (long, owner, token, one) =
                (long.clone(), owner.clone(), token.clone(), one.clone());
            async move { answer(&long, &owner, Some(&token), &one).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        crate::project(&env, None).await;
        let waited = pending.await.unwrap();
        assert!(waited.get("errors").is_none(), "{waited}");
        assert_eq!(waited["data"]["quote"]["title"], "Revised");
        assert_eq!(
            waited["data"]["quote"]["customer"]["legalName"], "After Limited",
            "{waited}"
        );

        // A rename after the token, not projected, is not waited for: the
        // short bound answers, with the customer as of the token.
        post(
            &command,
            &format!("/v1/customers/{customer}/rename"),
            Some(&owner),
            json!({"legalName": "Later Limited"}),
        )
        .await;
        for (query, consistency) in [(&one, Some(token.as_str())), (&page, None)] {
            let read = answer(&short, &owner, consistency, query).await;
            assert!(read.get("errors").is_none(), "{read}");
            let node = read
                .pointer("/data/quote")
                .or_else(|| read.pointer("/data/quotes/edges/0/node"))
                .unwrap();
            assert_eq!(node["customer"]["legalName"], "After Limited", "{read}");
        }
    }

    /// The introspection query of current tooling (a type reference
    /// followed through nine levels of `ofType`) is answered; one level
    /// more passes the depth limit and is refused as invalid.
    #[tokio::test]
    async fn the_introspection_of_current_tooling_is_answered_and_no_deeper() {
        let env = TestEnv::new().await;
        let schema = pivotal_query_api::schema::build(env.pool.clone());
        let nested = |levels: usize| {
            format!(
                "{{ __schema {{ types {{ fields {{ args {{ type {{ name {}name{} }} }} }} }} }} }}",
                "ofType { ".repeat(levels),
                " }".repeat(levels)
            )
        };
        let answered = schema.execute(nested(9)).await;
        assert!(answered.errors.is_empty(), "{:?}", answered.errors);
        let data = answered.data.into_json().unwrap();
        assert!(
            !data["__schema"]["types"].as_array().unwrap().is_empty(),
            "{data}"
        );
        let refused = serde_json::to_value(schema.execute(nested(10)).await).unwrap();
        assert_eq!(
            refused["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
            "{refused}"
        );
        assert!(
            refused["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("nested too deep"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn introspection_can_be_switched_off() {
        let env = TestEnv::new().await;
        let changes = pivotal_query_api::live::Changes::default();
        let on =
            pivotal_query_api::schema::build_with(env.pool.clone(), true, changes.clone(), None);
        let off = pivotal_query_api::schema::build_with(env.pool.clone(), false, changes, None);
        let query = "{ __schema { queryType { name } } }";
        let answered = on.execute(query).await;
        assert!(answered.errors.is_empty());
        assert_eq!(
            answered.data.into_json().unwrap()["__schema"]["queryType"]["name"],
            "Query"
        );
        let refused = off.execute(query).await;
        let data = refused.data.into_json().unwrap();
        assert!(
            !refused.errors.is_empty() || data["__schema"].is_null(),
            "{data}"
        );
    }
}

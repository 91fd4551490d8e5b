//! Keyset paging of the user list (v2): `after` takes the `next_cursor` of the page before.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::helpers::{PASSWORD, TestApp, spawn_app};

const SORTS: [&str; 6] = [
    "created_at",
    "-created_at",
    "name",
    "-name",
    "email",
    "-email",
];

/// Registers `n` users whose names repeat (so that name sorts have ties), and returns
/// every user, the admin included, as the list shows them.
async fn populate(app: &TestApp, admin: &str, n: usize) -> Vec<Value> {
    let names = ["Delta", "alpha", "Charlie", "bravo", "Écho"];
    for i in 0..n {
        app.register_user(
            names[i % names.len()],
            &format!("user{:02}@example.com", (i * 7) % n),
            None,
        )
        .await;
    }
    let everyone = app.list("per_page=100", admin).await;
    everyone.assert_status(200);
    let users = everyone.json()["items"].as_array().unwrap().clone();
    assert_eq!(users.len(), n + 1);
    users
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {page}"))
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

fn id_of(user: &Value) -> String {
    user["id"].as_str().unwrap().to_owned()
}

/// The ids of `users` in the order `sort` promises: by the key, ties broken by id, both
/// in the sort's direction.
fn expected_order(users: &[Value], sort: &str) -> Vec<String> {
    let field = sort.trim_start_matches('-');
    let key = |user: &Value| -> (i128, String, String) {
        let text = user[field].as_str().unwrap().to_owned();
        match field {
            "created_at" => (
                OffsetDateTime::parse(&text, &Rfc3339)
                    .expect("an RFC 3339 time")
                    .unix_timestamp_nanos(),
                String::new(),
                id_of(user),
            ),
            _ => (0, text, id_of(user)),
        }
    };
    let mut sorted: Vec<&Value> = users.iter().collect();
    sorted.sort_by_key(|u| key(u));
    if sort.starts_with('-') {
        sorted.reverse();
    }
    sorted.into_iter().map(id_of).collect()
}

/// Lists `query` from its first page on, following `next_cursor` to the end; every page
/// after the first is asked for with `after` only. Returns the pages.
async fn walk(app: &TestApp, admin: &str, query: &str) -> Vec<Value> {
    let first = app.list(query, admin).await;
    first.assert_status(200);
    let mut pages = vec![first.json()];
    while let Some(cursor) = pages.last().unwrap()["next_cursor"].as_str() {
        let reply = app.list(&format!("{query}&after={cursor}"), admin).await;
        reply.assert_status(200);
        pages.push(reply.json());
        assert!(pages.len() <= 100, "the walk of {query:?} does not end");
    }
    pages
}

fn walked_ids(pages: &[Value]) -> Vec<String> {
    pages.iter().flat_map(ids).collect()
}

/// A 400 problem about the `after` parameter.
#[track_caller]
fn assert_bad_after(reply: &crate::helpers::Reply, what: &str) {
    let body = reply.assert_problem(400);
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("after")),
        "{what}: the problem does not name after: {body}"
    );
}

#[tokio::test]
async fn following_next_cursor_walks_every_sort_like_the_page_numbers() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let users = populate(&app, &admin, 24).await; // 25 with the admin
    for sort in SORTS {
        let expected = expected_order(&users, sort);
        let mut by_number = Vec::new();
        for page in 1..=4 {
            let reply = app
                .list(&format!("sort={sort}&per_page=7&page={page}"), &admin)
                .await;
            reply.assert_status(200);
            let body = reply.json();
            assert_eq!(body["page"], json!(page), "{sort}");
            by_number.extend(ids(&body));
        }
        assert_eq!(by_number, expected, "{sort}: by page number");

        let pages = walk(&app, &admin, &format!("sort={sort}&per_page=7")).await;
        let sizes: Vec<usize> = pages.iter().map(|p| ids(p).len()).collect();
        assert_eq!(sizes, [7, 7, 7, 4], "{sort}: page sizes");
        assert_eq!(walked_ids(&pages), expected, "{sort}: by cursor");
        // The first page was asked for without `after`: it is page 1.
        assert_eq!(pages[0]["page"], json!(1), "{sort}");
        for (i, page) in pages.iter().enumerate() {
            assert_eq!(page["per_page"], json!(7), "{sort} page {i}");
            assert_eq!(page["total"], json!(25), "{sort} page {i}");
            assert_eq!(page["total_pages"], json!(4), "{sort} page {i}");
            if i > 0 {
                assert!(
                    page.get("page").is_some_and(Value::is_null),
                    "{sort} page {i}: page is null in cursor mode: {page}"
                );
            }
            let last = i == pages.len() - 1;
            assert_eq!(
                page["next_cursor"].is_null(),
                last,
                "{sort} page {i}: next_cursor only before the last page: {page}"
            );
            assert!(
                page.get("next_cursor").is_some(),
                "{sort} page {i}: next_cursor is always present"
            );
        }
    }
    // A list that fits one page has no next page, with numbers or not.
    let one = app.list("sort=name&per_page=25", &admin).await.json();
    assert_eq!(ids(&one).len(), 25);
    assert!(one["next_cursor"].is_null(), "{one}");
    // A list that ends exactly at the end of a page: that page has no next_cursor.
    let pages = walk(&app, &admin, "sort=email&per_page=5").await;
    assert_eq!(pages.len(), 5);
    assert_eq!(walked_ids(&pages), expected_order(&users, "email"));
    // per_page may differ from page to page.
    let first = app.list("sort=-name&per_page=10", &admin).await.json();
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = app
        .list(&format!("sort=-name&per_page=100&after={cursor}"), &admin)
        .await;
    rest.assert_status(200);
    let rest = rest.json();
    assert!(rest["next_cursor"].is_null());
    assert_eq!(rest["total_pages"], json!(1));
    let mut both = ids(&first);
    both.extend(ids(&rest));
    assert_eq!(both, expected_order(&users, "-name"));
}

#[tokio::test]
async fn a_cursor_of_another_sort_or_filter_or_junk_is_a_400_naming_after() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    populate(&app, &admin, 6).await;
    let first = app.list("sort=name&per_page=2", &admin).await.json();
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    // The cursor works where it was made.
    app.list(&format!("sort=name&per_page=2&after={cursor}"), &admin)
        .await
        .assert_status(200);
    for (query, what) in [
        (format!("sort=email&after={cursor}"), "another sort"),
        (format!("sort=-name&after={cursor}"), "the other order"),
        (format!("after={cursor}"), "the default sort"),
        (format!("sort=name&role=user&after={cursor}"), "a role"),
        (format!("sort=name&active=true&after={cursor}"), "active"),
        (format!("sort=name&q=example&after={cursor}"), "a q"),
        (format!("sort=name&page=2&after={cursor}"), "with page"),
        (format!("sort=name&page=1&after={cursor}"), "with page 1"),
        ("sort=name&after=".to_owned(), "an empty after"),
        ("sort=name&after=not-a-cursor".to_owned(), "junk"),
        ("sort=name&after=%21%21%21".to_owned(), "not base64"),
        (
            format!("sort=name&after={}", URL_SAFE_NO_PAD.encode(b"[\"alpha\"]")),
            "a JSON array that is no cursor",
        ),
        (
            format!(
                "sort=name&after={}{}",
                &cursor[..cursor.len() - 1],
                if cursor.ends_with('A') { 'B' } else { 'A' }
            ),
            "a damaged cursor",
        ),
    ] {
        assert_bad_after(&app.list(&query, &admin).await, what);
    }

    // A cursor made under filters works only with the same ones.
    let filtered = "sort=email&role=user&active=true&q=example&per_page=2";
    let first = app.list(filtered, &admin).await.json();
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    app.list(&format!("{filtered}&after={cursor}"), &admin)
        .await
        .assert_status(200);
    for (query, what) in [
        (
            format!("sort=email&active=true&q=example&per_page=2&after={cursor}"),
            "without the role",
        ),
        (
            format!("sort=email&role=admin&active=true&q=example&per_page=2&after={cursor}"),
            "another role",
        ),
        (
            format!("sort=email&role=user&q=example&per_page=2&after={cursor}"),
            "without active",
        ),
        (
            format!("sort=email&role=user&active=false&q=example&per_page=2&after={cursor}"),
            "another active",
        ),
        (
            format!("sort=email&role=user&active=true&per_page=2&after={cursor}"),
            "without q",
        ),
        (
            format!("sort=email&role=user&active=true&q=user&per_page=2&after={cursor}"),
            "another q",
        ),
    ] {
        assert_bad_after(&app.list(&query, &admin).await, what);
    }

    // A cursor whose fields were changed keeps its binding but not its sense: 400, not 500.
    let first = app.list("sort=created_at&per_page=2", &admin).await.json();
    let cursor = first["next_cursor"].as_str().unwrap();
    let mut fields: Vec<String> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(cursor).unwrap()).unwrap();
    assert_eq!(fields.len(), 3, "key, id and binding: {fields:?}");
    for (index, value) in [(0, "yesterday"), (1, "not-an-id"), (0, "")] {
        let original = fields[index].clone();
        fields[index] = value.to_owned();
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&fields).unwrap());
        assert_bad_after(
            &app.list(
                &format!("sort=created_at&per_page=2&after={forged}"),
                &admin,
            )
            .await,
            &format!("field {index} = {value:?}"),
        );
        fields[index] = original;
    }
}

#[tokio::test]
async fn the_cursor_walks_a_filtered_list_with_the_same_filters() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for i in 0..16 {
        let role = if i % 4 == 0 { "admin" } else { "user" };
        let created = app
            .create_user(
                &json!({
                    "name": format!("Member {}", (i * 5) % 16),
                    "email": format!("member{i:02}@example.{}", if i % 3 == 0 { "org" } else { "com" }),
                    "password": PASSWORD,
                    "role": role,
                    "active": i % 5 != 0,
                }),
                &admin,
            )
            .await;
        created.assert_status(201);
    }
    let everyone = app.list("per_page=100", &admin).await.json();
    let users = everyone["items"].as_array().unwrap().clone();
    for (filters, matches) in [
        (
            "role=user&active=true",
            (|u: &Value| u["role"] == "user" && u["active"] == true) as fn(&Value) -> bool,
        ),
        ("role=admin", |u: &Value| u["role"] == "admin"),
        ("active=false", |u: &Value| u["active"] == false),
        ("q=EXAMPLE.COM&active=true", |u: &Value| {
            u["email"].as_str().unwrap().ends_with(".com") && u["active"] == true
        }),
        ("q=member&role=user&active=true", |u: &Value| {
            u["role"] == "user" && u["active"] == true
        }),
        ("q=ber%201", |u: &Value| {
            u["name"].as_str().unwrap().starts_with("Member 1")
        }),
    ] {
        let selected: Vec<Value> = users.iter().filter(|u| matches(u)).cloned().collect();
        assert!(selected.len() >= 3, "{filters}: too few users to page");
        for sort in ["name", "-created_at", "-email"] {
            let query = format!("{filters}&sort={sort}&per_page=2");
            let pages = walk(&app, &admin, &query).await;
            assert_eq!(
                walked_ids(&pages),
                expected_order(&selected, sort),
                "{query}"
            );
            assert_eq!(pages.len(), selected.len().div_ceil(2), "{query}: pages");
            for page in &pages {
                assert_eq!(page["total"], json!(selected.len()), "{query}");
            }
        }
    }
}

#[tokio::test]
async fn a_user_deleted_between_pages_does_not_break_the_walk() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let users = populate(&app, &admin, 24).await;
    for sort in ["email", "-created_at", "name"] {
        let before = app.list("per_page=100", &admin).await.json();
        let current = before["items"].as_array().unwrap().clone();
        let expected = expected_order(&current, sort);
        let query = format!("sort={sort}&per_page=5");
        let first = app.list(&query, &admin).await.json();
        assert_eq!(ids(&first), expected[..5]);
        // Delete the user the cursor points at, and one not yet listed.
        let cursor_user = expected[4].clone();
        let ahead = expected[7].clone();
        for id in [&cursor_user, &ahead] {
            app.delete(id, &admin).await.assert_status(204);
        }
        let mut walked = ids(&first);
        let mut cursor = first["next_cursor"].as_str().unwrap().to_owned();
        loop {
            let reply = app.list(&format!("{query}&after={cursor}"), &admin).await;
            reply.assert_status(200);
            let page = reply.json();
            assert_eq!(page["total"], json!(current.len() - 2), "{sort}");
            walked.extend(ids(&page));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => break,
            }
        }
        let remaining: Vec<String> = expected
            .iter()
            .filter(|id| **id != ahead)
            .cloned()
            .collect();
        assert_eq!(
            walked, remaining,
            "{sort}: each remaining user once, in order"
        );
    }
    assert_eq!(
        app.list("per_page=100", &admin).await.json()["total"],
        json!(users.len() - 6)
    );
}

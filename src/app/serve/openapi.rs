//! The OpenAPI 3.1 document, generated from the route table ([`super::table::ROUTES`]) — the
//! same list the router is built from — with the request bodies' schemas and examples (a test
//! checks each example reads as the body type its routes take).

use serde_json::{json, Map, Value};

use super::spec::{Access, In, Method, Produces, RouteSpec};

/// The document for routes under `base_path` (`""` for `/`).
pub fn document(routes: &[RouteSpec], base_path: &str) -> Value {
    let mut paths = Map::new();
    for r in routes {
        let entry = paths
            .entry(openapi_path(r.path))
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = entry.as_object_mut() {
            m.insert(method_key(r.method).into(), operation(r));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "redrive API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The reads and changes of the redrive CLI over HTTP, per token: a role \
                (viewer: reads; operator: + replay, resolve, discard, cancel, assign, escalate, \
                note, fold; admin: + purge and \
                breaker control) and a scope (every tenant or a list; another tenant's data \
                answers 404). Changes go through the admin command stream, exactly once and \
                audited under the token's name. Every error is {\"error\": {\"code\", \"message\"}}.",
        },
        "servers": [{"url": if base_path.is_empty() { "/" } else { base_path }}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "A token from `redrive serve token`, declared in [[serve.tokens]]."},
                "session": {"type": "apiKey", "in": "cookie", "name": "redrive_session",
                            "description": "The console's browser session (opened by logging in at the base path's /login). A request other than a read also needs the session's CSRF token in the X-CSRF-Token header (403 `csrf` without it)."}
            },
            "schemas": schemas(),
        },
    })
}

/// `{*task_id}` (axum's rest-of-path) as OpenAPI writes it: `{task_id}`.
pub fn openapi_path(path: &str) -> String {
    path.replace("{*", "{")
}

fn method_key(m: Method) -> &'static str {
    match m {
        Method::Get => "get",
        Method::Post => "post",
    }
}

fn operation(r: &RouteSpec) -> Value {
    let mut op = Map::new();
    let id: String = format!("{}{}", method_key(r.method), r.path)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    op.insert("operationId".into(), json!(id.trim_end_matches('_')));
    op.insert("summary".into(), json!(r.summary));
    match r.access {
        Access::Public => {
            op.insert("security".into(), json!([]));
        }
        Access::Token(role) => {
            op.insert("security".into(), json!([{"bearer": []}, {"session": []}]));
            op.insert("x-redrive-role".into(), json!(role.as_str()));
        }
    }
    op.insert("x-redrive-change".into(), json!(r.change));
    let params: Vec<Value> = r
        .params
        .iter()
        .map(|p| {
            let schema = if p.repeated {
                json!({"type": "array", "items": {"type": p.kind}})
            } else {
                json!({"type": p.kind})
            };
            let mut v = json!({
                "name": p.name,
                "in": if p.location == In::Path { "path" } else { "query" },
                "required": p.location == In::Path,
                "description": p.description,
                "schema": schema,
            });
            if p.repeated {
                if let Some(m) = v.as_object_mut() {
                    m.insert("style".into(), json!("form"));
                    m.insert("explode".into(), json!(true));
                }
            }
            v
        })
        .collect();
    if !params.is_empty() {
        op.insert("parameters".into(), json!(params));
    }
    if let Some(body) = r.body {
        op.insert(
            "requestBody".into(),
            json!({
                "required": false,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}
            }),
        );
    }
    let mut responses = Map::new();
    for (code, what) in r.statuses() {
        let content = if code < 300 {
            match r.produces {
                Produces::Json => json!({"application/json": {"schema": {"type": "object"}}}),
                Produces::NdJson => {
                    json!({"application/x-ndjson": {"schema": {"type": "string"}}})
                }
            }
        } else {
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}})
        };
        responses.insert(
            code.to_string(),
            json!({"description": what, "content": content}),
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// A filter of dead letters, as a change's body gives it.
fn filter_schema() -> Value {
    let list =
        |what: &str| json!({"type": "array", "items": {"type": "string"}, "description": what});
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "tenants": list("Only these tenants (default: every tenant the token may see)."),
            "classes": list("Only these failure classes."),
            "kinds": list("Only these kinds."),
            "fingerprints": list("Only these error fingerprints."),
            "payload_equals": list("Only dead letters whose payload has this value: FIELD=VALUE, FIELD a top-level field or a dotted path (customer.id); a string compared as text, another JSON value as its JSON text."),
            "since": {"type": "string", "description": "Dead-lettered at or after: 2h, an RFC 3339 time, or epoch ms."},
            "until": {"type": "string", "description": "Dead-lettered at or before."},
        },
        "example": {"tenants": ["acme"], "classes": ["schema_mismatch"], "since": "2h"},
    })
}

/// Why and under which id, common to every change.
fn change_props() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "reason".into(),
        json!({"type": "string", "description": "Why; kept in the audit trail (1 to 1024 bytes)."}),
    );
    m.insert(
        "command_id".into(),
        json!({"type": "string", "description": "Send under this id: sending it again returns the first result and executes nothing again."}),
    );
    m
}

fn object(mut props: Map<String, Value>, required: &[&str], example: Value) -> Value {
    for (k, v) in change_props() {
        props.entry(k).or_insert(v);
    }
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": props,
        "required": required,
        "example": example,
    })
}

fn props(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// The request bodies' schemas, and the error's.
pub fn schemas() -> Value {
    let ids = json!({"type": "array", "items": {"type": "string"}, "description": "Dead letters as TENANT/ENTRY-ID."});
    json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "A stable name: invalid_request, unauthorized, forbidden, read_only, not_found, no_route, refused, fleet_down, timeout, …"},
                    "message": {"type": "string", "description": "What went wrong and what to do about it."},
                    "details": {"description": "More, when there is: a command's result, where a task lookup searched."},
                }
            }},
        },
        "Filter": filter_schema(),
        "ReplayRequest": object(props(&[
            ("ids", ids.clone()),
            ("filter", json!({"$ref": "#/components/schemas/Filter"})),
            ("all", json!({"type": "boolean", "description": "Replay every dead letter the token may see (needed without ids or filter)."})),
            ("patch", json!({"type": "object", "description": "A JSON merge patch (RFC 7386) applied to each payload."})),
            ("target_kind", json!({"type": "string", "description": "Route the replayed tasks to this kind."})),
            ("force", json!({"type": "boolean", "description": "Replay partial_execution dead letters too."})),
            ("order_by_key", json!({"type": "string", "description": "Keep per-entity order by this payload field."})),
            ("rate", json!({"type": "integer", "description": "Dead letters per second, 0 unlimited (default admin.rate)."})),
            ("resume", json!({"type": "string", "description": "Resume this replay job instead (only with rate, reason, command_id)."})),
        ]), &[], json!({
            "filter": {"tenants": ["acme"], "classes": ["schema_mismatch"]},
            "patch": {"lang": "en"}, "rate": 50, "reason": "fixed the schema (INC-42)"
        })),
        "RemoveRequest": object(props(&[
            ("ids", ids.clone()),
            ("filter", json!({"$ref": "#/components/schemas/Filter"})),
            ("confirm", json!({"type": "boolean", "description": "Confirms a removal by filter."})),
        ]), &["reason"], json!({
            "ids": ["acme/1763800000000-0"], "reason": "handled by support"
        })),
        "PurgeRequest": object(props(&[
            ("older_than", json!({"type": "string", "description": "Delete dead letters older than this, e.g. 30d."})),
            ("confirm", json!({"type": "boolean", "description": "Confirms: purged dead letters are deleted, not archived."})),
        ]), &["older_than", "reason"], json!({
            "older_than": "30d", "confirm": true, "reason": "retention"
        })),
        "AssignRequest": object(props(&[
            ("ids", ids.clone()),
            ("to", json!({"type": "string", "description": "Who reviews them (1 to 128 printable characters)."})),
        ]), &["ids", "to"], json!({
            "ids": ["acme/1763800000000-0"], "to": "ana", "reason": "on call"
        })),
        "EscalateRequest": object(props(&[
            ("ids", ids.clone()),
            ("to", json!({"type": "string", "description": "`tenant` (the dead letter's own tenant) or a team's name."})),
        ]), &["ids", "to", "reason"], json!({
            "ids": ["acme/1763800000000-0"], "to": "tenant", "reason": "their input is invalid"
        })),
        "NoteRequest": object(props(&[
            ("ids", ids),
            ("text", json!({"type": "string", "description": "The note (at most 2048 bytes)."})),
        ]), &["ids", "text"], json!({
            "ids": ["acme/1763800000000-0"], "text": "upstream fixed in v2.3"
        })),
        "FoldRequest": object(props(&[
            ("fingerprint", json!({"type": "string", "description": "The fingerprint whose dead letters are folded, as the stats show it."})),
        ]), &["fingerprint", "reason"], json!({
            "fingerprint": "9f2c4e1a", "reason": "one cause: the v2 schema"
        })),
        "RestoreRequest": object(props(&[
            ("ids", json!({"type": "array", "items": {"type": "string"}, "description": "Archived dead letters as TENANT/ENTRY-ID (the dead-letter ids they had), 1 to 1000."})),
        ]), &["ids"], json!({
            "ids": ["acme/1763800000000-0"], "reason": "the customer asked again"
        })),
        "BreakerRequest": object(Map::new(), &[], json!({"reason": "incident 42"})),
        "CancelRequest": object(Map::new(), &[], json!({"reason": "wrong patch"})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::serve::routes::archive::RestoreBody;
    use crate::app::serve::routes::breakers::BreakerBody;
    use crate::app::serve::routes::commands::CancelBody;
    use crate::app::serve::routes::recovery::{PurgeBody, RemoveBody, ReplayBody};
    use crate::app::serve::routes::review::{FoldBody, NoteBody, ReviewBody};
    use crate::app::serve::table::ROUTES;

    #[test]
    fn every_route_is_documented_once_with_its_statuses() {
        let doc = document(&ROUTES, "/redrive");
        assert_eq!(doc["servers"][0]["url"], "/redrive");
        let paths = doc["paths"].as_object().unwrap();
        let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(documented, ROUTES.len(), "one operation per route");
        for r in &ROUTES {
            let op = &doc["paths"][openapi_path(r.path)][method_key(r.method)];
            assert_eq!(op["summary"], r.summary);
            for (code, _) in r.statuses() {
                assert!(
                    op["responses"][code.to_string()].is_object(),
                    "{} {code}",
                    r.path
                );
            }
            if let Some(body) = r.body {
                assert!(doc["components"]["schemas"][body].is_object(), "{body}");
            }
            for p in r.params.iter().filter(|p| p.location == In::Path) {
                assert!(
                    openapi_path(r.path).contains(&format!("{{{}}}", p.name)),
                    "{}",
                    r.path
                );
            }
        }
        let ids: std::collections::BTreeSet<String> = paths
            .values()
            .flat_map(|p| p.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), ROUTES.len(), "operation ids are unique");
    }

    /// Each body schema's example reads as the type its routes take, and every property the
    /// schema documents is a field of that type (the types refuse unknown fields).
    #[test]
    fn body_schemas_match_the_body_types() {
        let s = schemas();
        fn reads<T: serde::de::DeserializeOwned>(v: &Value) -> bool {
            serde_json::from_value::<T>(v.clone()).is_ok()
        }
        type Check = fn(&Value) -> bool;
        let bodies: [(&str, Check); 10] = [
            ("RestoreRequest", reads::<RestoreBody>),
            ("AssignRequest", reads::<ReviewBody>),
            ("EscalateRequest", reads::<ReviewBody>),
            ("NoteRequest", reads::<NoteBody>),
            ("FoldRequest", reads::<FoldBody>),
            ("ReplayRequest", reads::<ReplayBody>),
            ("RemoveRequest", reads::<RemoveBody>),
            ("PurgeRequest", reads::<PurgeBody>),
            ("BreakerRequest", reads::<BreakerBody>),
            ("CancelRequest", reads::<CancelBody>),
        ];
        for (name, check) in bodies {
            let schema = &s[name];
            assert!(check(&schema["example"]), "{name}'s example");
            for (prop, _) in schema["properties"].as_object().unwrap() {
                let mut one = schema["example"].clone();
                let sample = match prop.as_str() {
                    "ids" => json!(["acme/1-0"]),
                    "filter" => s["Filter"]["example"].clone(),
                    "patch" => json!({"a": 1}),
                    "all" | "force" | "confirm" => json!(true),
                    "rate" => json!(5),
                    _ => json!("x"),
                };
                one[prop] = sample;
                assert!(check(&one), "{name}.{prop} is not a field of its body type");
            }
            let mut unknown = schema["example"].clone();
            unknown["colour"] = json!("red");
            assert!(!check(&unknown), "{name} refuses unknown fields");
        }
        for prop in s["Filter"]["properties"].as_object().unwrap().keys() {
            let v = json!({ prop.clone(): if prop.ends_with('s') { json!(["x"]) } else { json!("2h") } });
            assert!(
                serde_json::from_value::<crate::app::serve::routes::FilterBody>(v).is_ok(),
                "Filter.{prop}"
            );
        }
    }
}

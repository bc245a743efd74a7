//! Versioned documents, for optimistic concurrency: `/docs/{id}` keeps the version in a strong
//! ETag, `/couch/{db}/{id}` in the body's `_rev`, as CouchDB does.

use std::collections::HashMap;

use http::header::{IF_MATCH, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The documents the server holds, by path, and what their writes did.
#[derive(Debug, Default)]
pub(crate) struct Documents {
    by_path: HashMap<String, Document>,
    pub(crate) applied_writes: u64,
    pub(crate) stale_writes: u64,
    pub(crate) already_exists: u64,
    pub(crate) preconditions_required: u64,
    pub(crate) unconditional_writes: u64,
    pub(crate) foreign_writes: u64,
}

#[derive(Debug)]
struct Document {
    /// Bumped by every write.
    version: u64,
    /// The body, a JSON object; for CouchDB documents without `_id` and `_rev`.
    body: Map<String, Value>,
}

/// What `/docs/{id}` is asked to do on a write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DocsWrite {
    /// Answer a stale `If-Match` with 409 and problem details instead of 412.
    pub(crate) stale_as_conflict: bool,
    /// Answer a write without `If-Match` or `If-None-Match` with 428.
    pub(crate) require_precondition: bool,
}

/// An answer: status, headers to add, and a JSON body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) etag: Option<String>,
    pub(crate) body: Value,
    pub(crate) problem: bool,
}

impl Answer {
    fn json(status: StatusCode, body: Value) -> Self {
        Answer {
            status,
            etag: None,
            body,
            problem: false,
        }
    }

    fn problem(status: StatusCode, slug: &str, title: &str, detail: &str) -> Self {
        Answer {
            status,
            etag: None,
            body: serde_json::json!({
                "type": format!("https://scrapewell.dev/problems/{slug}"),
                "title": title,
                "status": status.as_u16(),
                "detail": detail,
            }),
            problem: true,
        }
    }
}

impl Documents {
    /// `GET /docs/{id}`: the body and its ETag (`W/` when `weak`). With `churn`, another writer
    /// changes the document right after this read, so a write based on it is always stale.
    pub(crate) fn docs_read(&mut self, path: &str, weak: bool, churn: bool) -> Answer {
        let Some(doc) = self.by_path.get_mut(path) else {
            return Answer::problem(StatusCode::NOT_FOUND, "not-found", "Not found", path);
        };
        let etag = docs_etag(doc.version);
        let answer = Answer {
            status: StatusCode::OK,
            etag: Some(if weak { format!("W/{etag}") } else { etag }),
            body: Value::Object(doc.body.clone()),
            problem: false,
        };
        if churn {
            doc.version += 1;
            self.foreign_writes += 1;
        }
        answer
    }

    /// `PUT /docs/{id}` with a JSON object.
    pub(crate) fn docs_write(
        &mut self,
        path: &str,
        headers: &HeaderMap,
        body: Map<String, Value>,
        mode: DocsWrite,
    ) -> Answer {
        let current = self.by_path.get(path).map(|doc| docs_etag(doc.version));
        if let Some(wanted) = headers.get(IF_MATCH) {
            let matches = current
                .as_deref()
                .is_some_and(|current| etag_list_matches(wanted, current));
            if !matches {
                self.stale_writes += 1;
                return if mode.stale_as_conflict {
                    Answer::problem(
                        StatusCode::CONFLICT,
                        "edit-conflict",
                        "Edit conflict",
                        "the document changed since the version in If-Match",
                    )
                } else {
                    Answer {
                        etag: current,
                        ..Answer::json(StatusCode::PRECONDITION_FAILED, Value::Null)
                    }
                };
            }
        } else if headers
            .get(IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"*")
        {
            if current.is_some() {
                self.already_exists += 1;
                return Answer {
                    etag: current,
                    ..Answer::json(StatusCode::PRECONDITION_FAILED, Value::Null)
                };
            }
        } else if mode.require_precondition {
            self.preconditions_required += 1;
            return Answer::problem(
                StatusCode::PRECONDITION_REQUIRED,
                "precondition-required",
                "Precondition required",
                "writes to this document must carry If-Match (or If-None-Match: * to create)",
            );
        } else {
            self.unconditional_writes += 1;
        }
        let (status, version) = self.store(path, body);
        Answer {
            etag: Some(docs_etag(version)),
            ..Answer::json(status, Value::Object(self.by_path[path].body.clone()))
        }
    }

    /// `GET /couch/{db}/{id}`: the body with `_id` and `_rev`, and no ETag.
    pub(crate) fn couch_read(&self, path: &str, id: &str) -> Answer {
        match self.by_path.get(path) {
            Some(doc) => {
                let mut body = Map::new();
                body.insert("_id".into(), Value::String(id.to_owned()));
                body.insert("_rev".into(), Value::String(couch_rev(doc)));
                body.extend(doc.body.clone());
                Answer::json(StatusCode::OK, Value::Object(body))
            }
            None => Answer::json(
                StatusCode::NOT_FOUND,
                serde_json::json!({ "error": "not_found", "reason": "missing" }),
            ),
        }
    }

    /// `PUT /couch/{db}/{id}`: the revision comes from the body's `_rev`, the `rev` query
    /// parameter or `If-Match`; it must name the current one (or be absent to create).
    pub(crate) fn couch_write(
        &mut self,
        path: &str,
        id: &str,
        query_rev: Option<&str>,
        headers: &HeaderMap,
        mut body: Map<String, Value>,
    ) -> Answer {
        let body_rev = match body.remove("_rev") {
            Some(Value::String(rev)) => Some(rev),
            _ => None,
        };
        body.remove("_id");
        let header_rev = headers
            .get(IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned());
        let rev = body_rev
            .or_else(|| query_rev.map(str::to_owned))
            .or(header_rev);
        let current = self.by_path.get(path).map(couch_rev);
        if rev != current {
            self.stale_writes += 1;
            return Answer::json(
                StatusCode::CONFLICT,
                serde_json::json!({ "error": "conflict", "reason": "Document update conflict." }),
            );
        }
        self.store(path, body);
        let rev = couch_rev(&self.by_path[path]);
        Answer::json(
            StatusCode::CREATED,
            serde_json::json!({ "ok": true, "id": id, "rev": rev }),
        )
    }

    /// The document at `path`, as the server holds it.
    pub(crate) fn get(&self, path: &str) -> Option<Value> {
        self.by_path
            .get(path)
            .map(|doc| Value::Object(doc.body.clone()))
    }

    /// Creates or replaces the document; returns the status (201 or 200) and its version.
    fn store(&mut self, path: &str, body: Map<String, Value>) -> (StatusCode, u64) {
        self.applied_writes += 1;
        match self.by_path.get_mut(path) {
            Some(doc) => {
                doc.version += 1;
                doc.body = body;
                (StatusCode::OK, doc.version)
            }
            None => {
                self.by_path
                    .insert(path.to_owned(), Document { version: 1, body });
                (StatusCode::CREATED, 1)
            }
        }
    }
}

fn docs_etag(version: u64) -> String {
    format!("\"v{version}\"")
}

/// `N-hash`, as CouchDB writes revisions: the write count and a digest of the body.
fn couch_rev(doc: &Document) -> String {
    let digest = Sha256::digest(Value::Object(doc.body.clone()).to_string().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", doc.version)
}

/// Whether an `If-Match` list names `current` (strong comparison) or is `*`.
fn etag_list_matches(wanted: &HeaderValue, current: &str) -> bool {
    let Ok(wanted) = wanted.to_str() else {
        return false;
    };
    wanted
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag == current)
}

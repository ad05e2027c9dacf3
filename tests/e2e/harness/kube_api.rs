//! A Kubernetes API server **test double** for the kinds etcd-inspector
//! uses, so the real kube client, watcher and controllers can run in tests
//! (no kube-apiserver can be installed here). It is not shipped.
//!
//! What it models: list and watch with resourceVersions (a single event
//! log; a watch replays every event after the requested version, then
//! streams), get, create (409 AlreadyExists), replace with a resourceVersion
//! precondition (409 Conflict), JSON merge patch (also used for strategic
//! merge and apply patches), the status subresource of the CRDs, delete,
//! label selectors (`k=v`, `k!=v`, `k`), and the garbage collector's
//! cascading delete through ownerReferences. What it does not: schema
//! validation, admission, field managers, pagination, authentication.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// Resource types whose main endpoint ignores `.status` (status subresource).
const WITH_STATUS: [&str; 2] = ["etcdclusters", "etcdinspections"];

#[derive(Clone)]
struct Event {
    resource: String,
    kind: &'static str,
    object: Value,
    version: u64,
}

#[derive(Default)]
struct Data {
    version: u64,
    /// (resource, namespace, name) → object
    objects: BTreeMap<(String, String, String), Value>,
    log: Vec<Event>,
}

#[derive(Clone)]
struct Shared {
    data: Arc<Mutex<Data>>,
    events: broadcast::Sender<Event>,
}

pub struct KubeApi {
    pub url: String,
    task: tokio::task::AbortHandle,
}

/// Parsed request path.
struct Target {
    group_version: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

impl KubeApi {
    pub async fn start() -> KubeApi {
        let (events, _) = broadcast::channel(4096);
        let shared = Shared {
            data: Arc::default(),
            events,
        };
        let app = Router::new().fallback(handle).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }).abort_handle();
        KubeApi { url, task }
    }

    /// A kubeconfig pointing at this server.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\n",
            self.url
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A client of this server for the test itself.
    pub async fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group_version, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => (v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    match rest {
        [resource] => Some(Target {
            group_version,
            resource: resource.to_string(),
            namespace,
            name: None,
            status: false,
        }),
        [resource, name] => Some(Target {
            group_version,
            resource: resource.to_string(),
            namespace,
            name: Some(name.to_string()),
            status: false,
        }),
        [resource, name, "status"] => Some(Target {
            group_version,
            resource: resource.to_string(),
            namespace,
            name: Some(name.to_string()),
            status: true,
        }),
        _ => None,
    }
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

fn matches_selector(object: &Value, selector: Option<&str>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    let labels = object["metadata"]["labels"].as_object();
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
    selector.split(',').all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            label(k.trim()) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once('=') {
            label(k.trim().trim_end_matches('=')) == Some(v.trim())
        } else {
            label(term.trim()).is_some()
        }
    })
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let map = target.as_object_mut().unwrap();
            for (k, v) in fields {
                if v.is_null() {
                    map.remove(k);
                } else {
                    merge(map.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

async fn handle(State(shared): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let Some(target) = parse(uri.path()) else {
        return status(404, "NotFound", format!("no route {}", uri.path()));
    };
    let query: BTreeMap<String, String> = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let selector = query.get("labelSelector").map(String::as_str);
    match (&method, &target.name) {
        (&Method::GET, None) if watch => {
            let since: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
            let timeout = query
                .get("timeoutSeconds")
                .and_then(|v| v.parse().ok())
                .unwrap_or(290u64);
            watch_stream(
                shared,
                target,
                selector.map(str::to_string),
                since,
                Duration::from_secs(timeout),
            )
        }
        (&Method::GET, None) => {
            let data = shared.data.lock().unwrap();
            let items: Vec<Value> = data
                .objects
                .iter()
                .filter(|((r, ns, _), v)| {
                    *r == target.resource
                        && target.namespace.as_ref().is_none_or(|t| t == ns)
                        && matches_selector(v, selector)
                })
                .map(|(_, v)| v.clone())
                .collect();
            let body = json!({"apiVersion": target.group_version, "kind": "List",
                              "metadata": {"resourceVersion": data.version.to_string()}, "items": items});
            axum::Json(body).into_response()
        }
        (&Method::GET, Some(name)) => {
            let data = shared.data.lock().unwrap();
            let key = (
                target.resource.clone(),
                target.namespace.clone().unwrap_or_default(),
                name.clone(),
            );
            match data.objects.get(&key) {
                Some(v) => axum::Json(v.clone()).into_response(),
                None => status(404, "NotFound", format!("{} \"{name}\" not found", target.resource)),
            }
        }
        (&Method::POST, None) => {
            let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "body is not JSON".into());
            };
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let ns = target.namespace.clone().unwrap_or_default();
            let key = (target.resource.clone(), ns.clone(), name.clone());
            let mut data = shared.data.lock().unwrap();
            if data.objects.contains_key(&key) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", target.resource),
                );
            }
            data.version += 1;
            let version = data.version;
            let meta = object["metadata"].as_object_mut().unwrap();
            meta.insert("namespace".into(), json!(ns));
            meta.insert("uid".into(), json!(format!("uid-{version}")));
            meta.insert("resourceVersion".into(), json!(version.to_string()));
            meta.insert("generation".into(), json!(1));
            meta.insert(
                "creationTimestamp".into(),
                json!(k8s_openapi::jiff::Timestamp::now().to_string()),
            );
            data.objects.insert(key, object.clone());
            record(&mut data, &shared.events, &target.resource, "ADDED", object.clone());
            (StatusCode::CREATED, axum::Json(object)).into_response()
        }
        (&Method::PUT | &Method::PATCH, Some(name)) => {
            let Ok(input) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "body is not JSON".into());
            };
            let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
            if method == Method::PATCH && content_type.contains("json-patch+json") {
                return status(
                    415,
                    "UnsupportedMediaType",
                    "JSON patch is not modelled; use a merge patch".into(),
                );
            }
            let key = (
                target.resource.clone(),
                target.namespace.clone().unwrap_or_default(),
                name.clone(),
            );
            let mut data = shared.data.lock().unwrap();
            let Some(current) = data.objects.get(&key).cloned() else {
                return status(404, "NotFound", format!("{} \"{name}\" not found", target.resource));
            };
            let mut next = if method == Method::PUT {
                let wanted = input["metadata"]["resourceVersion"].as_str().unwrap_or("");
                if !wanted.is_empty() && wanted != current["metadata"]["resourceVersion"].as_str().unwrap_or("") {
                    return status(
                        409,
                        "Conflict",
                        format!("the object has been modified; resourceVersion {wanted} is stale"),
                    );
                }
                input
            } else {
                let mut merged = current.clone();
                merge(&mut merged, &input);
                merged
            };
            // The status subresource and the main resource each change only their part.
            if WITH_STATUS.contains(&target.resource.as_str()) {
                if target.status {
                    let status_part = next.get("status").cloned().unwrap_or(Value::Null);
                    next = current.clone();
                    next["status"] = status_part;
                } else {
                    match current.get("status") {
                        Some(s) => next["status"] = s.clone(),
                        None => {
                            next.as_object_mut().unwrap().remove("status");
                        }
                    }
                }
            }
            for field in ["uid", "creationTimestamp", "namespace", "name"] {
                next["metadata"][field] = current["metadata"][field].clone();
            }
            data.version += 1;
            next["metadata"]["resourceVersion"] = json!(data.version.to_string());
            data.objects.insert(key, next.clone());
            record(&mut data, &shared.events, &target.resource, "MODIFIED", next.clone());
            axum::Json(next).into_response()
        }
        (&Method::DELETE, Some(name)) => {
            let key = (
                target.resource.clone(),
                target.namespace.clone().unwrap_or_default(),
                name.clone(),
            );
            let mut data = shared.data.lock().unwrap();
            let Some(object) = data.objects.remove(&key) else {
                return status(404, "NotFound", format!("{} \"{name}\" not found", target.resource));
            };
            data.version += 1;
            record(&mut data, &shared.events, &target.resource, "DELETED", object.clone());
            collect_garbage(
                &mut data,
                &shared.events,
                object["metadata"]["uid"].as_str().unwrap_or_default(),
            );
            axum::Json(object).into_response()
        }
        _ => status(405, "MethodNotAllowed", format!("{method} {}", uri.path())),
    }
}

fn record(data: &mut Data, events: &broadcast::Sender<Event>, resource: &str, kind: &'static str, mut object: Value) {
    object["metadata"]["resourceVersion"] = json!(data.version.to_string());
    let event = Event {
        resource: resource.to_string(),
        kind,
        object,
        version: data.version,
    };
    data.log.push(event.clone());
    let _ = events.send(event);
}

/// The garbage collector: deletes what the deleted object owned, recursively.
fn collect_garbage(data: &mut Data, events: &broadcast::Sender<Event>, owner_uid: &str) {
    let owned: Vec<(String, String, String)> = data
        .objects
        .iter()
        .filter(|(_, v)| {
            v["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(owner_uid)))
        })
        .map(|(k, _)| k.clone())
        .collect();
    for key in owned {
        if let Some(object) = data.objects.remove(&key) {
            data.version += 1;
            record(data, events, &key.0, "DELETED", object.clone());
            collect_garbage(data, events, object["metadata"]["uid"].as_str().unwrap_or_default());
        }
    }
}

fn watch_stream(shared: Shared, target: Target, selector: Option<String>, since: u64, timeout: Duration) -> Response {
    // Subscribe before reading the log so nothing falls between the two;
    // live events already in the backlog are skipped by version.
    let live = shared.events.subscribe();
    let backlog: VecDeque<Event> = shared
        .data
        .lock()
        .unwrap()
        .log
        .iter()
        .filter(|e| e.version > since)
        .cloned()
        .collect();
    let last = backlog.back().map(|e| e.version).unwrap_or(since);
    let deadline = tokio::time::Instant::now() + timeout;
    let relevant = Arc::new(move |e: &Event| {
        e.resource == target.resource
            && target
                .namespace
                .as_ref()
                .is_none_or(|ns| e.object["metadata"]["namespace"].as_str() == Some(ns))
            && matches_selector(&e.object, selector.as_deref())
    });
    let stream = futures::stream::unfold((backlog, live), move |(mut backlog, mut live)| {
        let relevant = relevant.clone();
        async move {
            loop {
                let event = match backlog.pop_front() {
                    Some(e) => e,
                    None => match tokio::time::timeout_at(deadline, live.recv()).await {
                        Ok(Ok(e)) if e.version > last => e,
                        Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                        _ => return None, // timeout: the client watches again
                    },
                };
                if relevant(&event) {
                    let line = Bytes::from(format!("{}\n", json!({"type": event.kind, "object": event.object})));
                    return Some((Ok::<_, Infallible>(line), (backlog, live)));
                }
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

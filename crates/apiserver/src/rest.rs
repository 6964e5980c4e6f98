//! The REST verbs over the store: get, list, watch, create, update, patch, delete and
//! deletecollection, with the status/scale/binding/finalize subresources, Table output,
//! dry-run, field validation and graceful deletion as upstream implements them. This module
//! parses the query and dispatches a request to its verb's handler in [`crate::handlers`].

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use crate::consistency;
use crate::handlers::create::create;
use crate::handlers::delete::{delete, delete_collection};
use crate::handlers::get::get;
use crate::handlers::list::list;
use crate::handlers::patch::patch;
use crate::handlers::subresources::{binding, scale_of};
use crate::handlers::update::update;
use crate::handlers::watch::watch;
use crate::handlers::{json_response, wants_table};
use crate::request::params::query_bool;
use crate::server::Target;
use crate::status::{ApiError, ApiResult};
use crate::State;

pub use crate::codec::from_kv;
pub use crate::handlers::delete::namespace_terminating;
pub use crate::handlers::get::get_obj;
pub use crate::handlers::list::{list_objects, table, Filter};
pub(crate) use crate::handlers::{check_kind, parse_input};
pub use crate::request::params::form_urlencoded;

/// Query parameters upstream accepts on resource paths.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub watch: bool,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub dry_run: bool,
    /// Every `dryRun` value as given (upstream validates that each is `All`).
    pub dry_run_values: Vec<String>,
    pub field_manager: Option<String>,
    pub field_validation: Option<String>,
    pub force: bool,
    /// `force` was given at all (forbidden on a non-apply patch).
    pub force_given: bool,
    pub propagation_policy: Option<String>,
    pub grace_period: Option<i64>,
    pub orphan_dependents: Option<bool>,
    pub include_object: Option<String>,
}

impl Params {
    pub fn parse(q: &str) -> Self {
        let mut p = Params::default();
        for (k, v) in form_urlencoded(q) {
            match k.as_str() {
                "labelSelector" => p.label_selector = Some(v).filter(|s| !s.is_empty()),
                "fieldSelector" => p.field_selector = Some(v).filter(|s| !s.is_empty()),
                "limit" => p.limit = v.parse().ok().filter(|n| *n > 0),
                "continue" => p.continue_token = Some(v).filter(|s| !s.is_empty()),
                "watch" => p.watch = query_bool(&v),
                "resourceVersion" => p.resource_version = Some(v),
                "resourceVersionMatch" => p.resource_version_match = Some(v),
                "timeoutSeconds" => p.timeout_seconds = v.parse().ok(),
                "allowWatchBookmarks" => p.allow_bookmarks = query_bool(&v),
                "sendInitialEvents" => p.send_initial_events = Some(query_bool(&v)),
                "dryRun" => {
                    p.dry_run = v == "All";
                    p.dry_run_values.push(v);
                }
                "fieldManager" => p.field_manager = Some(v),
                "fieldValidation" => p.field_validation = Some(v),
                "force" => {
                    p.force = query_bool(&v);
                    p.force_given = true;
                }
                "propagationPolicy" => p.propagation_policy = Some(v),
                "gracePeriodSeconds" => p.grace_period = v.parse().ok(),
                "orphanDependents" => p.orphan_dependents = Some(query_bool(&v)),
                "includeObject" => p.include_object = Some(v),
                _ => {}
            }
        }
        p
    }
}

/// The verb name used in metrics (upstream's apiserver_request_total labels).
pub fn verb_name(m: &Method, t: &Target, p: &Params) -> String {
    match *m {
        Method::GET if t.name.is_none() => {
            if p.watch {
                "WATCH"
            } else {
                "LIST"
            }
        }
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => {
            if p.force || p.field_manager.is_some() {
                "APPLY"
            } else {
                "PATCH"
            }
        }
        Method::DELETE if t.name.is_none() => "DELETECOLLECTION",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
    .to_string()
}

pub async fn dispatch(
    state: Arc<State>,
    method: Method,
    t: Target,
    p: Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = t.resource;
    let res: ApiResult<Response> = async {
        match (&method, t.name.as_deref(), t.sub.as_deref()) {
            (&Method::GET, None, None) if p.watch => {
                Ok(watch(state, r, t.namespace.clone(), p, wants_table(&headers)).await?)
            }
            (&Method::GET, None, None) => list(&state, r, t.namespace.as_deref(), &p, &headers).await,
            (&Method::GET, Some(name), None | Some("status")) => {
                consistency::get_read(&*state.store, &p).await?;
                get(&state, r, t.namespace.as_deref(), name, &headers).await
            }
            (&Method::GET, Some(name), Some("scale")) => {
                let obj = get_obj(&state, r, t.namespace.as_deref(), name).await?;
                Ok(json_response(StatusCode::OK, &scale_of(&obj)))
            }
            (&Method::POST, None, None) => create(&state, r, t.namespace.as_deref(), &p, &headers, &body).await,
            (&Method::POST, Some(name), Some("token")) if r.plural == "serviceaccounts" => {
                crate::auth::token_request::create(&state, t.namespace.as_deref().unwrap_or(""), name, &headers, &body)
                    .await
            }
            (&Method::POST, Some(name), Some("binding")) => {
                binding(&state, r, t.namespace.as_deref(), name, &headers, &body).await
            }
            (&Method::PUT, Some(name), sub) => {
                update(&state, r, t.namespace.as_deref(), name, sub, &p, &headers, &body).await
            }
            (&Method::PATCH, Some(name), sub) => {
                patch(&state, r, t.namespace.as_deref(), name, sub, &p, &headers, &body).await
            }
            (&Method::DELETE, Some(name), None) => delete(&state, r, t.namespace.as_deref(), name, &p, &body).await,
            (&Method::DELETE, None, None) => delete_collection(&state, r, t.namespace.as_deref(), &p, &body).await,
            _ => Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource".to_string(),
            )),
        }
    }
    .await;
    match res {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

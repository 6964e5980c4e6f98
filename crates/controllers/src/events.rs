//! core/v1 Event recorder in the style of client-go's broadcaster: events are written in the
//! background; a repeat of the same (object, type, reason, message) bumps `count` and `lastTimestamp`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

type Seen = HashMap<String, (String, String, i32)>;

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
    /// aggregation key -> (namespace, event name, count)
    seen: Arc<Mutex<Seen>>,
}

impl Recorder {
    pub fn new(client: Client, component: &'static str) -> Self {
        Recorder { client, component, seen: Arc::new(Mutex::new(HashMap::new())) }
    }

    pub fn normal(&self, obj: ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(obj, "Normal", reason, message.into());
    }

    pub fn warning(&self, obj: ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(obj, "Warning", reason, message.into());
    }

    fn record(&self, obj: ObjectReference, type_: &str, reason: &str, message: String) {
        let ns = obj.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".to_string());
        let agg_key = format!(
            "{}/{}/{}/{}/{}",
            obj.uid.as_deref().unwrap_or(""),
            obj.name.as_deref().unwrap_or(""),
            type_,
            reason,
            message
        );
        let existing = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() > 4096 {
                seen.clear();
            }
            match seen.get_mut(&agg_key) {
                Some(e) => {
                    e.2 += 1;
                    Some(e.clone())
                }
                None => None,
            }
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let now = crate::util::now();
        let component = self.component;
        let seen = self.seen.clone();
        let type_ = type_.to_string();
        let reason = reason.to_string();
        tokio::spawn(async move {
            if let Some((_, name, count)) = existing {
                let patch = serde_json::json!({"count": count, "lastTimestamp": now});
                if api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
                    return;
                }
            }
            let name = format!("{}.{:x}", obj.name.as_deref().unwrap_or("unknown"), now.0.as_nanosecond());
            let ev = Event {
                metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(ns.clone()), ..Default::default() },
                involved_object: obj,
                reason: Some(reason),
                message: Some(message),
                type_: Some(type_),
                source: Some(EventSource { component: Some(component.to_string()), host: None }),
                first_timestamp: Some(now.clone()),
                last_timestamp: Some(now),
                count: Some(1),
                reporting_component: Some(component.to_string()),
                reporting_instance: None,
                ..Default::default()
            };
            match api.create(&PostParams::default(), &ev).await {
                Ok(_) => {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).insert(agg_key, (ns, name, 1));
                }
                Err(e) => tracing::debug!(error = %e, "writing event failed"),
            }
        });
    }
}

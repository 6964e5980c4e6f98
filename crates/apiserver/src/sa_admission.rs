//! Upstream's `ServiceAccount` admission plugin for pod creates: `serviceAccountName` defaults to
//! `default` (the ServiceAccount must exist; a missing `default` is made here, where upstream
//! waits for the controller to make it), and unless `automountServiceAccountToken` is false on the pod (or,
//! when the pod leaves it unset, on the ServiceAccount), a projected `kube-api-access-XXXXX`
//! volume (a bound token, the cluster CA from `kube-root-ca.crt`, the namespace) is added and
//! mounted read-only at [`TOKEN_MOUNT_PATH`] in every init and app container that does not
//! already mount something there (a missing `kube-root-ca.crt` is made too). Mirror pods are left alone (and may not name a ServiceAccount).

use std::time::Duration;

use serde_json::{json, Value};

use yard_store::{Op, StoreError};

use crate::objects;
use crate::registry;
use crate::status::{ApiError, ApiResult};
use crate::State;

pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
pub const VOLUME_PREFIX: &str = "kube-api-access-";
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Upstream's `admission.NewForbidden` for a pod create.
fn forbidden(name: &str, msg: &str) -> ApiError {
    crate::auth::forbidden_for("pods", "", name, msg)
}

/// The projected volume upstream's plugin adds.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": crate::auth::serviceaccount::WARN_ONLY_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ],
            "defaultMode": 420
        }
    })
}

async fn get_service_account(state: &State, ns: &str, name: &str) -> ApiResult<Option<Value>> {
    let key = registry::find("", "v1", "serviceaccounts").expect("serviceaccounts").key(Some(ns), name);
    if let Some(kv) = state.store.get(&key).await? {
        return Ok(serde_json::from_slice(&kv.value).ok());
    }
    if name != DEFAULT_SERVICE_ACCOUNT {
        return Ok(None);
    }
    // `default` is the serviceaccount controller's to make right after its namespace; where it
    // is missing (no controller running, or a create racing the namespace's), the API server
    // makes it here instead of refusing the pod, so a cluster without controllers still runs
    // pods. A create that loses to the controller reads the winner.
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
        "name": DEFAULT_SERVICE_ACCOUNT, "namespace": ns, "uid": objects::new_uid(),
        "creationTimestamp": objects::now_rfc3339()}});
    match state.store.write(Op::Create { key: key.clone(), value: crate::codec::encode(&sa) }).await {
        Ok(_) => Ok(Some(sa)),
        Err(StoreError::AlreadyExists(_)) => {
            for _ in 0..10 {
                if let Some(kv) = state.store.get(&key).await? {
                    return Ok(serde_json::from_slice(&kv.value).ok());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Admit a pod being created in `ns` (mutating it).
pub async fn admit_pod(state: &State, ns: &str, pod: &mut Value) -> ApiResult<()> {
    let name = objects::name_of(pod).to_string();
    if pod.pointer(&format!("/metadata/annotations/{}", MIRROR_ANNOTATION.replace('/', "~1"))).is_some() {
        if pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
            return Err(forbidden(&name, "a mirror pod may not reference service accounts"));
        }
        return Ok(());
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
    let mut sa_name = spec.get("serviceAccountName").and_then(Value::as_str).unwrap_or("").to_string();
    if sa_name.is_empty() {
        sa_name = spec.get("serviceAccount").and_then(Value::as_str).unwrap_or("").to_string();
    }
    if sa_name.is_empty() {
        sa_name = DEFAULT_SERVICE_ACCOUNT.to_string();
    }
    spec.insert("serviceAccountName".into(), json!(sa_name));
    spec.insert("serviceAccount".into(), json!(sa_name));
    let Some(sa) = get_service_account(state, ns, &sa_name).await? else {
        return Err(forbidden(
            &name,
            &format!("error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"),
        ));
    };
    let pod_says = pod.pointer("/spec/automountServiceAccountToken").and_then(Value::as_bool);
    let sa_says = sa.get("automountServiceAccountToken").and_then(Value::as_bool);
    if pod_says.or(sa_says).unwrap_or(true) {
        mount_token(pod);
        ensure_root_ca(state, ns).await?;
    }
    let spec = pod.get_mut("spec").and_then(Value::as_object_mut).expect("spec");
    let no_pull_secrets = spec.get("imagePullSecrets").and_then(Value::as_array).is_none_or(Vec::is_empty);
    if no_pull_secrets {
        if let Some(ps) = sa.get("imagePullSecrets").and_then(Value::as_array).filter(|a| !a.is_empty()) {
            spec.insert("imagePullSecrets".into(), json!(ps));
        }
    }
    Ok(())
}

/// The `kube-root-ca.crt` the token volume reads: the root-ca-certificate-publisher's to make
/// and keep; made here when missing (as the `default` ServiceAccount is), so the pod's volume can
/// be set up in a cluster without controllers.
async fn ensure_root_ca(state: &State, ns: &str) -> ApiResult<()> {
    let key = registry::find("", "v1", "configmaps").expect("configmaps").key(Some(ns), "kube-root-ca.crt");
    if state.root_ca.is_empty() || state.store.get(&key).await?.is_some() {
        return Ok(());
    }
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "kube-root-ca.crt", "namespace": ns, "uid": objects::new_uid(),
        "creationTimestamp": objects::now_rfc3339(),
        "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
        "data": {"ca.crt": state.root_ca}});
    match state.store.write(Op::Create { key, value: crate::codec::encode(&cm) }).await {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Upstream's description annotation of `kube-root-ca.crt`.
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

fn mount_token(pod: &mut Value) {
    let spec = pod.get_mut("spec").and_then(Value::as_object_mut).expect("spec");
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter().filter_map(|v| v.get("name").and_then(Value::as_str)).find(|n| n.starts_with(VOLUME_PREFIX))
        })
        .map(String::from);
    let vol_name = existing.clone().unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", objects::random_suffix(5)));
    let mount = json!({"name": vol_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else { continue };
        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            if !mounts.is_array() {
                *mounts = json!([]);
            }
            let mounts = mounts.as_array_mut().expect("array");
            if mounts.iter().any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH)) {
                continue;
            }
            mounts.push(mount.clone());
            needed = true;
        }
    }
    if existing.is_none() && needed {
        let vols = spec.entry("volumes").or_insert_with(|| json!([]));
        if !vols.is_array() {
            *vols = json!([]);
        }
        vols.as_array_mut().expect("array").push(token_volume(&vol_name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_volume_is_added_once_and_mounted_where_nothing_else_is() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b", "volumeMounts": [{"name": "x", "mountPath": TOKEN_MOUNT_PATH}]}],
            "volumes": [{"name": "x", "emptyDir": {}}]}});
        mount_token(&mut pod);
        let vols = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 2);
        let name = vols[1]["name"].as_str().unwrap();
        assert!(name.starts_with("kube-api-access-") && name.len() == "kube-api-access-".len() + 5);
        assert_eq!(vols[1]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(pod["spec"]["initContainers"][0]["volumeMounts"][0]["name"], name);
        assert_eq!(pod["spec"]["containers"][0]["volumeMounts"][0]["readOnly"], true);
        assert_eq!(pod["spec"]["containers"][1]["volumeMounts"].as_array().unwrap().len(), 1);
        // Admitting again (e.g. a re-created copy) keeps the one volume.
        mount_token(&mut pod);
        assert_eq!(pod["spec"]["volumes"].as_array().unwrap().len(), 2);
    }
}

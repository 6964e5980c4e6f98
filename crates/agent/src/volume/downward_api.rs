//! `downwardAPI` volumes: pod fields (`fieldRef`) and container resources (`resourceFieldRef`) as
//! files (also a source of `projected`).

use k8s_openapi::api::core::v1::{Pod, Volume};

use super::files::mode_of;
use super::{atomic, Ctx, VolumeError, VolumePlugin};

pub(super) struct DownwardApi;

impl VolumePlugin for DownwardApi {
    fn name(&self) -> &'static str {
        "downwardAPI"
    }

    fn is_of(&self, v: &Volume) -> bool {
        v.downward_api.is_some()
    }

    fn refreshes(&self) -> bool {
        true
    }

    fn files(&self, ctx: &Ctx, v: &Volume) -> Option<Result<atomic::Payload, VolumeError>> {
        let d = v.downward_api.as_ref()?;
        let mut out = atomic::Payload::new();
        let res = downward_files(ctx.pod, d.items.as_deref().unwrap_or(&[]), d.default_mode, ctx.capacity, &mut out);
        Some(res.map(|()| out).map_err(VolumeError))
    }
}

pub(super) fn downward_files(
    pod: &Pod,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    capacity: (&str, &str),
    out: &mut atomic::Payload,
) -> Result<(), String> {
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            let path = f.field_path.as_str();
            match path {
                "metadata.labels" | "metadata.annotations" => {
                    let m = if path == "metadata.labels" { &pod.metadata.labels } else { &pod.metadata.annotations };
                    // As upstream: one `key="value"` line per entry, sorted, values quoted like Go's %q.
                    m.iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
                _ => crate::env::field_ref(pod, path).ok_or_else(|| format!("unsupported fieldPath: {path}"))?,
            }
        } else if let Some(r) = &it.resource_field_ref {
            let cname = r.container_name.clone().unwrap_or_default();
            let all = pod.spec.as_ref().map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()));
            let c = all
                .and_then(|mut it| it.find(|c| c.name == cname))
                .ok_or_else(|| format!("container {cname:?} not found for resourceFieldRef"))?;
            if r.divisor.as_ref().is_some_and(|d| d.0 != "1" && d.0 != "0") {
                return Err(format!("resourceFieldRef divisor {:?} is not supported", r.divisor.as_ref().unwrap().0));
            }
            crate::env::resource_field(c, &r.resource, capacity)
        } else {
            return Err(format!("downwardAPI item {:?} has neither fieldRef nor resourceFieldRef", it.path));
        };
        out.insert(it.path.clone(), atomic::File { content: value.into_bytes(), mode: mode_of(it.mode, default_mode) });
    }
    Ok(())
}

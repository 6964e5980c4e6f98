//! `configMap` volumes: the keys of a ConfigMap as files (also a source of `projected`).

use k8s_openapi::api::core::v1::{KeyToPath, Volume};

use super::files::object_files;
use super::{atomic, Ctx, Objects, VolumeError, VolumePlugin};

pub(super) struct ConfigMap;

impl VolumePlugin for ConfigMap {
    fn name(&self) -> &'static str {
        "configMap"
    }

    fn is_of(&self, v: &Volume) -> bool {
        v.config_map.is_some()
    }

    fn references(&self, v: &Volume, config_maps: &mut Vec<String>, _secrets: &mut Vec<String>) {
        if let Some(c) = &v.config_map {
            config_maps.push(c.name.clone());
        }
    }

    fn refreshes(&self) -> bool {
        true
    }

    fn files(&self, ctx: &Ctx, v: &Volume) -> Option<Result<atomic::Payload, VolumeError>> {
        let c = v.config_map.as_ref()?;
        let mut out = atomic::Payload::new();
        let res = config_map_files(ctx.objects, &c.name, c.items.as_ref(), c.optional, c.default_mode, &mut out);
        Some(res.map(|()| out).map_err(VolumeError))
    }
}

fn cm_missing_key(k: &str) -> String {
    format!("configmap references non-existent config key: {k}")
}

pub(super) fn config_map_files(
    objs: &Objects,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: Option<bool>,
    mode: Option<i32>,
    out: &mut atomic::Payload,
) -> Result<(), String> {
    let found = objs.config_maps.get(name).cloned().flatten();
    object_files(found, &format!("configmap {name:?}"), items, optional, mode, &cm_missing_key, out)
}

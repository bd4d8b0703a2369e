//! Lookups by name in a published configuration, built once per configuration: the front ends
//! answer property reads for thousands of farms and backends, and a linear search per read made
//! listing them quadratic.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{Backend, Config, Farm, effective_priority};

pub struct ConfigIndex {
    pub config: Arc<Config>,
    farms: HashMap<String, FarmIndex>,
}

struct FarmIndex {
    at: usize,
    backends: HashMap<String, usize>,
    effective_priority: u32,
}

impl ConfigIndex {
    pub fn build(config: Arc<Config>) -> ConfigIndex {
        let farms = config
            .farms
            .iter()
            .enumerate()
            .map(|(at, f)| {
                let backends = f
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (b.name.clone(), i))
                    .collect();
                let ix = FarmIndex {
                    at,
                    backends,
                    effective_priority: effective_priority(f),
                };
                (f.name.clone(), ix)
            })
            .collect();
        ConfigIndex { config, farms }
    }

    pub fn farm(&self, name: &str) -> Option<&Farm> {
        self.farms.get(name).map(|ix| &self.config.farms[ix.at])
    }

    pub fn backend(&self, farm: &str, name: &str) -> Option<(&Farm, &Backend)> {
        let ix = self.farms.get(farm)?;
        let f = &self.config.farms[ix.at];
        Some((f, &f.backends[*ix.backends.get(name)?]))
    }

    /// The farm's highest backend priority in use now.
    pub fn effective_priority(&self, farm: &str) -> Option<u32> {
        self.farms.get(farm).map(|ix| ix.effective_priority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_config;

    #[test]
    fn finds_by_name() {
        let c = parse_config(
            &serde_json::json!({"farms": [
                {"name": "a", "virtual-addresses": ["192.0.2.1"], "backends": [
                    {"name": "x", "ip-addr": "10.0.0.1", "state": "down"},
                    {"name": "y", "ip-addr": "10.0.0.2", "priority": 2}]},
                {"name": "b", "virtual-addresses": ["192.0.2.2"]}]})
            .to_string(),
        )
        .unwrap();
        let ix = ConfigIndex::build(Arc::new(c));
        assert_eq!(ix.farm("b").map(|f| f.name.as_str()), Some("b"));
        let (f, b) = ix.backend("a", "y").unwrap();
        assert_eq!((f.name.as_str(), b.name.as_str()), ("a", "y"));
        assert!(ix.backend("a", "z").is_none() && ix.farm("c").is_none());
        assert_eq!(ix.effective_priority("a"), Some(2));
    }
}

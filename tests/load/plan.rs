//! What a load client asks for next. Each client owns its farms and backends (names carry its
//! number), so no call can be refused because of another client, and each edit changes
//! something (a state or weight different from the current one), so each commits once.

use serde_json::{Value, json};

const STATES: [&str; 3] = ["up", "drain", "off"];
const MAX_BACKENDS: usize = 10;
const MIN_BACKENDS: usize = 2;

/// One change, as both transports and the replay express it.
#[derive(Debug, Clone)]
pub enum Edit {
    CreateFarm(Value),
    DeleteFarm(String),
    AddBackend {
        farm: String,
        backend: Value,
    },
    RemoveBackend {
        farm: String,
        backend: String,
    },
    SetState {
        farm: String,
        backend: String,
        state: String,
    },
    SetWeight {
        farm: String,
        backend: String,
        weight: u32,
    },
    /// (farm, backend, state) for backends of several farms, in one transaction.
    SetBackends(Vec<(String, String, String)>),
}

impl Edit {
    pub fn kind(&self) -> &'static str {
        match self {
            Edit::CreateFarm(_) => "CreateFarm",
            Edit::DeleteFarm(_) => "DeleteFarm",
            Edit::AddBackend { .. } => "AddBackend",
            Edit::RemoveBackend { .. } => "RemoveBackend",
            Edit::SetState { .. } => "SetState",
            Edit::SetWeight { .. } => "SetWeight",
            Edit::SetBackends(_) => "SetBackends",
        }
    }
}

struct Backend {
    name: String,
    state: usize,
    weight: u32,
}

struct Farm {
    name: String,
    backends: Vec<Backend>,
}

/// A client's objects as its acknowledged edits left them, and a small deterministic generator.
pub struct Plan {
    id: usize,
    seed: u64,
    home: Farm,
    small: Option<Farm>,
    next_backend: usize,
    next_small: usize,
}

impl Plan {
    pub fn new(id: usize) -> Plan {
        Plan {
            id,
            seed: 0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1),
            home: Farm {
                name: format!("home{id}"),
                backends: Vec::new(),
            },
            small: None,
            next_backend: 0,
            next_small: 0,
        }
    }

    fn random(&mut self, n: usize) -> usize {
        // xorshift64: deterministic per client, good enough to spread the choices.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed % n as u64) as usize
    }

    fn new_backend(&mut self) -> Value {
        let n = self.next_backend;
        self.next_backend += 1;
        json!({"name": format!("b{n}"), "ip-addr": format!("10.{}.{}.{}", self.id, n / 250, n % 250 + 1),
               "weight": 1})
    }

    /// The client's own farm, with three backends.
    pub fn start(&mut self) -> Edit {
        let backends: Vec<Value> = (0..3).map(|_| self.new_backend()).collect();
        Edit::CreateFarm(
            json!({"name": self.home.name, "virtual-addresses": [format!("192.0.2.{}", self.id + 1)],
            "virtual-ports": "80", "scheduler": "weight", "backends": backends}),
        )
    }

    pub fn next(&mut self) -> Edit {
        match self.random(6) {
            0 => {
                let i = self.random(self.home.backends.len());
                let b = &self.home.backends[i];
                Edit::SetState {
                    farm: self.home.name.clone(),
                    backend: b.name.clone(),
                    state: STATES[(b.state + 1) % STATES.len()].to_string(),
                }
            }
            1 => {
                let i = self.random(self.home.backends.len());
                let b = &self.home.backends[i];
                Edit::SetWeight {
                    farm: self.home.name.clone(),
                    backend: b.name.clone(),
                    weight: b.weight % 5 + 1,
                }
            }
            2 | 3
                if self.home.backends.len() < MAX_BACKENDS
                    && (self.home.backends.len() <= MIN_BACKENDS || self.random(2) == 0) =>
            {
                Edit::AddBackend {
                    farm: self.home.name.clone(),
                    backend: self.new_backend(),
                }
            }
            2 | 3 => {
                let i = self.random(self.home.backends.len());
                Edit::RemoveBackend {
                    farm: self.home.name.clone(),
                    backend: self.home.backends[i].name.clone(),
                }
            }
            4 => match &self.small {
                Some(f) => Edit::DeleteFarm(f.name.clone()),
                None => {
                    let k = self.next_small;
                    self.next_small += 1;
                    Edit::CreateFarm(json!({"name": format!("small{}x{k}", self.id),
                        "virtual-addresses": [format!("198.51.100.{}", self.id + 1)], "virtual-ports": "443",
                        "backends": [{"name": "s0", "ip-addr": format!("10.{}.200.1", self.id)},
                                     {"name": "s1", "ip-addr": format!("10.{}.200.2", self.id)}]}))
                }
            },
            _ => {
                // Two backends of the own farm, and one of the small farm when there is one.
                let mut changes = Vec::new();
                let first = self.random(self.home.backends.len());
                let second = (first + 1) % self.home.backends.len();
                for farm in std::iter::once(&self.home).chain(self.small.as_ref()) {
                    let picked: &[usize] = if std::ptr::eq(farm, &self.home) {
                        &[first, second]
                    } else {
                        &[0]
                    };
                    for &i in picked {
                        let b = &farm.backends[i];
                        changes.push((
                            farm.name.clone(),
                            b.name.clone(),
                            STATES[(b.state + 1) % STATES.len()].to_string(),
                        ));
                    }
                }
                Edit::SetBackends(changes)
            }
        }
    }

    fn farm(&mut self, name: &str) -> &mut Farm {
        if self.home.name == name {
            return &mut self.home;
        }
        self.small
            .as_mut()
            .filter(|f| f.name == name)
            .expect("an edit of the client's own farm")
    }

    fn backend(&mut self, farm: &str, name: &str) -> &mut Backend {
        self.farm(farm)
            .backends
            .iter_mut()
            .find(|b| b.name == name)
            .expect("an edit of the client's own backend")
    }

    /// The daemon acknowledged `edit`: the client's picture follows it.
    pub fn acknowledged(&mut self, edit: &Edit) {
        let state_of = |s: &str| STATES.iter().position(|x| *x == s).expect("a known state");
        let backend_of = |b: &Value| Backend {
            name: b["name"].as_str().expect("a name").to_string(),
            state: 0,
            weight: b["weight"].as_u64().map_or(1, |w| w as u32),
        };
        match edit {
            Edit::CreateFarm(f) => {
                let farm = Farm {
                    name: f["name"].as_str().expect("a name").to_string(),
                    backends: f["backends"]
                        .as_array()
                        .expect("backends")
                        .iter()
                        .map(backend_of)
                        .collect(),
                };
                if farm.name == self.home.name {
                    self.home = farm;
                } else {
                    self.small = Some(farm);
                }
            }
            Edit::DeleteFarm(_) => self.small = None,
            Edit::AddBackend { farm, backend } => self.farm(farm).backends.push(backend_of(backend)),
            Edit::RemoveBackend { farm, backend } => self.farm(farm).backends.retain(|b| &b.name != backend),
            Edit::SetState { farm, backend, state } => self.backend(farm, backend).state = state_of(state),
            Edit::SetWeight {
                farm,
                backend,
                weight,
            } => self.backend(farm, backend).weight = *weight,
            Edit::SetBackends(changes) => {
                for (farm, backend, state) in changes {
                    self.backend(farm, backend).state = state_of(state);
                }
            }
        }
    }
}

//! Farm files on the in-memory engine: loaded at start, followed at Reload, refused with their
//! file and field, written back by RuntimeToPersistent.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{Operation, Options, Output, Service, ServiceError};
use crate::engine::{MemoryControl, MemoryEngine};
use crate::model::{Config, FieldError, Health};
use crate::testkit::TempDir;

/// A state directory and a farms directory beside it.
struct Dirs {
    state: TempDir,
    farms: PathBuf,
}

impl Dirs {
    fn new(what: &str) -> Dirs {
        let state = TempDir::new(what);
        let farms = state.path().join("farms.d");
        std::fs::create_dir_all(&farms).unwrap();
        Dirs { state, farms }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.farms.join(name)
    }

    fn write(&self, name: &str, doc: Value) -> PathBuf {
        let p = self.file(name);
        std::fs::write(&p, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        p
    }

    fn start(&self) -> (Service, MemoryControl) {
        let engine = MemoryEngine::new();
        let control = engine.control();
        let options = Options {
            state_dir: self.state.path().to_path_buf(),
            watch: false,
            farms_dir: Some(self.farms.clone()),
        };
        // Every caller allowed: what is tested here is what the operations do.
        let allow = super::authority::Rule(|_: &super::Caller, _: &str, _: &crate::polkit::Details| {
            crate::polkit::Answer::Yes
        });
        let svc = Service::start_with(Box::new(engine), options)
            .unwrap()
            .with_authority(std::sync::Arc::new(allow));
        (svc, control)
    }
}

fn farm(name: &str, vip: &str, backends: &[(&str, &str)]) -> Value {
    let backends: Vec<Value> = backends
        .iter()
        .map(|(n, ip)| json!({"name": n, "ip-addr": ip}))
        .collect();
    json!({"name": name, "virtual-addresses": [vip], "virtual-ports": "80", "backends": backends})
}

fn names(c: &Config) -> Vec<String> {
    c.farms.iter().map(|f| f.name.clone()).collect()
}

fn weight(c: &Config, farm: &str, backend: &str) -> u32 {
    c.farm(farm).unwrap().backend(backend).unwrap().weight
}

fn at(path: &Path, field: &str) -> String {
    format!("{}: {field}", path.display())
}

fn runtime_farm(name: &str, vip: &str) -> crate::model::Farm {
    crate::model::parse_farm_value(&farm(name, vip, &[("x", "10.0.9.1")]), "farm").unwrap()
}

#[tokio::test]
async fn files_are_loaded_at_start_in_the_first_commit() {
    let d = Dirs::new("files-start");
    let web = d.write(
        "web.json",
        json!({"farms": [farm("web", "192.0.2.10", &[("a", "10.0.0.1")])]}),
    );
    let two = d.write(
        "two.json",
        json!({"farms": [farm("api", "192.0.2.11", &[("a", "10.0.0.2")]), farm("db", "192.0.2.12", &[])],
               "policies": [{"name": "bl", "elements": ["10.8.0.2"]}]}),
    );
    std::fs::write(d.file("notes.txt"), "not a farm file").unwrap();
    let (svc, control) = d.start();
    assert_eq!(names(&svc.config()), ["api", "db", "web"]);
    assert_eq!(control.transactions(), 1);
    let o = svc.origins();
    assert_eq!(o.farm_origin("web"), web.display().to_string());
    assert_eq!(o.farm_origin("db"), two.display().to_string());
    assert_eq!(o.policy_origin("bl"), two.display().to_string());
    assert_eq!(o.farm_origin("nope"), "runtime");
}

#[tokio::test]
async fn reload_follows_added_edited_and_removed_files_and_leaves_runtime_farms() {
    let d = Dirs::new("files-follow");
    let web = d.write(
        "web.json",
        json!({"farms": [farm("web", "192.0.2.10", &[("a", "10.0.0.1")])]}),
    );
    let (svc, control) = d.start();
    svc.change(super::Origin::api(), |c| {
        let mut c = c.clone();
        c.farms.push(runtime_farm("rt", "192.0.2.50"));
        Ok(c)
    })
    .await
    .unwrap();
    let api = d.write(
        "api.json",
        json!({"farms": [farm("api", "192.0.2.11", &[("a", "10.0.0.2")])]}),
    );
    let mut edited = farm("web", "192.0.2.10", &[("a", "10.0.0.1"), ("b", "10.0.0.3")]);
    edited["backends"][1]["weight"] = json!(5);
    d.write("web.json", json!({"farms": [edited]}));
    let before = control.transactions();
    let r = svc.reload_report().await.unwrap();
    assert_eq!(r.refused, vec![]);
    assert_eq!(control.transactions(), before + 1, "one commit for both files");
    let c = svc.config();
    assert_eq!(names(&c), ["web", "rt", "api"]);
    assert_eq!(weight(&c, "web", "b"), 5);
    assert_eq!(svc.origins().farm_origin("api"), api.display().to_string());
    assert_eq!(svc.origins().farm_origin("rt"), "runtime");

    std::fs::remove_file(&web).unwrap();
    svc.reload().await.unwrap();
    assert_eq!(names(&svc.config()), ["rt", "api"]);
    assert_eq!(svc.origins().farm("web"), None);
    // Nothing changed: nothing committed.
    let n = control.transactions();
    let g = svc.generation();
    assert_eq!(svc.reload().await.unwrap(), g);
    assert_eq!(control.transactions(), n);
}

#[tokio::test]
async fn a_bad_file_is_refused_naming_it_and_the_field_and_the_others_load() {
    let d = Dirs::new("files-bad");
    let web = d.write(
        "web.json",
        json!({"farms": [farm("web", "192.0.2.10", &[("a", "10.0.0.1")])]}),
    );
    let (svc, control) = d.start();
    // web's file gets an invalid weight, a new file does not parse, a third is good.
    let mut bad = farm("web", "192.0.2.10", &[("a", "10.0.0.1")]);
    bad["backends"][0]["weight"] = json!(0);
    bad["virtual-ports"] = json!("81");
    d.write("web.json", json!({"farms": [bad]}));
    let broken = d.file("broken.json");
    std::fs::write(&broken, "{\"farms\": [").unwrap();
    d.write(
        "api.json",
        json!({"farms": [farm("api", "192.0.2.11", &[("a", "10.0.0.2")])]}),
    );
    let before = control.transactions();
    let r = svc.reload_report().await.unwrap();
    let fields: Vec<&str> = r.refused.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            at(&broken, "farms").as_str(),
            at(&web, "farms[web].backends[a].weight").as_str()
        ]
    );
    assert_eq!(control.transactions(), before + 1);
    let c = svc.config();
    assert_eq!(names(&c), ["web", "api"]);
    // The refused file's farm stays as it was, still its file's.
    assert_eq!(c.farm("web").unwrap().virtual_ports.to_string(), "80");
    assert_eq!(svc.origins().farm_origin("web"), web.display().to_string());
    // The same over the operation: the reply names them.
    let out = svc
        .execute(&super::Caller::nobody(), Operation::Reload)
        .await
        .unwrap();
    match out {
        Output::Reloaded { refused, .. } => assert_eq!(refused.len(), 2),
        other => panic!("wanted Reloaded, got {other:?}"),
    }
}

#[tokio::test]
async fn a_name_two_files_declare_or_a_runtime_farm_has_is_refused_naming_both() {
    let d = Dirs::new("files-dup");
    let a = d.write(
        "a.json",
        json!({"farms": [farm("web", "192.0.2.10", &[("a", "10.0.0.1")])]}),
    );
    let (svc, _control) = d.start();
    svc.change(super::Origin::api(), |c| {
        let mut c = c.clone();
        c.farms.push(runtime_farm("rt", "192.0.2.50"));
        Ok(c)
    })
    .await
    .unwrap();
    // b.json sorts after a.json, z.json after both; a.json owned web first.
    let b = d.write(
        "0b.json",
        json!({"farms": [farm("web", "192.0.2.20", &[("a", "10.0.0.1")]), farm("other", "192.0.2.21", &[])]}),
    );
    let z = d.write("z.json", json!({"farms": [farm("rt", "192.0.2.60", &[])]}));
    let twice = d.write(
        "twice.json",
        json!({"farms": [farm("x", "192.0.2.70", &[]), farm("x", "192.0.2.71", &[])]}),
    );
    let r = svc.reload_report().await.unwrap();
    assert_eq!(
        r.refused,
        vec![
            FieldError {
                field: at(&b, "farms[web]"),
                reason: format!("also declared by {}", a.display()),
            },
            FieldError {
                field: at(&twice, "farms[x].name"),
                reason: "declared twice in this file".into(),
            },
            FieldError {
                field: at(&z, "farms[rt]"),
                reason: "also declared at runtime (delete it there first)".into(),
            },
        ]
    );
    let c = svc.config();
    assert_eq!(names(&c), ["web", "rt"]);
    assert_eq!(
        c.farm("web").unwrap().virtual_addresses[0].to_string(),
        "192.0.2.10"
    );
    assert_eq!(svc.origins().farm_origin("web"), a.display().to_string());
    assert_eq!(svc.origins().farm_origin("rt"), "runtime");
}

#[tokio::test]
async fn runtime_changes_last_until_reload_unless_written_back() {
    let d = Dirs::new("files-persist");
    let web = d.write(
        "web.json",
        json!({"farms": [farm("web", "192.0.2.10", &[("a", "10.0.0.1"), ("b", "10.0.0.2")])],
               "policies": [{"name": "bl", "elements": ["10.8.0.2"]}]}),
    );
    let (svc, _control) = d.start();
    let set = |w: u32| {
        move |c: &Config| {
            let mut c = c.clone();
            let f = c.farms.iter_mut().find(|f| f.name == "web").unwrap();
            let b = f.backends.iter_mut().find(|b| b.name == "a").unwrap();
            b.weight = w;
            // A checker's verdict: runtime state, kept by a reload, never written.
            let b = f.backends.iter_mut().find(|b| b.name == "b").unwrap();
            b.health = Health::Failing;
            b.health_reason = "connect: refused".into();
            Ok(c)
        }
    };
    svc.change(super::Origin::api(), set(7)).await.unwrap();
    assert_eq!(weight(&svc.config(), "web", "a"), 7);
    svc.reload().await.unwrap();
    let c = svc.config();
    assert_eq!(weight(&c, "web", "a"), 1, "the file's version is back");
    assert_eq!(
        c.farm("web").unwrap().backend("b").unwrap().health,
        Health::Failing
    );

    svc.change(super::Origin::api(), set(9)).await.unwrap();
    let caller = super::Caller::nobody();
    let persist = |farm: &str| Operation::RuntimeToPersistent { farm: farm.into() };
    svc.execute(&caller, persist("web")).await.unwrap();
    let doc: Value = serde_json::from_slice(&std::fs::read(&web).unwrap()).unwrap();
    let want_web = json!({"name": "web", "virtual-addresses": ["192.0.2.10"], "virtual-ports": "80",
        "backends": [{"name": "a", "ip-addr": "10.0.0.1", "weight": 9}, {"name": "b", "ip-addr": "10.0.0.2"}]});
    let written: crate::model::Farm = serde_json::from_value(doc["farms"][0].clone()).unwrap();
    let want: crate::model::Farm = serde_json::from_value(want_web).unwrap();
    assert_eq!(written, want);
    assert_eq!(doc["policies"], json!([{"name": "bl", "elements": ["10.8.0.2"]}]));
    assert_eq!(doc["farms"][0]["backends"][1].get("health"), None);
    svc.reload().await.unwrap();
    assert_eq!(weight(&svc.config(), "web", "a"), 9, "written back, it stays");
    let leftovers: Vec<_> = std::fs::read_dir(&d.farms)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["web.json"]);

    // A runtime farm has no file; renaming a file's farm is refused.
    svc.change(super::Origin::api(), |c| {
        let mut c = c.clone();
        c.farms.push(runtime_farm("rt", "192.0.2.50"));
        Ok(c)
    })
    .await
    .unwrap();
    match svc.execute(&caller, persist("rt")).await {
        Err(ServiceError::Invalid(i)) => assert_eq!(i.0[0].field, "farms[rt]"),
        other => panic!("wanted Invalid, got {other:?}"),
    }
    assert!(matches!(
        svc.execute(&caller, persist("nope")).await,
        Err(ServiceError::NotFound(_))
    ));
    let rename = Operation::RenameFarm {
        farm: "web".into(),
        new_name: "www".into(),
    };
    match svc.execute(&caller, rename).await {
        Err(ServiceError::Invalid(i)) => assert_eq!(i.0[0].field, "farms[web].name"),
        other => panic!("wanted Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn a_file_removed_while_stopped_deletes_its_farms_at_start() {
    let d = Dirs::new("files-restart");
    let web = d.write(
        "web.json",
        json!({"farms": [farm("web", "192.0.2.10", &[("a", "10.0.0.1")])]}),
    );
    let (svc, _control) = d.start();
    svc.change(super::Origin::api(), |c| {
        let mut c = c.clone();
        c.farms.push(runtime_farm("rt", "192.0.2.50"));
        Ok(c)
    })
    .await
    .unwrap();
    drop(svc);
    // The writer lets the state directory go when the handle is gone.
    let mut started = None;
    for _ in 0..100 {
        std::fs::remove_file(&web).ok();
        let engine = MemoryEngine::new();
        let options = Options {
            state_dir: d.state.path().to_path_buf(),
            watch: false,
            farms_dir: Some(d.farms.clone()),
        };
        match Service::start_with(Box::new(engine), options) {
            Ok(s) => {
                started = Some(s);
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    let svc = started.expect("the service starts again");
    assert_eq!(names(&svc.config()), ["rt"]);
    assert_eq!(svc.origins().farm("web"), None);
}

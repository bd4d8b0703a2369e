//! Policies in checkpoints, through the service on the in-memory engine: a checkpoint of every
//! farm keeps every policy, one of some farms keeps the policies they refer to, a rollback puts
//! them back in the same commit as the farms, and files written before policies were kept load.

use serde_json::json;

use super::checkpoint::{self, DELETE_NEW_FARMS};
use super::checkpoint_tests::{create, fresh, rollback, run, start};
use super::*;
use crate::model::Policy;

fn policy(name: &str, elements: &[&str]) -> Policy {
    serde_json::from_value(json!({"name": name, "elements": elements})).expect("a valid policy")
}

fn attach(farm: &str, policies: &[&str]) -> Operation {
    Operation::UpdateFarm {
        farm: farm.into(),
        patch: Patch::one("policies", Some(json!(policies))),
    }
}

fn add_elements(policy: &str, add: &[&str]) -> Operation {
    Operation::EditPolicyElements {
        policy: policy.into(),
        edit: ElementEdit {
            replace: None,
            remove: Vec::new(),
            add: add.iter().map(|a| a.to_string()).collect(),
        },
    }
}

fn create_policy(p: Policy) -> Operation {
    Operation::CreatePolicy { policy: Box::new(p) }
}

fn policy_names(s: &Service) -> Vec<String> {
    s.config().policies.iter().map(|p| p.name.clone()).collect()
}

/// `web` attaches `bad`; policy `spare` is attached by no farm.
async fn with_policies(what: &str) -> (crate::testkit::TempDir, Service, crate::engine::MemoryControl) {
    let (dir, s, control) = fresh(what);
    run(&s, create_policy(policy("spare", &["10.9.0.1"])))
        .await
        .expect("spare");
    run(&s, attach("web", &["bad"])).await.expect("attached");
    (dir, s, control)
}

/// Every way a rollback must undo a policy: `bad` edited, detached and deleted, `spare` edited,
/// `fresh` created and attached to `web`.
async fn break_policies(s: &Service) {
    run(s, add_elements("bad", &["10.8.0.3"])).await.expect("edited");
    run(s, add_elements("spare", &["10.9.0.2"]))
        .await
        .expect("edited");
    run(s, create_policy(policy("fresh", &["10.7.0.1"])))
        .await
        .expect("fresh");
    run(s, attach("web", &["fresh"])).await.expect("attached");
    run(s, Operation::DeletePolicy { policy: "bad".into() })
        .await
        .expect("deleted");
}

#[tokio::test]
async fn a_checkpoint_of_every_farm_restores_every_policy_in_the_same_commit() {
    let (_dir, s, control) = with_policies("checkpoint-policies-all").await;
    let before = s.config();
    let id = create(&s, &[], 0, 0).await.expect("created");
    break_policies(&s).await;
    assert_eq!(policy_names(&s), ["spare", "fresh"]);
    let (transactions, generation) = (control.transactions(), s.generation());
    let results = rollback(&s, id).await.expect("rolled back");
    assert_eq!(results, [("web".to_string(), checkpoint::RESTORED)]);
    assert_eq!(control.transactions(), transactions + 1, "one transaction");
    assert_eq!(s.generation(), generation + 1, "one commit");
    assert_eq!(s.config().farms, before.farms);
    assert_eq!(
        policy_names(&s),
        ["spare", "fresh", "bad"],
        "bad back (appended), spare's edit undone, fresh kept without delete-new-farms"
    );
    let policies = &s.config().policies;
    assert_eq!(policies[0], before.policies[1], "spare as it was");
    assert_eq!(policies[1], policy("fresh", &["10.7.0.1"]));
    assert_eq!(policies[2], before.policies[0], "bad as it was");
}

#[tokio::test]
async fn delete_new_farms_of_every_farm_deletes_the_policies_created_since() {
    let (_dir, s, _) = with_policies("checkpoint-policies-delete-new").await;
    let before = s.config();
    let id = create(&s, &[], 0, DELETE_NEW_FARMS).await.expect("created");
    break_policies(&s).await;
    rollback(&s, id).await.expect("rolled back");
    assert_eq!(s.config().farms, before.farms);
    assert_eq!(policy_names(&s), ["spare", "bad"], "fresh gone");
    assert_eq!(s.config().policies[1], before.policies[0]);
}

#[tokio::test]
async fn a_checkpoint_of_some_farms_keeps_only_the_policies_they_refer_to() {
    let (dir, s, _) = with_policies("checkpoint-policies-some").await;
    let before = s.config();
    let id = create(&s, &["web"], 0, DELETE_NEW_FARMS).await.expect("created");
    let saved = checkpoint::load(dir.path()).expect("a readable file");
    assert_eq!(
        saved.checkpoints[0].policies,
        [before.policies[0].clone()],
        "saved with its farm, before the reply"
    );
    break_policies(&s).await;
    rollback(&s, id).await.expect("rolled back");
    assert_eq!(s.config().farms, before.farms);
    assert_eq!(
        policy_names(&s),
        ["spare", "fresh", "bad"],
        "fresh stays: only a checkpoint of every farm deletes policies"
    );
    let policies = &s.config().policies;
    assert_eq!(
        policies[0],
        policy("spare", &["10.9.0.1", "10.9.0.2"]),
        "not covered"
    );
    assert_eq!(policies[2], before.policies[0], "bad as it was");
}

#[tokio::test]
async fn a_checkpoint_saved_without_policies_still_rolls_back_and_deletes_none() {
    let (dir, s, _) = with_policies("checkpoint-policies-old-file").await;
    let before = s.config();
    let id = create(&s, &[], 0, DELETE_NEW_FARMS).await.expect("created");
    drop(s);
    // The file as the daemon wrote it before checkpoints kept policies.
    let path = dir.path().join(checkpoint::CHECKPOINTS_FILE);
    let mut old: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the file")).expect("JSON");
    let c = old["checkpoints"][0].as_object_mut().expect("a checkpoint");
    assert!(c.remove("policies").is_some() && c.remove("existing-policies").is_some());
    std::fs::write(&path, old.to_string()).expect("written");

    let (s, _) = start(&dir);
    run(&s, create_policy(policy("fresh", &["10.7.0.1"])))
        .await
        .expect("fresh");
    run(&s, add_elements("spare", &["10.9.0.2"]))
        .await
        .expect("edited");
    run(&s, attach("web", &[])).await.expect("detached");
    let results = rollback(&s, id).await.expect("rolled back");
    assert_eq!(results, [("web".to_string(), checkpoint::RESTORED)]);
    assert_eq!(s.config().farms, before.farms);
    assert_eq!(
        policy_names(&s),
        ["bad", "spare", "fresh"],
        "no policy kept, none deleted"
    );
    assert_eq!(s.config().policies[1], policy("spare", &["10.9.0.1", "10.9.0.2"]));
}

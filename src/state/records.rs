//! The journal's records: one committed change each, in O(change) bytes, and how a record is
//! written as one self-checking line and applied to a [`State`] on replay.
//!
//! A line is `{"seq":N,"crc":"xxxxxxxx","change":{...}}`: valid JSON for an operator's tools, and
//! the CRC-32 covers the sequence number and the change's exact bytes, so a torn or damaged line
//! is recognized without trusting anything it says.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::State;
use crate::engine::Allocation;
use crate::engine::alloc::FarmAlloc;
use crate::model::{Backend, Config, Farm, List, Policy};

/// One committed change: configuration edits, then allocation edits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Change {
    pub ops: Vec<Op>,
    /// The allocation's farm id cursor, when it moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_farm_id: Option<u16>,
}

/// One edit. Positions are those of the list after the edits before it in the same record, so
/// applying the ops in order rebuilds the committed lists exactly; a name that is already there
/// is replaced where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Op {
    /// The whole state, for changes that reorder lists (an import).
    PutState {
        config: Box<Config>,
        allocation: Box<Allocation>,
    },
    PutFarm {
        index: usize,
        farm: Box<Farm>,
    },
    DeleteFarm {
        name: String,
    },
    PutBackend {
        farm: String,
        index: usize,
        backend: Box<Backend>,
    },
    DeleteBackend {
        farm: String,
        index: usize,
        name: String,
    },
    PutPolicy {
        index: usize,
        policy: Box<Policy>,
    },
    DeletePolicy {
        name: String,
    },
    PutAlloc {
        farm: String,
        alloc: Box<FarmAlloc>,
    },
    DeleteAlloc {
        farm: String,
    },
    EditAlloc(Box<AllocDelta>),
}

/// What changed in one farm's allocation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AllocDelta {
    pub farm: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub added: BTreeMap<String, u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    pub next_member: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots4: Option<SlotEdit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots6: Option<SlotEdit>,
}

/// A slot vector's new length and the slots whose member changed (index, member id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotEdit {
    pub len: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(usize, u16)>,
}

impl SlotEdit {
    /// What turns `old` into `new`; `None` when they are equal.
    pub fn between(old: &[u16], new: &[u16]) -> Option<SlotEdit> {
        if old == new {
            return None;
        }
        let set = new
            .iter()
            .enumerate()
            .filter(|(i, m)| old.get(*i) != Some(*m))
            .map(|(i, m)| (i, *m))
            .collect();
        Some(SlotEdit { len: new.len(), set })
    }

    fn apply(&self, slots: &mut Vec<u16>) -> Result<(), String> {
        // Longer than a farm's weights may add up to: damage, not a farm.
        if self.len as u64 > crate::model::MAX_FARM_WEIGHT {
            return Err(format!("slot vector length {} is impossible", self.len));
        }
        slots.resize(self.len, 0);
        for (i, m) in &self.set {
            let s = slots
                .get_mut(*i)
                .ok_or_else(|| format!("slot {i} is past the end ({})", self.len))?;
            *s = *m;
        }
        if let Some(i) = slots.iter().position(|m| *m == 0) {
            return Err(format!("slot {i} is left without a member"));
        }
        Ok(())
    }
}

/// The CRC-32 (IEEE) of `bytes`, chained from `crc` (0 to start).
fn crc32(mut crc: u32, bytes: &[u8]) -> u32 {
    crc = !crc;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn checksum(seq: u64, body: &str) -> u32 {
    crc32(crc32(0, format!("{seq}:").as_bytes()), body.as_bytes())
}

const SEQ: &str = "{\"seq\":";
const CRC: &str = ",\"crc\":\"";
const CHANGE: &str = "\",\"change\":";

/// The line (with its newline) that records `change` as number `seq`.
pub fn encode(seq: u64, change: &Change) -> Result<String, serde_json::Error> {
    let body = serde_json::to_string(change)?;
    let crc = checksum(seq, &body);
    Ok(format!("{SEQ}{seq}{CRC}{crc:08x}{CHANGE}{body}}}\n"))
}

/// Why a line is not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// Incomplete or damaged (the checksum does not match): what a write cut short leaves.
    Damaged(String),
    /// Intact but not understood: never a torn write.
    Unreadable(String),
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Damaged(r) | Bad::Unreadable(r) => f.write_str(r),
        }
    }
}

/// The sequence number and change of one line (without its newline).
pub fn decode(line: &str) -> Result<(u64, Change), Bad> {
    let damaged = |what: &str| Bad::Damaged(format!("damaged record ({what})"));
    let rest = line
        .strip_prefix(SEQ)
        .ok_or_else(|| damaged("no sequence number"))?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let seq: u64 = rest[..digits]
        .parse()
        .map_err(|_| damaged("no sequence number"))?;
    let rest = rest[digits..]
        .strip_prefix(CRC)
        .ok_or_else(|| damaged("no checksum"))?;
    let (hex, rest) = rest.split_at_checked(8).ok_or_else(|| damaged("no checksum"))?;
    let crc = u32::from_str_radix(hex, 16).map_err(|_| damaged("no checksum"))?;
    let body = rest
        .strip_prefix(CHANGE)
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| damaged("incomplete"))?;
    if checksum(seq, body) != crc {
        return Err(damaged("checksum mismatch"));
    }
    let de = &mut serde_json::Deserializer::from_str(body);
    let change: Change = serde_path_to_error::deserialize(de).map_err(|e| {
        Bad::Unreadable(format!(
            "record {seq} is intact but not understood: {}: {}",
            e.path(),
            e.inner()
        ))
    })?;
    Ok((seq, change))
}

/// Where `name` is in `list`: at `hint` when it is there (the usual case), else searched.
fn find<T: Clone>(list: &List<T>, hint: usize, name: &str, of: impl Fn(&T) -> &str) -> Option<usize> {
    if list.get(hint).is_some_and(|x| of(x) == name) {
        return Some(hint);
    }
    list.iter().position(|x| of(x) == name)
}

/// Replaces the item named like `item` where it stands, or inserts it at `index`.
fn put<T: Clone>(list: &mut List<T>, index: usize, item: T, of: impl Fn(&T) -> &str) -> Result<(), String> {
    match find(list, index, of(&item), &of) {
        Some(i) => list[i] = item,
        None if index <= list.len() => list.insert(index, item),
        None => return Err(format!("position {index} is past the end ({})", list.len())),
    }
    Ok(())
}

fn delete<T: Clone>(
    list: &mut List<T>,
    index: usize,
    name: &str,
    of: impl Fn(&T) -> &str,
) -> Result<(), String> {
    let i = find(list, index, name, of).ok_or_else(|| format!("{name:?} is not there"))?;
    list.remove(i);
    Ok(())
}

fn farm_mut<'a>(config: &'a mut Config, name: &str) -> Result<&'a mut Farm, String> {
    // By position: a mutable walk would copy every farm the list shares with others.
    let i = config.farms.iter().position(|f| f.name == name);
    i.and_then(|i| config.farms.get_mut(i))
        .ok_or_else(|| format!("farm {name:?} is not there"))
}

impl Change {
    /// Applies the change to `state`; an error says what did not fit (the state is then partly
    /// changed, and the caller refuses it whole).
    pub fn apply(&self, state: &mut State) -> Result<(), String> {
        for op in &self.ops {
            op.apply(state)?;
        }
        if let Some(n) = self.next_farm_id {
            state.allocation.next_farm_id = n;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.next_farm_id.is_none()
    }
}

impl Op {
    fn apply(&self, state: &mut State) -> Result<(), String> {
        let config = &mut state.config;
        let alloc = &mut state.allocation;
        match self {
            Op::PutState {
                config: c,
                allocation,
            } => {
                *config = (**c).clone();
                *alloc = (**allocation).clone();
            }
            Op::PutFarm { index, farm } => put(&mut config.farms, *index, (**farm).clone(), |f| &f.name)
                .map_err(|e| format!("farm {:?}: {e}", farm.name))?,
            Op::DeleteFarm { name } => {
                delete(&mut config.farms, 0, name, |f| &f.name).map_err(|e| format!("farm {e}"))?
            }
            Op::PutBackend { farm, index, backend } => {
                let f = farm_mut(config, farm)?;
                put(&mut f.backends, *index, (**backend).clone(), |b| &b.name)
                    .map_err(|e| format!("farm {farm:?}, backend {:?}: {e}", backend.name))?
            }
            Op::DeleteBackend { farm, index, name } => {
                let f = farm_mut(config, farm)?;
                delete(&mut f.backends, *index, name, |b| &b.name)
                    .map_err(|e| format!("farm {farm:?}, backend {e}"))?
            }
            Op::PutPolicy { index, policy } => {
                put(&mut config.policies, *index, (**policy).clone(), |p| &p.name)
                    .map_err(|e| format!("policy {:?}: {e}", policy.name))?
            }
            Op::DeletePolicy { name } => {
                delete(&mut config.policies, 0, name, |p| &p.name).map_err(|e| format!("policy {e}"))?
            }
            Op::PutAlloc { farm, alloc: fa } => {
                alloc.farms.insert(farm.clone(), (**fa).clone());
            }
            // Written when what was there is not known (after an undone commit): may be none.
            Op::DeleteAlloc { farm } => {
                alloc.farms.remove(farm);
            }
            Op::EditAlloc(d) => {
                let fa = alloc
                    .farms
                    .get_mut(&d.farm)
                    .ok_or_else(|| format!("farm {:?} has no allocation to edit", d.farm))?;
                // Edited in place: its reverse index (if one was built) would no longer be true.
                fa.forget_index();
                for name in &d.removed {
                    fa.members
                        .remove(name)
                        .ok_or_else(|| format!("farm {:?}: backend {name:?} has no member id", d.farm))?;
                }
                for (name, id) in &d.added {
                    fa.members.insert(name.clone(), *id);
                }
                fa.next_member = d.next_member;
                for (edit, slots) in [(&d.slots4, &mut fa.slots4), (&d.slots6, &mut fa.slots6)] {
                    if let Some(e) = edit {
                        e.apply(slots).map_err(|e| format!("farm {:?}: {e}", d.farm))?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_config;

    fn sample() -> Change {
        let config = parse_config(
            r#"{"farms":[{"name":"web","virtual-addresses":["192.0.2.1"],
               "backends":[{"name":"a","ip-addr":"10.0.0.1","weight":2}]}],
               "policies":[{"name":"bad","elements":["10.8.0.2"]}]}"#,
        )
        .unwrap();
        let farm = config.farms[0].clone();
        Change {
            ops: vec![
                Op::DeleteFarm { name: "old".into() },
                Op::PutFarm {
                    index: 0,
                    farm: Box::new(farm.clone()),
                },
                Op::PutBackend {
                    farm: "web".into(),
                    index: 1,
                    backend: Box::new(farm.backends[0].clone()),
                },
                Op::DeleteBackend {
                    farm: "web".into(),
                    index: 3,
                    name: "z".into(),
                },
                Op::PutPolicy {
                    index: 0,
                    policy: Box::new(config.policies[0].clone()),
                },
                Op::DeletePolicy { name: "p".into() },
                Op::EditAlloc(Box::new(AllocDelta {
                    farm: "web".into(),
                    added: [("a".to_string(), 7)].into(),
                    removed: vec!["z".into()],
                    next_member: 7,
                    slots4: Some(SlotEdit {
                        len: 3,
                        set: vec![(1, 7), (2, 7)],
                    }),
                    slots6: None,
                })),
                Op::DeleteAlloc { farm: "old".into() },
                Op::PutState {
                    config: Box::new(config),
                    allocation: Box::default(),
                },
            ],
            next_farm_id: Some(4),
        }
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0xCBF4_3926);
    }

    #[test]
    fn a_record_round_trips_as_one_json_line() {
        let change = sample();
        let line = encode(42, &change).unwrap();
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(
            v["change"]["ops"][0],
            serde_json::json!({"op": "delete-farm", "name": "old"})
        );
        assert_eq!(decode(line.trim_end()).unwrap(), (42, change));
    }

    #[test]
    fn damage_is_detected_and_told_apart_from_an_unknown_format() {
        let line = encode(7, &sample()).unwrap();
        let line = line.trim_end();
        // Cut anywhere: never a record.
        for cut in [0, 5, 20, line.len() / 2, line.len() - 1] {
            assert!(
                matches!(decode(&line[..cut]), Err(Bad::Damaged(_))),
                "cut at {cut}"
            );
        }
        // One changed byte in the body, or another sequence number: the checksum says so.
        let flipped = line.replacen("\"web\"", "\"wex\"", 1);
        assert_eq!(
            decode(&flipped),
            Err(Bad::Damaged("damaged record (checksum mismatch)".into()))
        );
        let moved = line.replacen("\"seq\":7", "\"seq\":8", 1);
        assert!(matches!(decode(&moved), Err(Bad::Damaged(_))));
        // A well-formed record of an unknown op is intact: refused, not dropped as torn.
        let body = r#"{"ops":[{"op":"explode"}]}"#;
        let odd = format!("{SEQ}3{CRC}{:08x}{CHANGE}{body}}}", checksum(3, body));
        match decode(&odd) {
            Err(Bad::Unreadable(r)) => assert!(
                r.starts_with("record 3 is intact but not understood: ops[0]"),
                "{r}"
            ),
            other => panic!("wanted Unreadable, got {other:?}"),
        }
    }

    #[test]
    fn slot_edits_resize_and_set() {
        let old = [1, 2, 3, 4];
        let new = [1, 4, 3];
        let e = SlotEdit::between(&old, &new).unwrap();
        assert_eq!(
            e,
            SlotEdit {
                len: 3,
                set: vec![(1, 4)]
            }
        );
        let mut v = old.to_vec();
        e.apply(&mut v).unwrap();
        assert_eq!(v, new);
        assert_eq!(SlotEdit::between(&old, &old), None);
        let grow = SlotEdit::between(&[1], &[1, 5, 5]).unwrap();
        assert_eq!(grow.set, vec![(1, 5), (2, 5)]);
        // A gap left unfilled is damage.
        let mut v = vec![1];
        let gap = SlotEdit {
            len: 3,
            set: vec![(1, 5)],
        };
        assert_eq!(gap.apply(&mut v), Err("slot 2 is left without a member".into()));
    }
}

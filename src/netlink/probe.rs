//! Feature probing: each probe is a batch that creates a throw-away table using the feature and
//! deletes it again in the same transaction, so the kernel validates it and nothing remains.

use super::attr::AttrWriter;
use super::batch::Batch;
use super::conn::Connection;
use super::consts::*;
use super::data::Family;
use super::error::{Error, Result};
use super::expr::Expr;
use super::objects::{Chain, Rule, Table};
use super::sys::*;

const PROBE_TABLE: &str = "nftlbd-probe";

/// What this kernel can do, among the features nftlbd may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelFeatures {
    /// Table flag `owner` (5.12+): only the creating socket may change the table.
    pub table_owner: bool,
    /// Table flag `persist` (6.9+): an owned table survives its owner's exit.
    pub table_persist: bool,
    /// The `queue` expression (NFT_QUEUE).
    pub queue: bool,
    /// Flowtables (NF_FLOW_TABLE).
    pub flowtable: bool,
}

impl KernelFeatures {
    /// Names as exposed on D-Bus (`KernelFeatures`).
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (on, name) in [
            (self.table_owner, "table-owner"),
            (self.table_persist, "table-persist"),
            (self.queue, "queue"),
            (self.flowtable, "flowtable"),
        ] {
            if on {
                v.push(name);
            }
        }
        v
    }
}

fn probe_table(flags: u32) -> Table {
    Table {
        flags,
        ..Table::new(Family::Ip, PROBE_TABLE)
    }
}

impl Connection {
    /// Has the kernel check one probe batch without committing it: Ok(true) if it accepted it,
    /// Ok(false) if it refused the feature. The ruleset and its generation stay as they are.
    fn try_probe(&mut self, build: impl FnOnce(&mut Batch) -> Result<()>) -> Result<bool> {
        let mut b = Batch::new();
        build(&mut b)?;
        match self.check(b) {
            Ok(()) => Ok(true),
            Err(Error::Kernel { errno, .. })
                if [libc::EOPNOTSUPP, libc::ENOENT, libc::EINVAL, libc::EAFNOSUPPORT].contains(&errno) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    pub fn probe(&mut self) -> Result<KernelFeatures> {
        let table_owner = self.try_probe(|b| b.add_table(&probe_table(NFT_TABLE_F_OWNER)))?;
        let table_persist =
            self.try_probe(|b| b.add_table(&probe_table(NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST)))?;
        let queue = self.try_probe(|b| {
            b.add_table(&probe_table(0))?;
            b.add_chain(&Chain::regular(Family::Ip, PROBE_TABLE, "c"))?;
            b.add_rule(&Rule::new(
                Family::Ip,
                PROBE_TABLE,
                "c",
                vec![Expr::Queue {
                    num: 0,
                    total: 1,
                    flags: 0,
                }],
            ))
        })?;
        let flowtable = self.try_probe(|b| {
            b.add_table(&probe_table(0))?;
            add_flowtable(b, Family::Ip, PROBE_TABLE, "ft", &["lo"])
        })?;
        Ok(KernelFeatures {
            table_owner,
            table_persist,
            queue,
            flowtable,
        })
    }
}

/// A flowtable on `devices` (ingress hook, priority 0).
pub fn add_flowtable(b: &mut Batch, family: Family, table: &str, name: &str, devices: &[&str]) -> Result<()> {
    b.push(
        NFT_MSG_NEWFLOWTABLE,
        NLM_F_CREATE,
        family,
        || format!("add flowtable {family} {table} {name}"),
        |w: &mut AttrWriter| {
            w.put_str(NFTA_FLOWTABLE_TABLE, table);
            w.put_str(NFTA_FLOWTABLE_NAME, name);
            w.nest(NFTA_FLOWTABLE_HOOK, |w| {
                w.put_be32(NFTA_FLOWTABLE_HOOK_NUM, NF_NETDEV_INGRESS);
                w.put_be32(NFTA_FLOWTABLE_HOOK_PRIORITY, 0);
                w.nest(NFTA_FLOWTABLE_HOOK_DEVS, |w| {
                    for d in devices {
                        w.put_str(NFTA_DEVICE_NAME, d);
                    }
                });
            });
            Ok(())
        },
    )
}

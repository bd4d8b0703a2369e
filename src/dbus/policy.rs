//! `org.nftlbd1.Policy` at `/org/nftlbd1/policy/<escaped name>`: a blacklist or whitelist whose
//! elements change in one transaction each (`ReplaceElements` swaps thousands atomically).

use zbus::message::Header;
use zbus::{Connection, interface};

use super::auth::{execute, unexpected};
use super::error::Error;
use super::props;
use crate::service::{ElementEdit, Operation, Output, Service};

pub const IFACE: &str = "org.nftlbd1.Policy";

pub struct PolicyObject {
    pub policy: String,
    pub service: Service,
}

impl PolicyObject {
    fn value(&self, name: &str) -> zbus::fdo::Result<zbus::zvariant::OwnedValue> {
        let config = self.service.config();
        let p = config
            .policies
            .iter()
            .find(|p| p.name == self.policy)
            .ok_or_else(|| zbus::fdo::Error::UnknownObject(format!("policy {:?} is gone", self.policy)))?;
        let v = props::policy_value(p, name)
            .ok_or_else(|| zbus::fdo::Error::UnknownProperty(name.to_string()))?;
        super::owned(v)
    }

    fn string(&self, name: &str) -> zbus::fdo::Result<String> {
        String::try_from(self.value(name)?).map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }

    async fn edit(&self, conn: &Connection, hdr: &Header<'_>, edit: ElementEdit) -> Result<(), Error> {
        let policy = self.policy.clone();
        execute(
            &self.service,
            conn,
            hdr,
            Operation::EditPolicyElements { policy, edit },
        )
        .await?;
        Ok(())
    }
}

#[interface(name = "org.nftlbd1.Policy")]
impl PolicyObject {
    /// Adds elements (IPs, CIDRs, `a-b` ranges); those already there stay once.
    async fn add_elements(
        &self,
        elements: Vec<String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let edit = ElementEdit {
            add: elements,
            ..ElementEdit::default()
        };
        self.edit(conn, &hdr, edit).await
    }

    /// Removes elements; naming one that is not there changes nothing and says so.
    async fn remove_elements(
        &self,
        elements: Vec<String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let edit = ElementEdit {
            remove: elements,
            ..ElementEdit::default()
        };
        self.edit(conn, &hdr, edit).await
    }

    /// Replaces every element in one transaction.
    async fn replace_elements(
        &self,
        elements: Vec<String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let edit = ElementEdit {
            replace: Some(elements),
            ..ElementEdit::default()
        };
        self.edit(conn, &hdr, edit).await
    }

    /// (element, packets, bytes) for each merged range of the policy.
    #[zbus(out_args("counters"))]
    async fn get_counters(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<(String, u64, u64)>, Error> {
        let policy = self.policy.clone();
        match execute(&self.service, conn, &hdr, Operation::GetPolicyCounters { policy }).await? {
            Output::PolicyCounters(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    async fn delete(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let policy = self.policy.clone();
        execute(&self.service, conn, &hdr, Operation::DeletePolicy { policy }).await?;
        Ok(())
    }

    #[zbus(property)]
    fn name(&self) -> zbus::fdo::Result<String> {
        self.string("Name")
    }

    #[zbus(property, name = "Type")]
    fn kind(&self) -> zbus::fdo::Result<String> {
        self.string("Type")
    }

    #[zbus(property)]
    fn family(&self) -> zbus::fdo::Result<String> {
        self.string("Family")
    }

    #[zbus(property)]
    fn timeout(&self) -> zbus::fdo::Result<u32> {
        u32::try_from(self.value("Timeout")?).map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }

    #[zbus(property)]
    fn log_prefix(&self) -> zbus::fdo::Result<String> {
        self.string("LogPrefix")
    }

    /// Read when asked, as a farm's: a reload that moves the policy to another file emits nothing.
    #[zbus(property(emits_changed_signal = "false"))]
    fn origin(&self) -> zbus::fdo::Result<String> {
        let name = self.string("Name")?;
        Ok(self.service.origins().policy_origin(&name))
    }

    #[zbus(property)]
    fn elements(&self) -> zbus::fdo::Result<Vec<String>> {
        Vec::<String>::try_from(self.value("Elements")?).map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }
}

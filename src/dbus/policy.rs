//! `org.nftlbd1.Policy` at `/org/nftlbd1/policy/<escaped name>`: a blacklist or whitelist whose
//! elements change in one transaction each (`ReplaceElements` swaps thousands atomically).

use zbus::message::Header;
use zbus::{Connection, interface};

use super::auth::{self, Details};
use super::error::Error;
use super::props;
use crate::model::Invalid;
use crate::service::ops;
use crate::service::{Origin, Service, ServiceError};

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

    async fn require(&self, conn: &Connection, hdr: &Header<'_>, verb: &str) -> Result<(), Error> {
        let details = Details {
            policy: self.policy.clone(),
            verb: verb.into(),
            ..Details::default()
        };
        auth::require(conn, hdr, auth::POLICY_MANAGE, &details).await
    }

    /// Commits `f` of the policy's element list.
    async fn edit_elements(
        &self,
        f: impl FnOnce(&mut Vec<String>) -> Result<(), ServiceError> + Send + 'static,
    ) -> Result<(), Error> {
        self.service
            .change(Origin::api(), ops::edit_policy_elements(self.policy.clone(), f))
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
        self.require(conn, &hdr, "add-elements").await?;
        self.edit_elements(move |list| {
            for e in elements {
                if !list.contains(&e) {
                    list.push(e);
                }
            }
            Ok(())
        })
        .await
    }

    /// Removes elements; naming one that is not there changes nothing and says so.
    async fn remove_elements(
        &self,
        elements: Vec<String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        self.require(conn, &hdr, "remove-elements").await?;
        let name = self.policy.clone();
        self.edit_elements(move |list| {
            if let Some(missing) = elements.iter().find(|e| !list.contains(e)) {
                return Err(ServiceError::Invalid(Invalid::one(
                    format!("policies[{name}].elements"),
                    format!("{missing:?} is not an element"),
                )));
            }
            list.retain(|x| !elements.contains(x));
            Ok(())
        })
        .await
    }

    /// Replaces every element in one transaction.
    async fn replace_elements(
        &self,
        elements: Vec<String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        self.require(conn, &hdr, "replace-elements").await?;
        self.edit_elements(move |list| {
            *list = elements;
            Ok(())
        })
        .await
    }

    /// (element, packets, bytes) for each merged range of the policy.
    #[zbus(out_args("counters"))]
    async fn get_counters(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<(String, u64, u64)>, Error> {
        let details = Details {
            policy: self.policy.clone(),
            verb: "get-counters".into(),
            ..Details::default()
        };
        auth::require(conn, &hdr, auth::INFO, &details).await?;
        let name = self.policy.clone();
        Ok(self.service.query(move |e| e.policy_counters(&name)).await?)
    }

    async fn delete(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        self.require(conn, &hdr, "delete").await?;
        delete_policy(&self.service, &self.policy).await
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

    #[zbus(property)]
    fn elements(&self) -> zbus::fdo::Result<Vec<String>> {
        Vec::<String>::try_from(self.value("Elements")?).map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }
}

pub async fn delete_policy(service: &Service, name: &str) -> Result<(), Error> {
    service
        .change(Origin::api(), ops::delete_policy(name.to_string()))
        .await?;
    Ok(())
}

//! The bus side of nftlbctl: calls to `org.nftlbd1` that allow interactive authorization, and
//! polkit's text agent for them when a person is at the terminal (as systemctl does).

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use zbus::names::OwnedInterfaceName;
use zbus::proxy::MethodFlags;
use zbus::zvariant::{DynamicType, OwnedObjectPath, OwnedValue};
use zbus::{Connection, Proxy};

use super::CtlError;

pub use crate::schema::{BACKEND, BUS_NAME as DEST, FARM, MANAGER, POLICY, ROOT};

/// Every object with its interfaces' properties (`GetManagedObjects`).
pub type Objects = HashMap<OwnedObjectPath, HashMap<OwnedInterfaceName, HashMap<String, OwnedValue>>>;

pub struct Client {
    conn: Connection,
    /// Whether a polkit agent may ask the person at the terminal (`--no-ask-password` clears it).
    ask: bool,
    agent: Option<super::agent::Agent>,
}

impl Client {
    pub async fn system(ask: bool) -> Result<Client, CtlError> {
        let conn = Connection::system().await?;
        Ok(Client {
            conn,
            ask,
            agent: None,
        })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub async fn policy_path(&self, name: &str) -> Result<OwnedObjectPath, CtlError> {
        self.read(ROOT, MANAGER, "GetPolicy", &(name,)).await
    }

    async fn proxy(&self, path: &str, iface: &str) -> Result<Proxy<'static>, CtlError> {
        Ok(Proxy::new(&self.conn, DEST, path.to_string(), iface.to_string()).await?)
    }

    /// A call that only reads.
    pub async fn read<B, R>(&self, path: &str, iface: &str, method: &str, body: &B) -> Result<R, CtlError>
    where
        B: serde::Serialize + DynamicType,
        R: DeserializeOwned + zbus::zvariant::Type,
    {
        Ok(self.proxy(path, iface).await?.call(method, body).await?)
    }

    /// A call that changes something: polkit may ask for authentication, through the agent this
    /// client starts when it runs on a terminal.
    pub async fn change<B, R>(
        &mut self,
        path: &str,
        iface: &str,
        method: &str,
        body: &B,
    ) -> Result<R, CtlError>
    where
        B: serde::Serialize + DynamicType,
        R: DeserializeOwned + zbus::zvariant::Type,
    {
        self.start_agent();
        let flags = if self.ask {
            MethodFlags::AllowInteractiveAuth.into()
        } else {
            Default::default()
        };
        let reply = self
            .proxy(path, iface)
            .await?
            .call_with_flags(method, flags, body)
            .await?;
        reply.ok_or_else(|| CtlError::Failed(format!("{method}: no reply")))
    }

    pub async fn property<R>(&self, path: &str, iface: &str, name: &str) -> Result<R, CtlError>
    where
        R: TryFrom<OwnedValue>,
        R::Error: Into<zbus::Error>,
    {
        Ok(self.proxy(path, iface).await?.get_property(name).await?)
    }

    pub async fn all(&self, path: &str, iface: &str) -> Result<HashMap<String, OwnedValue>, CtlError> {
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination(DEST)?
            .path(path.to_string())?
            .build()
            .await?;
        let iface = zbus::names::InterfaceName::try_from(iface.to_string())?;
        Ok(props.get_all(iface).await?)
    }

    pub async fn objects(&self) -> Result<Objects, CtlError> {
        let om = zbus::fdo::ObjectManagerProxy::builder(&self.conn)
            .destination(DEST)?
            .path(ROOT)?
            .build()
            .await?;
        Ok(om.get_managed_objects().await?)
    }

    pub async fn farm_path(&self, name: &str) -> Result<OwnedObjectPath, CtlError> {
        self.read(ROOT, MANAGER, "GetFarm", &(name,)).await
    }

    /// polkit's text agent for this process, when a person is at the terminal: it asks for the
    /// password if polkit wants one. Started once, before the first change.
    fn start_agent(&mut self) {
        if self.ask && self.agent.is_none() {
            self.agent = super::agent::Agent::start();
        }
    }
}

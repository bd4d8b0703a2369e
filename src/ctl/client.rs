//! The bus side of nftlbctl: calls to `org.nftlbd1` that allow interactive authorization, and
//! polkit's text agent for them when a person is at the terminal (as systemctl does).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};

use serde::de::DeserializeOwned;
use zbus::names::OwnedInterfaceName;
use zbus::proxy::MethodFlags;
use zbus::zvariant::{DynamicType, OwnedObjectPath, OwnedValue};
use zbus::{Connection, Proxy};

use super::CtlError;

pub const DEST: &str = "org.nftlbd1";
pub const ROOT: &str = "/org/nftlbd1";
pub const MANAGER: &str = "org.nftlbd1.Manager";
pub const FARM: &str = "org.nftlbd1.Farm";
pub const BACKEND: &str = "org.nftlbd1.Backend";
pub const POLICY: &str = "org.nftlbd1.Policy";

/// Every object with its interfaces' properties (`GetManagedObjects`).
pub type Objects = HashMap<OwnedObjectPath, HashMap<OwnedInterfaceName, HashMap<String, OwnedValue>>>;

pub struct Client {
    conn: Connection,
    /// Whether a polkit agent may ask the person at the terminal (`--no-ask-password` clears it).
    ask: bool,
    agent: Option<Child>,
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
        // SAFETY: isatty only looks at the descriptor.
        let tty = unsafe { libc::isatty(0) } == 1;
        if !self.ask || !tty || self.agent.is_some() {
            return;
        }
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return;
        }
        // SAFETY: both descriptors were just created and are owned here only.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let notify = wr.as_raw_fd();
        let mut cmd = Command::new("pkttyagent");
        cmd.args([
            "--process",
            &std::process::id().to_string(),
            "--notify-fd",
            &notify.to_string(),
        ])
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::null());
        // The agent tells us through the pipe when it is registered: it must inherit the
        // writing end, which is close-on-exec here.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                let flags = libc::fcntl(notify, libc::F_GETFD);
                libc::fcntl(notify, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                Ok(())
            });
        }
        let Ok(child) = cmd.spawn() else { return };
        drop(wr);
        // Registered (it closes the pipe), or gone: either way, go on.
        let mut buf = [0u8; 16];
        // SAFETY: reading into a buffer we own from a descriptor we own.
        let _ = unsafe { libc::read(rd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        self.agent = Some(child);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }
}

//! Who may run an operation: the caller as each transport identifies it, and the authority that
//! decides (polkit in the daemon; a fixed answer in tests). The service asks it once per
//! operation, from the operation table, whatever the transport.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::OnceCell;

use crate::polkit::{self, Answer, Details, Subject};

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: Subject,
    /// The caller's user, as the bus or the kernel (socket credentials) gave it.
    pub uid: u32,
    /// Whether polkit may ask the caller's authentication agent.
    pub interactive: bool,
    /// How a caller of this transport allows interactive authentication (for refusals).
    pub how_to_ask: &'static str,
}

impl Caller {
    /// A caller with no rights (no user, no process): for operations anyone may run. Should it
    /// ever be asked about, polkit refuses it.
    pub fn nobody() -> Caller {
        Caller {
            subject: Subject::Process {
                pid: 0,
                uid: u32::MAX,
            },
            uid: u32::MAX,
            interactive: false,
            how_to_ask: "",
        }
    }
}

pub type Check<'a> = Pin<Box<dyn Future<Output = Result<Answer, String>> + Send + 'a>>;

pub trait Authority: Send + Sync + 'static {
    /// The answer for `caller` on `action` with `details`; `Err` says why nobody could answer.
    fn check<'a>(&'a self, caller: &'a Caller, action: &'static str, details: &'a Details) -> Check<'a>;
}

/// polkit, asked over the system bus (connected on first use). Root is always allowed, as polkit
/// itself would answer, so the daemon works for root without polkitd.
#[derive(Default)]
pub struct Polkit {
    bus: OnceCell<Option<zbus::Connection>>,
}

impl Authority for Polkit {
    fn check<'a>(&'a self, caller: &'a Caller, action: &'static str, details: &'a Details) -> Check<'a> {
        Box::pin(async move {
            if caller.uid == 0 {
                return Ok(Answer::Yes);
            }
            let bus = self
                .bus
                .get_or_init(|| async { zbus::Connection::system().await.ok() })
                .await
                .as_ref()
                .ok_or_else(|| "polkit cannot be asked: no system bus".to_string())?;
            polkit::check(bus, &caller.subject, action, details, caller.interactive).await
        })
    }
}

/// A fixed rule, for tests of what sits above the authority: `decide(caller, action, details)`.
pub struct Rule<F>(pub F);

impl<F> Authority for Rule<F>
where
    F: Fn(&Caller, &str, &Details) -> Answer + Send + Sync + 'static,
{
    fn check<'a>(&'a self, caller: &'a Caller, action: &'static str, details: &'a Details) -> Check<'a> {
        let answer = (self.0)(caller, action, details);
        Box::pin(async move { Ok(answer) })
    }
}

/// The refusal's message, or nothing when the answer is yes.
pub fn refusal(caller: &Caller, action: &str, answer: Answer) -> Option<String> {
    match answer {
        Answer::Yes => None,
        a => Some(polkit::refusal(action, a, caller.interactive, caller.how_to_ask)),
    }
}

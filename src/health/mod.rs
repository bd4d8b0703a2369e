//! Built-in health checks (issue 11): probes of backends over tcp, http, https, udp, dns, a command or an
//! agent, and the checker that schedules them and reports each backend's turns of health. Pure
//! parts (the rise/fall counter, the agent line, DNS and HTTP messages) are separate from the
//! probes that do I/O, and the checker knows nothing of the service it reports to.

mod agent;
mod checker;
mod counter;
mod dns;
mod exec;
mod http;
#[cfg(test)]
mod https_tests;
mod observed;
mod probe;
#[cfg(test)]
mod probe_tests;
mod random;
mod tls;

pub use agent::{Advice, AgentReply, parse_agent_line};
pub use checker::{Checker, DEFAULT_IN_FLIGHT, Stopped, Target, TargetName, Transition};
pub use counter::Counter;
pub use observed::{LastCheck, Observed};
pub use probe::{Outcome, run};

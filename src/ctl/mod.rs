//! nftlbctl: the administrator's command line, a client of `org.nftlbd1` on the system bus.
//! It holds no logic of its own: every command is one D-Bus call (so one transaction and one
//! polkit check in the daemon), or reads. `settings` turns `KEY=VALUE` words into the API's
//! typed settings, `client` talks to the bus (with polkit's agent on a terminal), `show` prints.

mod agent;
mod batch;
mod checkpoint;
mod client;
mod monitor;
mod settings;
mod show;
mod timed;
mod varlink;

use std::collections::HashMap;
use std::io::Read;
use std::process::ExitCode;

use zbus::DBusError as _;

use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use crate::schema::props;
use client::{BACKEND, Client, FARM, MANAGER, POLICY, ROOT};

pub const USAGE: &str = "usage: nftlbctl [--json] [--no-ask-password] COMMAND
  status                               the daemon: version, generation, kernel features, counts
  list                                 farms: state, mode, services, backends
  show FARM                            a farm's keys (those it sets) and its backends, with traffic counters
  sessions FARM                        the farm's persistence sessions
  permissions                          what you may do (polkit's answer per action)
  export                               the whole configuration (canonical JSON)
  import FILE|- [--replace]            merge a JSON document in (or replace everything with it)
  reload                               make the daemon re-read its state file and farm files;
                                       refused files are printed (exit 65), the others load
  persist FARM                         write FARM as it runs into the farm file that declares it
  apply FILE --confirm SECONDS         merge FILE in under a checkpoint; kept only when confirmed on
                                       the terminal (y) or by checkpoint confirm within SECONDS,
                                       rolled back otherwise
  checkpoint create [--timeout S] [--delete-new-farms] [--allow-overlapping] [FARM...]
                                       keep farms (none: all) as they are; prints its number
  checkpoint confirm ID | rollback ID | list
  create FARM KEY=VALUE... [--backend NAME KEY=VALUE...]...
                                       a farm with its backends, in one transaction
  set FARM KEY=VALUE...                change farm keys (one transaction)
  rename FARM NEW-NAME
  delete FARM
  add-backend FARM NAME KEY=VALUE...
  set-backend FARM NAME KEY=VALUE... [--for SECONDS]
                                       change backend keys (one transaction); with --for, weight
                                       and priority only, put back by themselves after SECONDS
  state FARM BACKEND up|down|off|drain [--for SECONDS]
                                       with --for: the state before comes back after SECONDS
  timed                                pending timed changes: what comes back, and in how long
  cancel-timed FARM BACKEND KEY        end a timed change now (its value before comes back)
  set-health FARM BACKEND unknown|healthy|failing [REASON]   a checker's verdict (SetHealth)
  remove-backend FARM NAME
  set-backends KEY=VALUE... FARM/BACKEND...
                                       state=, weight= or priority= of many backends across farms,
                                       in one transaction, all or nothing (a rack failure)
  set-backends --from FILE|-           the same with a line per backend: FARM BACKEND KEY=VALUE...
  policies                             policies: type, family, elements
  policy NAME                          a policy's elements with what each matched
  create-policy NAME KEY=VALUE...      type=blacklist|whitelist family= timeout= log-prefix= elements=a,b
  delete-policy NAME
  add-elements|remove-elements|replace-elements POLICY ELEMENT...
  monitor                              the daemon's changes as they happen, until interrupted
  varlink METHOD [PARAMETERS] [--more] one raw varlink call (org.nftlbd1.GetConfig, ...; JSON
                                       parameters) to the daemon's socket ($NFTLBD_VARLINK or
                                       /run/nftlbd/org.nftlbd1); prints the reply's parameters
KEY is a canonical JSON key (virtual-addresses, virtual-ports, scheduler, ip-addr, weight, ...);
lists are comma-separated; an empty value removes an optional key.
Exit status: 0 done, 1 failed, 2 usage, 65 invalid input, 69 unsupported by this kernel,
77 not authorized.";

/// What a command can end with; the D-Bus error names map to exit statuses.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Usage(String),
    /// A `KEY=VALUE` that cannot be a setting (caught before anything is sent).
    #[error("{0}")]
    Invalid(String),
    #[error("{message}")]
    Refused { name: String, message: String },
    #[error("{0}")]
    Failed(String),
}

impl From<zbus::Error> for CtlError {
    fn from(e: zbus::Error) -> Self {
        match e {
            zbus::Error::MethodError(name, message, _) => CtlError::Refused {
                name: name.to_string(),
                message: message.unwrap_or_default(),
            },
            zbus::Error::FDO(f) => CtlError::from(*f),
            other => CtlError::Failed(other.to_string()),
        }
    }
}

impl From<zbus::fdo::Error> for CtlError {
    fn from(e: zbus::fdo::Error) -> Self {
        let name = e.name().to_string();
        let message = e.description().unwrap_or_default().to_string();
        CtlError::Refused { name, message }
    }
}

impl From<zbus::names::Error> for CtlError {
    fn from(e: zbus::names::Error) -> Self {
        CtlError::Failed(e.to_string())
    }
}

impl From<zbus::zvariant::Error> for CtlError {
    fn from(e: zbus::zvariant::Error) -> Self {
        CtlError::Failed(e.to_string())
    }
}

impl CtlError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CtlError::Usage(_) => 2,
            CtlError::Invalid(_) => 65,
            CtlError::Failed(_) => 1,
            CtlError::Refused { name, .. } => match name.as_str() {
                "org.nftlbd1.Error.InvalidArgument"
                | "org.freedesktop.DBus.Error.InvalidArgs"
                | "org.varlink.service.InvalidParameter" => 65,
                "org.nftlbd1.Error.Unsupported" => 69,
                "org.nftlbd1.Error.NotAuthorized" | "org.freedesktop.DBus.Error.AccessDenied" => 77,
                _ => 1,
            },
        })
    }
}

/// Global options and the command's words.
#[derive(Debug, Default)]
pub struct Args {
    pub json: bool,
    pub ask: bool,
    pub words: Vec<String>,
}

pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, CtlError> {
    let mut a = Args {
        ask: true,
        ..Args::default()
    };
    for w in args {
        match w.as_str() {
            "--json" => a.json = true,
            "--no-ask-password" => a.ask = false,
            "-h" | "--help" => return Err(CtlError::Usage(String::new())),
            _ => a.words.push(w),
        }
    }
    if a.words.is_empty() {
        return Err(CtlError::Usage("no command given".into()));
    }
    Ok(a)
}

fn usage(msg: &str) -> CtlError {
    CtlError::Usage(msg.into())
}

/// `create`'s words: farm settings, then `--backend NAME KEY=VALUE...` groups.
fn create_settings(words: &[String]) -> Result<HashMap<String, OwnedValue>, CtlError> {
    let mut groups = words.split(|w| w == "--backend");
    let farm_words = groups.next().unwrap_or_default();
    let mut settings = settings::parse_all(props::FARM, farm_words).map_err(CtlError::Invalid)?;
    let mut backends: Vec<HashMap<String, Value<'static>>> = Vec::new();
    for g in groups {
        let (name, rest) = g.split_first().ok_or_else(|| usage("--backend needs a name"))?;
        let mut b: HashMap<String, Value<'static>> = HashMap::new();
        for (k, v) in settings::parse_all(props::BACKEND, rest).map_err(CtlError::Invalid)? {
            b.insert(k, Value::from(v));
        }
        b.insert("Name".into(), Value::from(name.clone()));
        backends.push(b);
    }
    if !backends.is_empty() {
        let v = OwnedValue::try_from(Value::from(backends))?;
        settings.insert("Backends".into(), v);
    }
    Ok(settings)
}

/// Runs one command; what it prints goes to stdout.
pub async fn run(args: Args) -> Result<(), CtlError> {
    let w = &args.words;
    let arg = |i: usize, what: &str| -> Result<&String, CtlError> {
        w.get(i).ok_or_else(|| usage(&format!("{} needs {what}", w[0])))
    };
    if w[0] == "varlink" {
        // No D-Bus here: the socket only.
        let method = arg(1, "a method (org.nftlbd1.GetConfig, ...)")?;
        let more = w.iter().any(|x| x == "--more");
        let params = w[2..].iter().find(|x| *x != "--more").map(String::as_str);
        let socket =
            std::env::var("NFTLBD_VARLINK").unwrap_or_else(|_| crate::schema::VARLINK_SOCKET.to_string());
        return varlink::call(&socket, method, params, more, args.ask);
    }
    let (words, for_secs) = timed::split_for(&args.words)?;
    if for_secs.is_some() && !["state", "set-backend"].contains(&w[0].as_str()) {
        return Err(usage("--for goes with state and set-backend"));
    }
    let w = &words;
    let arg = |i: usize, what: &str| -> Result<&String, CtlError> {
        w.get(i).ok_or_else(|| usage(&format!("{} needs {what}", w[0])))
    };
    let mut c = Client::system(args.ask).await?;
    match w[0].as_str() {
        "timed" => timed::list(&c, args.json).await,
        "cancel-timed" => {
            let (farm, backend) = (arg(1, "a farm")?, arg(2, "a backend")?);
            let key = arg(3, "a key (state, weight, priority)")?;
            c.change::<_, ()>(ROOT, MANAGER, "CancelTimedChange", &(farm, backend, key))
                .await
        }
        "status" => show::status(&c, args.json).await,
        "list" => show::list(&c, args.json).await,
        "show" => show::farm(&c, arg(1, "a farm")?, args.json).await,
        "sessions" => show::sessions(&c, arg(1, "a farm")?, args.json).await,
        "permissions" => show::permissions(&c, args.json).await,
        "export" => {
            let json: String = c.read(ROOT, MANAGER, "ExportConfig", &()).await?;
            println!("{json}");
            Ok(())
        }
        "import" => {
            let file = arg(1, "a file (or -)")?;
            let mode = match w.get(2).map(String::as_str) {
                None => "merge",
                Some("--replace") => "replace",
                Some(other) => return Err(usage(&format!("import: unknown option {other:?}"))),
            };
            let mut text = String::new();
            if file == "-" {
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| CtlError::Failed(format!("stdin: {e}")))?;
            } else {
                text = std::fs::read_to_string(file).map_err(|e| CtlError::Failed(format!("{file}: {e}")))?;
            }
            c.change::<_, ()>(ROOT, MANAGER, "ImportConfig", &(text, mode))
                .await
        }
        "reload" => {
            let refused: Vec<(String, String)> = c.change(ROOT, MANAGER, "Reload", &()).await?;
            if args.json {
                let list: Vec<serde_json::Value> = refused
                    .iter()
                    .map(|(f, r)| serde_json::json!({ "field": f, "reason": r }))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            }
            if refused.is_empty() {
                return Ok(());
            }
            let lines: Vec<String> = refused.iter().map(|(f, r)| format!("{f}: {r}")).collect();
            Err(CtlError::Invalid(format!(
                "farm files refused (the others loaded):\n{}",
                lines.join("\n")
            )))
        }
        "persist" => {
            let farm = arg(1, "a farm")?;
            c.change::<_, ()>(ROOT, MANAGER, "RuntimeToPersistent", &(farm,))
                .await
        }
        "checkpoint" => checkpoint::run(&mut c, &w[1..], args.json).await,
        "apply" => {
            let file = arg(1, "a file")?;
            let seconds = match (w.get(2).map(String::as_str), w.get(3)) {
                (Some("--confirm"), Some(s)) => s
                    .parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| usage("--confirm needs seconds (more than 0)"))?,
                _ => return Err(usage("apply needs FILE --confirm SECONDS")),
            };
            let text = std::fs::read_to_string(file).map_err(|e| CtlError::Failed(format!("{file}: {e}")))?;
            checkpoint::apply(&mut c, text, seconds, args.json).await
        }
        "create" => {
            let name = arg(1, "a farm name")?;
            let settings = create_settings(&w[2..])?;
            let path: OwnedObjectPath = c.change(ROOT, MANAGER, "CreateFarm", &(name, settings)).await?;
            if !args.json {
                println!("{}", path.as_str());
            }
            Ok(())
        }
        "set" => {
            let path = c.farm_path(arg(1, "a farm")?).await?;
            let changes = settings::parse_all(props::FARM, &w[2..]).map_err(CtlError::Invalid)?;
            if changes.is_empty() {
                return Err(usage("set needs KEY=VALUE"));
            }
            c.change::<_, ()>(path.as_str(), FARM, "Update", &(changes,))
                .await
        }
        "rename" => {
            let path = c.farm_path(arg(1, "a farm")?).await?;
            let new = arg(2, "a new name")?;
            c.change::<_, ()>(path.as_str(), FARM, "Rename", &(new,)).await
        }
        "delete" => {
            let name = arg(1, "a farm")?;
            c.change::<_, ()>(ROOT, MANAGER, "DeleteFarm", &(name,)).await
        }
        "add-backend" => {
            let path = c.farm_path(arg(1, "a farm")?).await?;
            let name = arg(2, "a backend name")?;
            let settings = settings::parse_all(props::BACKEND, &w[3..]).map_err(CtlError::Invalid)?;
            let b: OwnedObjectPath = c
                .change(path.as_str(), FARM, "AddBackend", &(name, settings))
                .await?;
            if !args.json {
                println!("{}", b.as_str());
            }
            Ok(())
        }
        "set-backend" | "state" | "set-health" | "remove-backend" => {
            let farm_name = arg(1, "a farm")?;
            let farm = c.farm_path(farm_name).await?;
            let name = arg(2, "a backend")?;
            let path = format!(
                "{}/backend/{}",
                farm.as_str(),
                crate::model::bus_path_escape(name)
            );
            let backends: Vec<OwnedObjectPath> = c.property(farm.as_str(), FARM, "Backends").await?;
            if !backends.iter().any(|b| b.as_str() == path) {
                return Err(CtlError::Refused {
                    name: "org.nftlbd1.Error.NotFound".into(),
                    message: format!("farm {farm_name:?} has no backend {name:?}"),
                });
            }
            match w[0].as_str() {
                "set-backend" => {
                    let changes = settings::parse_all(props::BACKEND, &w[3..]).map_err(CtlError::Invalid)?;
                    if changes.is_empty() {
                        return Err(usage("set-backend needs KEY=VALUE"));
                    }
                    match for_secs {
                        Some(s) => {
                            c.change::<_, ()>(&path, BACKEND, "UpdateFor", &(changes, s))
                                .await
                        }
                        None => c.change::<_, ()>(&path, BACKEND, "Update", &(changes,)).await,
                    }
                }
                "state" => {
                    let state = arg(3, "a state (up, down, off, drain)")?;
                    match for_secs {
                        Some(s) => {
                            c.change::<_, ()>(&path, BACKEND, "SetStateFor", &(state, s))
                                .await
                        }
                        None => c.change::<_, ()>(&path, BACKEND, "SetState", &(state,)).await,
                    }
                }
                "set-health" => {
                    let health = arg(3, "a health (unknown, healthy, failing)")?;
                    // The reason may be given as several words, as a plugin's output line is.
                    let reason = w.get(4..).unwrap_or_default().join(" ");
                    c.change::<_, ()>(&path, BACKEND, "SetHealth", &(health, reason))
                        .await
                }
                _ => c.change::<_, ()>(&path, BACKEND, "Remove", &()).await,
            }
        }
        "set-backends" => {
            let changes = batch::changes(&w[1..])?;
            c.change::<_, ()>(ROOT, MANAGER, "SetBackends", &(changes,)).await
        }
        "policies" => show::policies(&c, args.json).await,
        "policy" => show::policy(&c, arg(1, "a policy")?, args.json).await,
        "create-policy" => {
            let name = arg(1, "a policy name")?;
            let settings = settings::parse_all(props::POLICY, &w[2..]).map_err(CtlError::Invalid)?;
            let path: OwnedObjectPath = c.change(ROOT, MANAGER, "CreatePolicy", &(name, settings)).await?;
            if !args.json {
                println!("{}", path.as_str());
            }
            Ok(())
        }
        "delete-policy" => {
            let name = arg(1, "a policy")?;
            c.change::<_, ()>(ROOT, MANAGER, "DeletePolicy", &(name,)).await
        }
        "add-elements" | "remove-elements" | "replace-elements" => {
            let path = c.policy_path(arg(1, "a policy")?).await?;
            let elements: Vec<String> = w[2..].to_vec();
            let method = match w[0].as_str() {
                "add-elements" => "AddElements",
                "remove-elements" => "RemoveElements",
                _ => "ReplaceElements",
            };
            c.change::<_, ()>(path.as_str(), POLICY, method, &(elements,))
                .await
        }
        "monitor" => monitor::run(&c, args.json).await,
        other => Err(usage(&format!("unknown command {other:?}"))),
    }
}

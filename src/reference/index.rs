//! docs/README.md: the names a client needs, and the pages.

use super::GENERATED;
use super::markdown::{code, table};
use crate::engine::layout::TABLE;
use crate::farms_dir::DEFAULT_FARMS_DIR;
use crate::polkit::ALL;
use crate::schema::{self, BACKEND, BUS_NAME, FARM, MANAGER, POLICY, ROOT, VARLINK_SOCKET};
use crate::state::{DEFAULT_STATE_DIR, JOURNAL_FILE, STATE_FILE};

pub fn render() -> String {
    let prefix = ALL
        .first()
        .and_then(|a| a.rsplit_once('.'))
        .map(|(p, _)| p)
        .unwrap_or(BUS_NAME);
    let rows = vec![
        vec![
            "programs".into(),
            "`nftlbd` (the daemon: `check`, `apply`, `run`), `nftlbctl` (the administrators' command line)"
                .into(),
        ],
        vec!["D-Bus".into(), format!("{} on the system bus", code(BUS_NAME))],
        vec![
            "root object".into(),
            format!(
                "{}: {}, `org.freedesktop.DBus.ObjectManager`",
                code(ROOT),
                code(MANAGER)
            ),
        ],
        vec![
            "a farm".into(),
            format!("{}: {}", code(&schema::farm_path("FARM")), code(FARM)),
        ],
        vec![
            "a backend".into(),
            format!(
                "{}: {}",
                code(&schema::backend_path("FARM", "BACKEND")),
                code(BACKEND)
            ),
        ],
        vec![
            "a policy".into(),
            format!("{}: {}", code(&schema::policy_path("POLICY")), code(POLICY)),
        ],
        vec![
            "varlink".into(),
            format!(
                "interface {} on {} (socket activation: `nftlbd.socket`)",
                code(BUS_NAME),
                code(VARLINK_SOCKET)
            ),
        ],
        vec![
            "kernel".into(),
            format!(
                "table {} in families `ip`, `ip6` and `netdev`, each only when a farm needs it; no other \
                 table is ever touched",
                code(TABLE)
            ),
        ],
        vec![
            "state".into(),
            format!(
                "{} (the snapshot) and {} (one fsynced record per change since; folded into the \
                 snapshot from time to time, in the background, and by `Reload`); the pending timed \
                 changes in {}; `nftlbd --state-dir DIR` puts them in DIR",
                code(&format!("{DEFAULT_STATE_DIR}/{STATE_FILE}")),
                code(&format!("{DEFAULT_STATE_DIR}/{JOURNAL_FILE}")),
                code(&format!(
                    "{DEFAULT_STATE_DIR}/{}",
                    crate::service::timed::TIMED_FILE
                ))
            ),
        ],
        vec![
            "farm files".into(),
            format!(
                "{} (`nftlbd run --farms-dir DIR`), loaded at start and at each Reload: [farm-files.md](farm-files.md)",
                code(&format!("{DEFAULT_FARMS_DIR}/*.json"))
            ),
        ],
        vec!["polkit".into(), format!("actions `{prefix}.*`")],
    ];
    let escaped = [
        ("web-1", schema::farm_path("web-1")),
        ("a.b_c", schema::farm_path("a.b_c")),
    ];
    format!(
        "# nftlbd API reference\n\n{GENERATED}\n\
         nftlbd offers one set of [operations](operations.md) through two transports, [D-Bus](dbus.md) \
         and [varlink](varlink.md). Both speak the [canonical JSON](json.md), guard changes with \
         [polkit](polkit.md) and answer with the same [errors](errors.md).\n\n\
         ## Names\n\n{}\n\
         Farms, backends and policies are named by `[A-Za-z0-9][A-Za-z0-9_.-]{{0,62}}`; any other name \
         is `InvalidArgument`. In object paths a name is escaped as systemd's `sd_bus_path_encode` \
         does: every byte outside `[A-Za-z0-9]` becomes `_` and two lowercase hex digits (farm {} is \
         {}, farm {} is {}).\n\n\
         ## Pages\n\n\
         - [operations.md](operations.md): every read and change, its polkit action and details, where \
         D-Bus and varlink offer it.\n\
         - [dbus.md](dbus.md): objects, methods, properties and signals.\n\
         - [varlink.md](varlink.md): the methods and the interface description.\n\
         - [json.md](json.md): the canonical JSON, every key with its D-Bus property.\n\
         - [polkit.md](polkit.md): actions, defaults, details, an example of delegation.\n\
         - [errors.md](errors.md): the errors of both transports.\n\
         - [farm-files.md](farm-files.md): declarative farm files, what Reload makes of them.\n",
        table(&["what", "name"], &rows),
        code(escaped[0].0),
        code(&escaped[0].1),
        code(escaped[1].0),
        code(&escaped[1].1),
    )
}
